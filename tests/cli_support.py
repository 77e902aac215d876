"""Run the ``irtrack`` command line in-process, as a user's shell would call it."""

from collections.abc import Sequence
from typing import Any

from click.testing import Result
from typer.testing import CliRunner

from cli.app import build_app


def irtrack(args: Sequence[str], **kwargs: Any) -> Result:
    """``irtrack ARGS...`` through the real entry point's command tree."""
    argv = [str(arg) for arg in args]
    return CliRunner().invoke(build_app(argv), argv, **kwargs)
