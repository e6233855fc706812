"""Tables to files: CSV (numbers), Markdown and LaTeX (booktabs, formatted strings such as 'm ± s').

It writes only the files it is asked for and never rounds the CSV: rounding is for the eyes only.
"""

from pathlib import Path

import pandas as pd

LATEX_SYMBOLS = {"±": r"$\pm$", "Δ": r"$\Delta$", "†": r"$^\dagger$", "‡": r"$^\ddagger$", "−": "-", "—": "--", "←": r"$\leftarrow$"}


def to_markdown(table: pd.DataFrame, notes: list[str] | tuple[str, ...] = ()) -> str:
    """A GitHub Markdown table (index as first column) followed by its notes as a list."""
    def cell(value) -> str:
        text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
        return text.replace("|", "\\|").replace("\n", " ")
    index_name = table.index.name or ""
    header = [index_name, *map(str, table.columns)]
    numeric = [_is_number_column(table[column]) for column in table.columns]
    lines = ["| " + " | ".join(cell(name) for name in header) + " |",
             "|" + "|".join([" --- ", *(" ---: " if is_number else " --- " for is_number in numeric)]) + "|"]
    for index, row in table.iterrows():
        lines.append("| " + " | ".join([cell(index), *(cell(value) for value in row)]) + " |")
    if notes:
        lines += [""] + [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame, caption: str | None = None, label: str | None = None,
             notes: list[str] | tuple[str, ...] = ()) -> str:
    """A booktabs LaTeX table (needs \\usepackage{booktabs}); notes become comment lines above it."""
    try:
        import jinja2  # noqa: F401  (pandas' Styler renders through jinja2)
    except ImportError as error:
        raise ImportError("LaTeX export needs jinja2 (pandas Styler): pip install 'jinja2==3.1.6' or "
                          "reinstall the project with `make install`") from error
    flat = table.reset_index() if table.index.name or not isinstance(table.index, pd.RangeIndex) else table
    styler = flat.style.format(escape="latex", na_rep="").hide(axis="index")
    styler = styler.format_index(escape="latex", axis=1)
    column_format = "".join("r" if _is_number_column(flat[column]) else "l" for column in flat.columns)
    latex = styler.to_latex(hrules=True, column_format=column_format, caption=caption, label=label,
                            position_float="centering" if caption else None)
    for symbol, command in LATEX_SYMBOLS.items():
        latex = latex.replace(symbol, command)
    comments = "".join(f"% {note}\n" for note in notes)
    return comments + latex


def _is_number_column(column: pd.Series) -> bool:
    """Numbers, or numbers written as text ('2.1000 ± 0.1000', '+0.0360'): right-aligned."""
    if pd.api.types.is_numeric_dtype(column):
        return True
    text = column.astype(str).str.replace(r"[\s±+\-.—e]", "", regex=True)
    filled = text[text != ""]
    return bool(len(filled)) and bool(filled.str.isdigit().all())


def write_table(formatted: pd.DataFrame, directory: Path, stem: str, numbers: pd.DataFrame | None = None,
                caption: str | None = None, notes: list[str] | tuple[str, ...] = ()) -> dict[str, Path]:
    """Write stem.csv (`numbers`, else `formatted`), stem.md and stem.tex; returns {format: path}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"csv": directory / f"{stem}.csv", "md": directory / f"{stem}.md", "tex": directory / f"{stem}.tex"}
    csv_table = numbers if numbers is not None else formatted
    csv_table.to_csv(paths["csv"], index=numbers is None)
    paths["md"].write_text(to_markdown(formatted, notes))
    paths["tex"].write_text(to_latex(formatted, caption=caption, label=f"tab:{stem}", notes=notes))
    return paths
