"""Detection metrics of the infrared small-target literature (BasicIRSTD / DNANet conventions).

See ``shared/specs/metrics.md``. Pixel level, on ``prob > threshold`` (0.5 = logit > 0):

- ``mIoU`` (the papers' name): ONE IoU over the split, sum |P & G| / sum |P | G|, in percent;
- ``nIoU``: the mean of per-image IoUs over images that contain a target, in percent; images
  without targets are excluded from it (``niou_excluded_images`` says how many) but count in Fa.

Target level, 8-connected components of prediction and mask (``frames.postprocess``):

- a ground-truth target is detected by the first not-yet-matched predicted component, in label
  order (raster order of first pixel, as ``skimage.measure.label``), whose centroid lies at
  Euclidean distance < 3 px from the target's centroid: BasicIRSTD's greedy matching;
- ``Pd`` = detected / targets, in percent;
- ``Fa`` = pixels of the predicted components left unmatched / all pixels, in units of 1e-6.
  BasicIRSTD removes matched pixels by area value, a known quirk; here the real unmatched pixels
  are counted;
- ``fa_per_frame`` = unmatched components / images: the false alarms a service user sees.

ROC: the target-level counts are kept for every threshold of a fixed list (memory stays bounded
however many images stream through). ``roc`` holds Pd (%), Fa (1e-6) and false-alarm objects per frame per threshold, and
``roc_auc`` is the area under Pd (0..1) against Fa over 0..``ROC_FA_LIMIT`` (points sorted by Fa,
linear interpolation, the origin added, the last Pd carried to the limit), divided by the limit so
that 1.0 means every target found before the first false-alarm pixel. Partial, because Fa beyond
1e-4 is far outside any useful operating point and would otherwise dominate the area.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from frames.postprocess import DEFAULT_THRESHOLD, centroids_and_areas, sigmoid

MATCH_DISTANCE = 3.0
FA_UNIT = 1e-6
ROC_FA_LIMIT = 100 * FA_UNIT
# Evenly spaced in logit space (-6 .. 6 in steps of 0.5) so that both tails are resolved;
# includes 0.5 exactly.
DEFAULT_ROC_THRESHOLDS: tuple[float, ...] = tuple(
    float(t) for t in sigmoid(np.linspace(-6.0, 6.0, 25))
)


@dataclass(frozen=True)
class TargetMatch:
    """Target-level outcome of one prediction against one mask."""

    detected: int
    false_alarm_pixels: int
    false_alarm_objects: int


def match_targets(
    target_centroids: np.ndarray, predicted_binary: np.ndarray, distance: float = MATCH_DISTANCE
) -> TargetMatch:
    """Greedy BasicIRSTD matching of targets (centroids (N, 2), x/y) to predicted components."""
    predicted_centroids, predicted_areas = centroids_and_areas(predicted_binary)
    matched = np.zeros(len(predicted_areas), dtype=bool)
    detected = 0
    for target in target_centroids:
        distances = np.hypot(*(predicted_centroids - target).T)
        candidates = np.flatnonzero((distances < distance) & ~matched)
        if candidates.size:
            matched[candidates[0]] = True
            detected += 1
    return TargetMatch(
        detected=detected,
        false_alarm_pixels=int(predicted_areas[~matched].sum()),
        false_alarm_objects=int((~matched).sum()),
    )


@dataclass
class _TargetCounts:
    detected: int = 0
    false_alarm_pixels: int = 0
    false_alarm_objects: int = 0

    def add(self, match: TargetMatch) -> None:
        self.detected += match.detected
        self.false_alarm_pixels += match.false_alarm_pixels
        self.false_alarm_objects += match.false_alarm_objects


class SegmentationMetrics:
    """Streaming accumulator: ``update(prob, mask)`` per image, ``compute()`` at the end."""

    def __init__(
        self,
        threshold: float = DEFAULT_THRESHOLD,
        roc_thresholds: tuple[float, ...] = DEFAULT_ROC_THRESHOLDS,
    ) -> None:
        self.threshold = threshold
        self.roc_thresholds = tuple(sorted(set(roc_thresholds)))
        self.images = 0
        self.pixels = 0
        self.targets = 0
        self.intersection = 0
        self.union = 0
        self.niou_sum = 0.0
        self.niou_images = 0
        self._counts = {t: _TargetCounts() for t in {threshold, *self.roc_thresholds}}

    def update(self, prob: np.ndarray, mask: np.ndarray) -> None:
        """Add one image: ``prob`` (H, W) probabilities, ``mask`` (H, W) bool or {0, 1}/{0, 255}."""
        prob = np.asarray(prob)
        target = np.asarray(mask) > 0
        if prob.shape != target.shape or prob.ndim != 2:
            raise ValueError(f"prediction {prob.shape} and mask {target.shape} must be equal 2-D")
        predicted = prob > self.threshold
        intersection = int(np.count_nonzero(predicted & target))
        union = int(np.count_nonzero(predicted | target))
        self.intersection += intersection
        self.union += union
        if target.any():
            self.niou_sum += intersection / union
            self.niou_images += 1
        target_centroids, _ = centroids_and_areas(target)
        self.targets += len(target_centroids)
        self.images += 1
        self.pixels += target.size
        for threshold, counts in self._counts.items():
            counts.add(match_targets(target_centroids, prob > threshold))

    def _pd_percent(self, counts: _TargetCounts) -> float:
        return 100.0 * counts.detected / self.targets if self.targets else float("nan")

    def _fa(self, counts: _TargetCounts) -> float:
        """Fa in units of FA_UNIT."""
        return counts.false_alarm_pixels / self.pixels / FA_UNIT if self.pixels else float("nan")

    def compute(self) -> dict[str, Any]:
        """The metrics so far; see the module docstring for definitions and units."""
        at_threshold = self._counts[self.threshold]
        roc_pd = [self._pd_percent(self._counts[t]) for t in self.roc_thresholds]
        roc_fa = [self._fa(self._counts[t]) for t in self.roc_thresholds]
        roc_fa_per_frame = [
            self._counts[t].false_alarm_objects / self.images if self.images else float("nan")
            for t in self.roc_thresholds
        ]
        return {
            "mIoU": 100.0 * self.intersection / self.union if self.union else float("nan"),
            "nIoU": 100.0 * self.niou_sum / self.niou_images if self.niou_images else float("nan"),
            "Pd": self._pd_percent(at_threshold),
            "Fa": self._fa(at_threshold),
            "fa_per_frame": (
                at_threshold.false_alarm_objects / self.images if self.images else float("nan")
            ),
            "images": self.images,
            "targets": self.targets,
            "detected": at_threshold.detected,
            "pixels": self.pixels,
            "false_alarm_pixels": at_threshold.false_alarm_pixels,
            "false_alarm_objects": at_threshold.false_alarm_objects,
            "niou_images": self.niou_images,
            "niou_excluded_images": self.images - self.niou_images,
            "threshold": self.threshold,
            "roc": {
                "thresholds": list(self.roc_thresholds),
                "pd": roc_pd,
                "fa": roc_fa,
                "fa_per_frame": roc_fa_per_frame,
            },
            "roc_auc": roc_area(roc_fa, roc_pd),
            "roc_auc_fa_limit": ROC_FA_LIMIT / FA_UNIT,
        }


def roc_area(fa: list[float], pd_percent: list[float]) -> float:
    """Normalised area under Pd against Fa (units of FA_UNIT) over 0..ROC_FA_LIMIT, in [0, 1]."""
    limit = ROC_FA_LIMIT / FA_UNIT
    points = sorted(
        (f, p / 100.0) for f, p in zip(fa, pd_percent, strict=True) if np.isfinite(f + p)
    )
    if not points:
        return float("nan")
    xs = np.array([0.0] + [f for f, _ in points])
    ys = np.array([0.0] + [p for _, p in points])
    inside = xs < limit
    ys_at_limit = np.interp(limit, xs, ys) if xs[-1] >= limit else ys[-1]
    xs = np.append(xs[inside], limit)
    ys = np.append(ys[inside], ys_at_limit)
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0) / limit)


def plot_roc(result: dict[str, Any], path: Path | str, title: str = "") -> None:
    """Save the Pd-Fa curve of ``SegmentationMetrics.compute()`` as a PNG (log Fa axis)."""
    from matplotlib.figure import Figure  # imported here: only the eval command draws

    roc = result["roc"]
    fa = np.asarray(roc["fa"], dtype=float)
    pd = np.asarray(roc["pd"], dtype=float)
    shown = fa > 0  # a log axis cannot show Fa = 0; those points are listed in the JSON
    figure = Figure(figsize=(6, 4.5), dpi=120)
    axes = figure.add_subplot()
    axes.plot(fa[shown], pd[shown], marker="o", markersize=3, label="threshold sweep")
    if result["Fa"] > 0:
        axes.plot(
            [result["Fa"]],
            [result["Pd"]],
            marker="*",
            markersize=12,
            linestyle="none",
            label=f"threshold {result['threshold']:g}",
        )
    axes.set_xscale("log")
    axes.set_xlabel("Fa (x1e-6)")
    axes.set_ylabel("Pd (%)")
    axes.set_ylim(0, 100)
    axes.grid(True, which="both", alpha=0.3)
    area = f"ROC area (Fa <= {result['roc_auc_fa_limit']:g}) = {result['roc_auc']:.3f}"
    axes.set_title(f"{title}\n{area}" if title else area)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(str(path))
