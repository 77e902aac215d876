"""Fill the generated blocks of README.md and docs/*.md from files the project's commands wrote.

A block is delimited by ``<!-- BEGIN name -->`` and ``<!-- END name -->`` and replaced by the
contents of ``docs/results/name.md``; every figure in the documentation therefore comes from a
command's output (the command that wrote each file is named in the file itself), never from typing.
"""

import re
from pathlib import Path

import typer

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = (REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")))
SECTION = re.compile(
    r"(<!-- BEGIN (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- END (?P=name) -->)", re.S
)


def update_document(document: Path, results_dir: Path) -> list[str]:
    """Replace every generated block whose results file exists; returns the names replaced."""
    text = document.read_text()
    replaced: list[str] = []

    def fill(match: re.Match[str]) -> str:
        source = results_dir / f"{match['name']}.md"
        if not source.exists():
            return match.group(0)
        replaced.append(match["name"])
        return f"{match.group(1)}{source.read_text().rstrip()}\n{match.group(4)}"

    document.write_text(SECTION.sub(fill, text))
    return replaced


def main(results_dir: Path = REPO_ROOT / "docs" / "results") -> None:
    """Refresh the generated blocks of README.md and docs/*.md from docs/results/*.md."""
    for document in DOCUMENTS:
        names = update_document(document, results_dir)
        typer.echo(f"{document.relative_to(REPO_ROOT)}: {', '.join(names) or 'nothing to update'}")


if __name__ == "__main__":
    typer.run(main)
