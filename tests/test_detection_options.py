"""A stream's detection options: ignore regions, their checks, and what they keep."""

import pytest
from pydantic import ValidationError

from frames.options import MAX_REGIONS, MAX_VERTICES, DetectionOptions, IgnoreRegion
from frames.postprocess import Component


def component(x: float, y: float) -> Component:
    return Component(x, y, int(x), int(y), int(x), int(y), area=1, score=0.9)


def test_detections_inside_a_rectangle_or_polygon_are_dropped_and_the_rest_kept():
    options = DetectionOptions(
        width=640,
        height=512,
        ignore=(
            IgnoreRegion(rect=(0, 0, 639, 20)),  # a caption along the top
            IgnoreRegion(polygon=((300, 300), (340, 300), (320, 340))),
        ),
    )
    caption, in_triangle, on_edge, target = (
        component(100, 10),
        component(320, 310),
        component(320, 300),
        component(320, 200),
    )
    assert options.kept([caption, in_triangle, on_edge, target]) == [target]


@pytest.mark.parametrize(
    ("region", "message"),
    [
        ({"rect": [0, 0, 700, 20]}, "outside the 640x512 frame"),
        ({"rect": [-1, 0, 10, 20]}, "outside the 640x512 frame"),
        ({"rect": [10, 0, 5, 20]}, "x0 < x1"),
        ({"polygon": [[0, 0], [10, 10]]}, "3 to 64 vertices"),
        ({"polygon": [[i, i] for i in range(MAX_VERTICES + 1)]}, "3 to 64 vertices"),
        ({"polygon": [[0, 0], [10, 10], [20, 20]]}, "enclose an area"),
        ({"rect": [0, 0, 1, 1], "polygon": [[0, 0], [1, 0], [0, 1]]}, "either a rect or a polygon"),
    ],
)
def test_bad_regions_are_refused_with_the_reason(region, message):
    with pytest.raises(ValidationError, match=message):
        DetectionOptions.model_validate({"width": 640, "height": 512, "ignore": [region]})


def test_too_many_regions_and_thresholds_out_of_range_are_refused():
    regions = [{"rect": [0, 0, 1, 1]}] * (MAX_REGIONS + 1)
    with pytest.raises(ValidationError, match="at most 32"):
        DetectionOptions.model_validate({"width": 640, "height": 512, "ignore": regions})
    with pytest.raises(ValidationError, match="less than 1"):
        DetectionOptions(width=640, height=512, threshold=1.0)
