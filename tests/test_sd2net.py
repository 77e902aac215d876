"""SD2Net is the authors' network: same parameter count, same fixed kernels, same function."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from models.sd2net import SD2Net, convert_reference_state_dict, difference_kernels, haar_kernels

REFERENCE_PARAMETER_COUNT = 262_442  # shared/specs/sd2net.md §7, shared/golden/sd2net/README.md


@pytest.fixture
def reference_model(golden_dir: Path) -> SD2Net:
    model = SD2Net().eval()
    weights = load_file(golden_dir / "sd2net" / "state_dict.safetensors")
    model.load_state_dict(convert_reference_state_dict(weights), strict=True)
    return model


def test_parameter_count_matches_reference() -> None:
    assert sum(p.numel() for p in SD2Net().parameters()) == REFERENCE_PARAMETER_COUNT


def test_fixed_kernels_are_the_references_and_not_in_the_state_dict(golden_dir: Path) -> None:
    reference = load_file(golden_dir / "sd2net" / "fixed_kernels.safetensors")
    assert torch.equal(difference_kernels(), reference["sd2m_diff_kernel_8x1x3x3"])
    assert torch.equal(haar_kernels(), reference["sd3m_haar_kernel_3x1x2x2"])
    assert not [key for key in SD2Net().state_dict() if key.endswith("kernels")]


@pytest.mark.parametrize("case", ["1", "2"])
def test_reference_weights_reproduce_reference_logits(
    reference_model: SD2Net, golden_dir: Path, case: str
) -> None:
    golden = load_file(golden_dir / "sd2net" / "io.safetensors")
    with torch.inference_mode():
        logits = reference_model(golden[f"x{case}"])
    assert logits.shape == golden[f"y{case}_logits"].shape
    assert (logits - golden[f"y{case}_logits"]).abs().max().item() < 1e-6
    assert (torch.sigmoid(logits) - golden[f"y{case}_prob"]).abs().max().item() < 1e-6


def test_each_block_matches_reference_intermediates(
    reference_model: SD2Net, golden_dir: Path
) -> None:
    """Per-block check (fed the stored inputs), so a regression names the block where it starts."""
    stored = load_file(golden_dir / "sd2net" / "intermediates_x1.safetensors")
    model = reference_model
    with torch.inference_mode():
        outputs = {"inc": model.stem(stored["x1"]), "outc0_rsu7": model.tail(stored["decoder1"])}
        previous = "inc"
        for level in range(4):
            outputs[f"down{level + 1}"] = model.downsamples[level](stored[previous])
            outputs[f"encoder{level + 1}"] = model.encoders[level](stored[f"down{level + 1}"])
            previous = f"encoder{level + 1}"
        for level, source in enumerate(["inc", "encoder1", "encoder2", "encoder3"]):
            outputs[f"contras{level + 1}"] = model.skip_enhancers[level](stored[source])
        deeper = "encoder4"
        for index, (name, skip) in enumerate(
            [
                ("decoder4", "encoder3"),
                ("decoder3", "encoder2"),
                ("decoder2", "encoder1"),
                ("decoder1", "inc"),
            ]
        ):
            contras = f"contras{4 - index}"
            outputs[name] = model.decoders[index](stored[deeper], stored[contras], stored[skip])
            deeper = name
        outputs["outc1_head_logits"] = model.head(stored["outc0_rsu7"])
    for name, value in outputs.items():
        assert (value - stored[name]).abs().max().item() < 1e-5, name
