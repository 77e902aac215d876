"""A stream's detection options: its threshold, the regions of its frames to ignore, and whether
it reports every detection or only those of confirmed tracks.

Set through the API (``PUT /v1/streams/{id}/options``) and carried with each of the stream's
frames to the worker, which applies them in post-processing:

- ``threshold``: the probability above which a pixel is on, for this stream (a request's own
  ``threshold`` parameter overrides it for that frame);
- ``ignore``: rectangles or polygons in the frame's pixels (x = column, y = row, the frame as
  sent); a detection whose centroid lies inside or on the edge of one is dropped before the
  tracker sees it: a camera's burned-in caption or timestamp, a mast, a known hot chimney;
- ``report``: ``"all"`` (default) or ``"confirmed"``: only detections that belong to a confirmed
  track, i.e. seen in ``confirm_hits`` frames (the tracker's setting, 3 by default) with gaps of at
  most ``tentative_max_gap``. One-frame false alarms never show; a new target shows
  ``confirm_hits - 1`` frames after it appears (67 ms at 30 fps with the defaults).

Regions are drawn on frames of one size (``width`` x ``height``), checked to lie inside it; a frame
of another size is refused while the options hold (set new ones for the new size).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from frames.postprocess import Component

MAX_REGIONS = 32
MAX_VERTICES = 64
MAX_FRAME_SIDE = 65_536


class IgnoreRegion(BaseModel):
    """A rectangle ``rect: [x0, y0, x1, y1]`` or a polygon ``polygon: [[x, y], ...]``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rect: tuple[float, float, float, float] | None = Field(
        default=None, description="[x0, y0, x1, y1], corners included."
    )
    polygon: tuple[tuple[float, float], ...] | None = Field(
        default=None,
        description=f"3 to {MAX_VERTICES} vertices [x, y], in order around the region.",
    )

    @model_validator(mode="after")
    def _one_shape(self) -> IgnoreRegion:
        if (self.rect is None) == (self.polygon is None):
            raise ValueError("a region is either a rect or a polygon")
        if self.rect is not None and not (
            self.rect[0] < self.rect[2] and self.rect[1] < self.rect[3]
        ):
            raise ValueError(f"rect {list(self.rect)}: needs x0 < x1 and y0 < y1")
        if self.polygon is not None:
            if not 3 <= len(self.polygon) <= MAX_VERTICES:
                raise ValueError(
                    f"a polygon has 3 to {MAX_VERTICES} vertices, got {len(self.polygon)}"
                )
            if cv2.contourArea(np.asarray(self.polygon, np.float32)) <= 0:
                raise ValueError("a polygon must enclose an area (its vertices are on a line)")
        return self

    def vertices(self) -> np.ndarray:
        """The region's outline as an (N, 2) float32 array of (x, y)."""
        if self.rect is not None:
            x0, y0, x1, y1 = self.rect
            return np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], np.float32)
        assert self.polygon is not None
        return np.asarray(self.polygon, np.float32)

    def contains(self, x: float, y: float) -> bool:
        return cv2.pointPolygonTest(self.vertices(), (float(x), float(y)), False) >= 0


class DetectionOptions(BaseModel):
    """What a stream's post-processing does differently from the service's defaults."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    width: int = Field(
        gt=0, le=MAX_FRAME_SIDE, description="Width of the frames the regions are for."
    )
    height: int = Field(gt=0, le=MAX_FRAME_SIDE, description="Height of those frames.")
    threshold: float | None = Field(
        default=None, gt=0, lt=1, description="Probability threshold; default: the service's."
    )
    ignore: tuple[IgnoreRegion, ...] = Field(
        default=(), max_length=MAX_REGIONS, description="Regions whose detections are dropped."
    )
    report: Literal["all", "confirmed"] = Field(
        default="all", description="'confirmed': only detections of confirmed tracks."
    )

    @model_validator(mode="after")
    def _regions_inside_the_frame(self) -> DetectionOptions:
        for index, region in enumerate(self.ignore):
            points = region.vertices()
            if (
                (points < 0).any()
                or (points[:, 0] > self.width).any()
                or (points[:, 1] > self.height).any()
            ):
                raise ValueError(
                    f"ignore[{index}] reaches outside the {self.width}x{self.height} frame"
                )
        return self

    def kept(self, components: Sequence[Component]) -> list[Component]:
        """The components whose centroid lies in no ignore region."""
        return [
            c
            for c in components
            if not any(region.contains(c.centroid_x, c.centroid_y) for region in self.ignore)
        ]
