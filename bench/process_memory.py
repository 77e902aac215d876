"""A process's memory as Linux reports it: resident set size now, and its peak since a reset.

``/proc/<pid>/status`` gives VmRSS (resident now) and VmHWM (the high-water mark); writing ``5``
to ``/proc/<pid>/clear_refs`` resets the high-water mark to the current RSS, so the peak of one
operation can be read in a process that has been running for a while (``ru_maxrss`` cannot).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

MiB = 1 << 20


def _status_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size now."""
    return _status_kib(pid, "VmRSS") * 1024


def peak_rss_bytes(pid: int | str = "self") -> int:
    """Highest resident set size since the process started or :func:`reset_peak_rss`."""
    return _status_kib(pid, "VmHWM") * 1024


def reset_peak_rss(pid: int | str = "self") -> None:
    """Make the high-water mark the current RSS (Linux >= 4.0)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")


@contextmanager
def peak_rss_growth(pid: int | str = "self") -> Iterator[dict[str, int]]:
    """Measure what a block costs: ``{"before", "peak", "after"}`` RSS bytes, filled on exit."""
    reset_peak_rss(pid)
    measured = {"before": rss_bytes(pid)}
    yield measured
    measured["peak"] = peak_rss_bytes(pid)
    measured["after"] = rss_bytes(pid)
