"""irtrack report headline: the README's models table, from reports of the shipped weights only."""

from evaluation.headline import headline_table
from models.registry import model_info
from models.weights import file_sha256


def test_each_model_row_takes_the_figures_of_its_own_shipped_weights():
    path = model_info("sd2net").default_weights_path
    assert path is not None
    sha = file_sha256(path)
    evals = [
        {
            "model": "sd2net",
            "weights_sha256": sha,
            "dataset": "sirst-v2",
            "mIoU": 70.04,
            "Pd": 93.2,
            "machine": "CPU one",
        },
        {
            "model": "sd2net",
            "weights_sha256": "other",
            "dataset": "nudt-sirst",
            "mIoU": 1.0,
            "Pd": 1.0,
        },
    ]
    video = {
        "machine": "CPU two",
        "models": {
            "sd2net": {
                "weights_sha256": sha,
                "groups": {
                    "all clips": {},
                    "small-target clips": {
                        "matched": [
                            {"fa_per_frame_limit": 0.01, "Pd": 80.0},
                            {"fa_per_frame_limit": 0.05, "Pd": 91.25},
                        ],
                        "tracking": {"idf1": 0.875},
                    },
                },
            }
        },
    }
    videos = [{"models": {"std2net": {"weights_sha256": "x"}}}, video]  # sd2net: the second
    speeds = [
        {
            "machine": {"cpu": "a CPU"},
            "rows": [
                {
                    "model": "sd2net",
                    "variant": "onnxruntime",
                    "height": 256,
                    "width": 256,
                    "batch": 1,
                    "fps": 25.04,
                },
                {
                    "model": "sd2net",
                    "variant": "onnxruntime",
                    "height": 512,
                    "width": 640,
                    "batch": 1,
                    "fps": 3.0,
                },
            ],
        }
    ]
    row = next(
        line
        for line in headline_table(evals, videos, speeds).splitlines()
        if line.startswith("| sd2net")
    )
    assert "sirst-v2: mIoU 70.0, Pd 93.2" in row and "nudt-sirst" not in row.split("|")[5]
    assert "Pd 91.2 at <= 0.05 FA/frame; IDF1 0.88" in row
    assert "25.0 (ONNX Runtime, 256 x 256)" in row
    footer = headline_table(evals, videos, speeds).splitlines()[-1]
    assert f"{path.name} (" in footer  # the shipped weights behind every figure are named
    assert "accuracy scored on CPU one; CPU two; CPU frames/s on a CPU, 2 threads" in footer


def test_a_model_that_no_threshold_keeps_within_the_budget_shows_where_it_stands():
    path = model_info("std2net").default_weights_path
    assert path is not None
    small = {
        "Pd": 90.44,
        "fa_per_frame": 10.576,
        "matched": [{"fa_per_frame_limit": 0.05, "Pd": None}],
        "tracking": {"idf1": 0.188},
    }
    scored = {"weights_sha256": file_sha256(path), "groups": {"small-target clips": small}}
    table = headline_table([], [{"models": {"std2net": scored}}], [])
    row = next(line for line in table.splitlines() if line.startswith("| std2net"))
    assert "Pd 90.4 at 10.58 FA/frame (threshold 0.5); IDF1 0.19" in row
