"""Fill the README's generated sections from files the project's commands wrote.

A section is delimited by ``<!-- BEGIN name -->`` and ``<!-- END name -->`` and replaced by the
contents of ``docs/results/name.md``; every figure in the README therefore comes from a command's
output (the command that wrote each file is named in the file itself), never from typing.
"""

import re
from pathlib import Path

import typer

REPO_ROOT = Path(__file__).resolve().parents[1]
SECTION = re.compile(
    r"(<!-- BEGIN (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- END (?P=name) -->)", re.S
)


def update_readme(readme: Path, results_dir: Path) -> list[str]:
    """Replace every generated section whose results file exists; returns the names replaced."""
    text = readme.read_text()
    replaced: list[str] = []

    def fill(match: re.Match[str]) -> str:
        source = results_dir / f"{match['name']}.md"
        if not source.exists():
            return match.group(0)
        replaced.append(match["name"])
        return f"{match.group(1)}{source.read_text().rstrip()}\n{match.group(4)}"

    readme.write_text(SECTION.sub(fill, text))
    return replaced


def main(
    readme: Path = REPO_ROOT / "README.md", results_dir: Path = REPO_ROOT / "docs" / "results"
) -> None:
    """Refresh the README's generated tables from docs/results/*.md."""
    names = update_readme(readme, results_dir)
    typer.echo(f"updated sections: {', '.join(names) or 'none'}")


if __name__ == "__main__":
    typer.run(main)
