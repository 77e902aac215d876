"""irtrack bench training times the real training loop and reports images/s per variant."""

from conftest import require_path

from bench.training import VARIANTS, markdown_table, measure
from data.paths import DATA_DIR


def test_a_variant_is_timed_from_the_loops_own_epoch_seconds():
    require_path(DATA_DIR / "nudt-sirst", "NUDT-SIRST (shared/data)")
    paper = VARIANTS[0]
    assert not paper.compile and paper.crop is None
    row = measure("sd2net", paper, images=8, epochs=2, data_dir=DATA_DIR)
    assert row["epochs_timed"] == 1 and row["images_per_s"] > 0
    assert row["pixels_per_s"] == row["images_per_s"] * 256 * 256
    table = markdown_table(
        [row, {**row, "variant": "twice as fast", "images_per_s": 2 * row["images_per_s"]}],
        {"date": "today", "cpu": "a CPU", "torch": "2.13.0"},
    )
    assert "| 2.00x |" in table and "| 1.00x |" in table
