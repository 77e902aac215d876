"""Benchmarks: model, post-processing, streaming and service speed, each a subcommand of ``irtrack bench``."""
