"""Scoring detectors and trackers on the shared data: metrics, evaluations and their reports."""
