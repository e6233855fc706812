"""Results of the sampling search (temperature, top_p, score and its components) for reports.

Reads runs/<study>/sampling-search/*.csv|*.parquet as written by the search; it never runs a search
and never re-scores: a missing or malformed file becomes a `Missing` that says how to make it.
"""

from pathlib import Path

import pandas as pd

from analysis.missing import Missing

SEARCH_FOLDER = "sampling-search"
REQUIRED_COLUMNS = ("temperature", "top_p", "score")


def search_files(study_dir: Path) -> list[Path]:
    folder = Path(study_dir) / SEARCH_FOLDER
    if not folder.is_dir():
        return []
    return sorted([*folder.rglob("*.csv"), *folder.rglob("*.parquet")])


def load_sampling_results(study_dir: Path) -> pd.DataFrame | Missing:
    """Every search result row under study_dir/sampling-search (with a `source` column), or Missing."""
    study_dir = Path(study_dir)
    how = f"run `study search-sampling` for study {study_dir.name} (make search); it writes {study_dir / SEARCH_FOLDER}/"
    files = search_files(study_dir)
    if not files:
        return Missing(f"sampling search results of study {study_dir.name!r}", how)
    frames, problems = [], []
    for path in files:
        try:
            frame = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        except Exception as error:  # a half-written file can fail in several pandas/pyarrow ways
            problems.append(f"{path.name} unreadable ({type(error).__name__})")
            continue
        absent = [column for column in REQUIRED_COLUMNS if column not in frame]
        if absent:
            problems.append(f"{path.name} lacks columns {absent}")
            continue
        frames.append(frame.assign(source=path.name))
    if not frames:
        return Missing(f"readable sampling search results of study {study_dir.name!r}: " + "; ".join(problems), how)
    results = pd.concat(frames, ignore_index=True)
    for column in REQUIRED_COLUMNS:
        results[column] = pd.to_numeric(results[column], errors="coerce")
    results = results.dropna(subset=list(REQUIRED_COLUMNS))
    if results.empty:
        return Missing(f"finished sampling search trials of study {study_dir.name!r} (every score is empty)", how)
    return results.sort_values("score", ignore_index=True)


def score_components(results: pd.DataFrame) -> list[str]:
    """The per-component score columns (anything numeric besides temperature, top_p and score)."""
    skip = {*REQUIRED_COLUMNS, "source", "trial", "number", "seed"}
    return [column for column in results.columns
            if column not in skip and pd.api.types.is_numeric_dtype(results[column])]
