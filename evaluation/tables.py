"""What every Markdown table of the reports shares."""


def figure_cell(value: float | None, template: str) -> str:
    """A table cell: ``value`` formatted with ``template`` (e.g. ``"{:.2f}"``), "-" when absent."""
    return "-" if value is None else template.format(value)
