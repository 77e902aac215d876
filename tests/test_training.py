"""Training: losses and schedules of the papers, checkpoints, exact resume, best weights."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from data.datasets import UNLABELLED
from data.paths import DATA_DIR
from evaluation.report import weights_card
from models.registry import build_model
from models.weights import load_weights, read_metadata, save_weights
from training.checkpoints import CHECKPOINT
from training.config import TrainConfig, resolve
from training.loop import BEST_WEIGHTS, LOG, SNAPSHOTS, earlier_stages, train
from training.losses import hard_background_loss, lrrnet_loss, soft_iou_loss
from training.recipes import (
    HARD_BACKGROUND_LOSS,
    LOSSES,
    multistep_schedule,
    poly_schedule,
    step_schedule,
    training_step,
)

needs_data = pytest.mark.skipif(
    not (DATA_DIR / "nudt-sirst").is_dir() or not (DATA_DIR / "sirst-v2").is_dir(),
    reason=f"shared datasets not found under {DATA_DIR}",
)


def tiny_run(out: Path, **overrides) -> TrainConfig:
    """8 NUDT-SIRST images at 64x64, batch 4: 2 iterations per epoch, 2 epochs. One thread, so
    that a busy CI host does not slow the run down with oversubscribed threads."""
    config = TrainConfig(
        model="sd2net",
        data="nudt-sirst",
        out=out,
        epochs=2,
        batch_size=4,
        size=64,
        limit=8,
        threads=1,
    )
    return replace(config, **overrides)


def test_soft_iou_is_batch_global_or_per_sample_mean():
    logits = torch.tensor([[[[9.0, -9.0]]], [[[9.0, 9.0]]]])  # (2, 1, 1, 2)
    mask = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 0.0]]]])
    p = torch.sigmoid(logits)
    inter, total = (p * mask).sum(), p.sum() + mask.sum()
    batch_global = 1 - (inter + 1) / (total - inter + 1)
    per_image = [
        1 - ((p[i] * mask[i]).sum() + 1) / (p[i].sum() + mask[i].sum() - (p[i] * mask[i]).sum() + 1)
        for i in range(2)
    ]
    assert torch.isclose(soft_iou_loss(logits, mask), batch_global)
    assert torch.isclose(
        soft_iou_loss(logits, mask, per_sample=True), torch.stack(per_image).mean()
    )


def test_unlabelled_pixels_give_the_soft_iou_no_gradient_and_no_weight():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, 0, 3:5, 3:5] = 1.0
    mask[0, 0, 2:6, 2:6][mask[0, 0, 2:6, 2:6] == 0] = UNLABELLED  # the rest of the box
    for per_sample in (False, True):
        loss = soft_iou_loss(logits, mask, per_sample=per_sample)
        (gradient,) = torch.autograd.grad(loss, logits)
        unlabelled = mask == UNLABELLED
        assert (gradient[unlabelled] == 0).all() and (gradient[~unlabelled] != 0).all()
        # as if the unlabelled pixels were certain background (probability 0)
        cleared = logits.detach().masked_fill(unlabelled, -1e4)
        assert torch.isclose(loss, soft_iou_loss(cleared, mask.clamp(min=0), per_sample))


def test_lrrnet_loss_gradient_comes_from_soft_iou_and_reconstruction_only():
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8, requires_grad=True)
    reconstruction = torch.rand(2, 1, 8, 8, requires_grad=True)
    image, mask = torch.rand(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.8).float()
    total = lrrnet_loss(logits, reconstruction, image, mask)
    total.backward()
    assert logits.grad is not None and reconstruction.grad is not None
    got = (logits.grad.clone(), reconstruction.grad.clone())
    logits.grad, reconstruction.grad = None, None
    soft_iou = soft_iou_loss(logits, mask, per_sample=True)
    mse = ((reconstruction - image) ** 2).mean()
    (1.8 * soft_iou + 0.1 * mse).backward()
    assert logits.grad is not None and reconstruction.grad is not None
    assert torch.allclose(got[0], logits.grad) and torch.allclose(got[1], reconstruction.grad)
    # the hard L1 indicator is still part of the logged value
    fraction = (logits > 0).float().mean()
    assert torch.isclose(total, 1.8 * soft_iou + 0.2 * fraction + 0.1 * mse)


def test_schedules_follow_the_papers():
    assert [multistep_schedule(e, 0, 400, 10) for e in (199, 200, 299, 300)] == pytest.approx(
        [1.0, 0.1, 0.1, 0.01]
    )
    poly = [poly_schedule(0, it, 2, 10) for it in (0, 10, 19)]
    assert poly[0] == 1.0 and poly[0] > poly[1] > poly[2] > 0
    assert [step_schedule(e, 0, 20, 10) for e in (0, 2, 3, 6)] == [1.0, 1.0, 0.5, 0.25]
    assert step_schedule(30, 0, 40, 10) == 0.01  # the floor


@needs_data
@pytest.mark.parametrize("model", ["sd2net", "lrrnet"])  # lrrnet: dropout RNG, per-iteration lr
def test_resumed_run_ends_exactly_where_an_uninterrupted_run_does(tmp_path, model):
    whole = train(tiny_run(tmp_path / "whole", model=model))
    assert whole.finished and whole.iteration == 4

    paused = train(
        tiny_run(tmp_path / "sliced", model=model, stop_after_iterations=1)
    )  # stops mid-epoch
    assert not paused.finished and paused.iteration == 1
    sidecar = json.loads((tmp_path / "sliced" / f"{CHECKPOINT}.json").read_text())
    assert sidecar["progress"]["iteration"] == 1 and sidecar["progress"]["epoch"] == 0
    with pytest.raises(FileExistsError):
        train(tiny_run(tmp_path / "sliced", model=model))  # no silent overwrite without --resume
    with pytest.raises(ValueError, match="batch_size"):
        train(tiny_run(tmp_path / "sliced", model=model, resume=True, batch_size=2))

    resumed = train(tiny_run(tmp_path / "sliced", model=model, resume=True))
    assert resumed.finished and resumed.iteration == 4
    expected = load_file(str(tmp_path / "whole" / CHECKPOINT))
    got = load_file(str(tmp_path / "sliced" / CHECKPOINT))
    weights_and_optimizer = [k for k in expected if not k.startswith("rng/")]
    assert any(k.startswith("optimizer/") for k in weights_and_optimizer)
    for key in weights_and_optimizer:
        assert torch.equal(expected[key], got[key]), key
    whole_log = [json.loads(line) for line in (tmp_path / "whole" / LOG).read_text().splitlines()]
    sliced_log = [json.loads(line) for line in (tmp_path / "sliced" / LOG).read_text().splitlines()]
    assert [e["loss"] for e in whole_log] == [e["loss"] for e in sliced_log]
    assert [e["lr"] for e in whole_log] == [e["lr"] for e in sliced_log]

    metadata = load_weights(build_model(model), tmp_path / "whole" / BEST_WEIGHTS)
    assert metadata["split"] == "val" and metadata["dataset"] == "nudt-sirst"
    best = max(e["val"]["mIoU"] for e in whole_log)
    assert float(metadata["val_mIoU"]) == pytest.approx(best, abs=1e-4)


@needs_data
def test_std2net_trains_on_synthesized_sequences(tmp_path):
    config = TrainConfig(
        model="std2net",
        data="sequences",
        out=tmp_path,
        epochs=1,
        batch_size=2,
        size=32,
        limit=6,
        epoch_size=4,
        val_sequence_length=2,
        threads=1,
    )
    result = train(config)
    assert result.finished and result.iteration == 2
    (entry,) = [json.loads(line) for line in (tmp_path / LOG).read_text().splitlines()]
    assert entry["val"]["images"] == 16  # 8 scenarios x 2 frames
    metadata = load_weights(build_model("std2net"), tmp_path / BEST_WEIGHTS)
    assert metadata["dataset"] == "sequences"


@needs_data
def test_a_frozen_backbone_stays_exactly_as_initialised_while_the_head_learns(tmp_path):
    init = tmp_path / "init.safetensors"
    torch.manual_seed(3)
    save_weights(build_model("std2net"), init)
    config = TrainConfig(
        model="std2net",
        data="sequences",
        out=tmp_path / "run",
        epochs=1,
        batch_size=2,
        size=32,
        limit=6,
        epoch_size=4,
        val_every=0,
        threads=1,
        init_weights=init,
        freeze_backbone=True,
    )
    assert train(config).finished
    before = load_file(str(init))
    after = {
        k[6:]: v
        for k, v in load_file(str(tmp_path / "run" / CHECKPOINT)).items()
        if k.startswith("model/")
    }
    backbone = [k for k in before if k.startswith("backbone.")]
    head = [k for k in before if k.startswith("head.") and before[k].is_floating_point()]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)  # BN stats too
    assert any(not torch.equal(before[k], after[k]) for k in head)


@needs_data
def test_a_run_from_trained_weights_records_every_stage_and_the_total_epochs(tmp_path):
    """A warm restart continues the training of the weights it starts from: their card must say
    what came before (stage by stage) and how many epochs there were in all."""
    first = tmp_path / "first"
    assert train(tiny_run(first, data="sirst-v2")).finished
    second = tmp_path / "second"
    assert train(tiny_run(second, init_weights=first / BEST_WEIGHTS, epochs=1)).finished
    facts = read_metadata(second / BEST_WEIGHTS)
    stages = json.loads(facts["stages"])
    assert [(stage["dataset"], stage["epochs"]) for stage in stages] == [
        ("sirst-v2", int(read_metadata(first / BEST_WEIGHTS)["epoch"])),
        ("nudt-sirst", 1),
    ]
    assert int(facts["total_epochs"]) == sum(stage["epochs"] for stage in stages)
    card = weights_card(second / BEST_WEIGHTS, [])
    assert "2 stage(s) of training" in card and "`sirst-v2`" in card


@needs_data
def test_a_resumed_run_keeps_the_stages_it_started_from(tmp_path):
    """The earlier stages live in the checkpoint: a resume need not name --init-weights again."""
    first = tmp_path / "first"
    assert train(tiny_run(first, epochs=1, val_every=0, snapshot_every=1)).finished
    init = first / SNAPSHOTS / "epoch-0001.safetensors"
    second = tmp_path / "second"
    run = tiny_run(second, val_every=0, snapshot_every=1)
    assert not train(replace(run, init_weights=init, stop_after_iterations=2)).finished
    assert train(replace(run, resume=True)).finished
    facts = read_metadata(second / SNAPSHOTS / "epoch-0002.safetensors")
    assert [stage["epochs"] for stage in json.loads(facts["stages"])] == [1, 2]
    assert facts["total_epochs"] == "3"


def test_weights_from_before_stages_were_recorded_count_as_one_stage(tmp_path):
    old = tmp_path / "old.safetensors"
    save_weights(build_model("sd2net"), old, {"dataset": "sirst-v2", "epoch": "8"})
    (stage,) = earlier_stages(old)
    assert stage["dataset"] == "sirst-v2" and stage["epochs"] == 8
    assert stage["weights"].startswith("old.safetensors (sha256 ")


def test_the_per_sample_loss_makes_a_target_free_crops_false_alarms_count():
    class Fixed(torch.nn.Module):
        def __init__(self, logits: torch.Tensor) -> None:
            super().__init__()
            self.logits = logits

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return self.logits

    mask = torch.zeros(2, 1, 8, 8)
    mask[0, 0, 1:5, 1:5] = 1.0  # the first crop has a 16 px target, the second none
    logits = torch.where(mask > 0, 9.0, -9.0)
    clean, noisy = logits.clone(), logits.clone()
    noisy[1, 0, 6, 6] = 9.0  # one confident false pixel in the target-free crop
    image = torch.zeros(2, 1, 8, 8)

    def rise(loss: str) -> float:
        step = LOSSES[loss]
        return float(step(Fixed(noisy), image, mask) - step(Fixed(clean), image, mask))

    batch_rise, sample_rise = rise("soft-iou"), rise("soft-iou-per-sample")
    assert sample_rise > 4 * batch_rise > 0  # the target-free crop weighs half the batch
    assert rise("soft-iou-mixed") == pytest.approx((batch_rise + sample_rise) / 2)
    with pytest.raises(ValueError, match="unknown loss"):
        resolve(tiny_run(Path("unused"), loss="focal"))


def test_the_hard_background_loss_pushes_a_saturated_false_alarm_that_soft_iou_leaves():
    mask = torch.zeros(2, 1, 16, 16)
    mask[0, 0, 2:5, 2:5] = 1.0  # a 3 x 3 target in the first crop
    mask[1, 0, :, 8:] = UNLABELLED  # the second crop's right half has no label
    logits = torch.where(mask > 0, 9.0, -9.0)
    logits[0, 0, 12, 12] = 9.0  # a confident false alarm far from the target
    logits[0, 0, 6, 6] = 9.0  # one 2 px from the target: inside the guard band (coarse outlines)
    logits[1, 0, 3, 12] = 9.0  # in the unlabelled half
    logits.requires_grad_(True)

    soft_iou_grad = torch.autograd.grad(soft_iou_loss(logits, mask), logits)[0]
    background_grad = torch.autograd.grad(hard_background_loss(logits, mask, pixels=4), logits)[0]
    assert background_grad[0, 0, 12, 12] > 1000 * soft_iou_grad[0, 0, 12, 12] > 0
    assert background_grad[0, 0, 6, 6] == 0 and background_grad[1, 0, 3, 12] == 0
    assert (background_grad[mask > 0] == 0).all()  # targets are never pushed towards background
    clean = torch.where(mask > 0, 9.0, -9.0)
    assert hard_background_loss(clean, mask) < 1e-3 < hard_background_loss(logits.detach(), mask)
    assert "soft-iou-hard-background" in LOSSES


def test_the_hard_background_weight_scales_only_its_term_and_only_with_its_loss(tmp_path):
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, 2:5, 2:5] = 1.0
    logits = torch.where(mask > 0, 9.0, -9.0)
    logits[0, 0, 12, 12] = 9.0  # a confident false alarm

    class Fixed(torch.nn.Module):
        def forward(self, image: torch.Tensor) -> torch.Tensor:
            return logits

    image = torch.zeros(1, 1, 16, 16)
    soft_iou = float(soft_iou_loss(logits, mask))
    term = float(hard_background_loss(logits, mask))
    for weight in (0.1, 0.3, 1.0):
        total = float(training_step(HARD_BACKGROUND_LOSS, weight)(Fixed(), image, mask))
        assert total == pytest.approx(soft_iou + weight * term)
    assert training_step("soft-iou", 0.3) is LOSSES["soft-iou"]

    chosen = tiny_run(tmp_path, loss=HARD_BACKGROUND_LOSS, hard_background_weight=0.3)
    assert resolve(chosen).hard_background_weight == 0.3
    with pytest.raises(ValueError, match="weighs a term of --loss"):
        resolve(tiny_run(tmp_path, hard_background_weight=0.3))  # sd2net's own loss: soft-iou
    with pytest.raises(ValueError, match=">= 0"):
        resolve(replace(chosen, hard_background_weight=-1.0))


def test_the_target_crop_share_is_a_share_and_needs_crops(tmp_path):
    with pytest.raises(ValueError, match="needs --crop"):
        resolve(tiny_run(tmp_path, target_crops=0.25))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        resolve(tiny_run(tmp_path, target_crops=1.5, crop=32))
    assert resolve(tiny_run(tmp_path, target_crops=0.25, crop=32)).target_crops == 0.25
