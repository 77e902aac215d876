"""The ``irtrack`` command line: one entry point; a subcommand's module is imported only when that
subcommand runs, so ``irtrack serve`` as a scale-out API process and ``irtrack stream`` never
import torch (``irtrack --help`` imports them all to list them)."""

from __future__ import annotations

import importlib
import sys

import typer

import service  # noqa: F401  (its import sets the OpenMP wait policy before a subcommand loads torch)

# subcommand -> "module:attribute" (a typer command function, or a typer app of subcommands)
COMMANDS = {
    "serve": "service.server:serve_command",
    "worker": "service.worker_process:worker_command",
    "demo": "cli.demo:demo_command",
    "stream": "clients.stream_cli:stream_command",
    "info": "cli.models:info",
    "export": "cli.models:export",
    "train": "training.command:train_command",
    "select": "training.selection:select_command",
    "eval": "evaluation.images:eval_command",
    "eval-sequences": "evaluation.sequences:eval_sequences",
    "eval-tracks": "evaluation.tracks:eval_tracks",
    "eval-video": "evaluation.video:eval_video",
    "report": "evaluation.report:report_app",
    "bench": "bench.commands:bench_app",
}


def _add(app: typer.Typer, name: str) -> None:
    module_name, attribute = COMMANDS[name].split(":")
    target = getattr(importlib.import_module(module_name), attribute)
    if isinstance(target, typer.Typer):
        app.add_typer(target, name=name)
    else:
        app.command(name)(target)


def build_app(argv: list[str]) -> typer.Typer:
    """The command line for ``argv``: only the named subcommand's module is imported; with no
    known subcommand (``--help``, a typo) every one is, to list them."""
    app = typer.Typer(
        help="Real-time infrared small-target detection and tracking.", no_args_is_help=True
    )

    @app.callback()
    def irtrack() -> None:
        """Real-time infrared small-target detection and tracking."""

    chosen = next((word for word in argv if not word.startswith("-")), None)
    for name in [chosen] if chosen in COMMANDS else COMMANDS:
        _add(app, name)
    return app


def main() -> None:
    build_app(sys.argv[1:])()
