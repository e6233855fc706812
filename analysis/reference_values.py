"""Published figures (workshop slides, SaShiMi paper) and how our experiments map onto them.

Reads only the copies under analysis/reference/; it never reads anything outside the project and
never guesses a mapping: an experiment missing from the tables below simply has no reference.
"""

import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from study.records import FINAL_METRICS

REFERENCE_DIR = Path(__file__).parent / "reference"
WORKSHOP_FILE = REFERENCE_DIR / "workshop_metrics.csv"
PAPER_FILE = REFERENCE_DIR / "paper_results.csv"

# The workshop table's rows: test then val, each in the slides' (lexicographic) order.
WORKSHOP_METRICS = tuple(sorted(FINAL_METRICS))

# Our experiment name -> the workshop slides' column it reproduces.
WORKSHOP_COLUMNS = {
    "youtubemix-sashimi-8": "YouTubeMix - 8 layers",
    "bigband-sashimi-8": "YouTubeBigBand - 8 layers",
    "bigband-sashimi-2": "YouTubeBigBand - 2 layers",
}

# Our experiment name -> the paper's (dataset, model) row. The paper trained on YouTubeMix only.
PAPER_MODELS = {
    "youtubemix-sashimi-8": ("YouTubeMix", "SaShiMi (8 layers)"),
    "youtubemix-sashimi-2": ("YouTubeMix", "SaShiMi (2 layers)"),
}
# The paper's test NLL (bits per sample) is our test bpb; no other row of ours has a paper figure.
PAPER_METRIC = ("test NLL", "final/test/bpb")


@dataclass(frozen=True)
class PaperFigure:
    """One published number: what it measures, its value and unit, and where it comes from."""
    dataset: str
    model: str
    metric: str
    value: float
    unit: str
    source: str
    confidence: str


def _read_commented_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"reference table {path} is missing; restore it from git "
                                f"(git checkout -- {path.relative_to(REFERENCE_DIR.parent.parent)})")
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    return pd.read_csv(io.StringIO("\n".join(lines)))


def workshop_metrics() -> pd.DataFrame:
    """The workshop table: index metric (e.g. final/test/bpb), one column per workshop model."""
    return _read_commented_csv(WORKSHOP_FILE).set_index("metric")


def paper_results() -> pd.DataFrame:
    """The paper's figures, one row each, as published (value column numeric)."""
    return _read_commented_csv(PAPER_FILE)


def workshop_value(experiment: str, metric: str) -> float | None:
    """The workshop's value of `metric` for the column `experiment` reproduces, or None."""
    column = WORKSHOP_COLUMNS.get(experiment)
    table = workshop_metrics()
    if column is None or metric not in table.index:
        return None
    value = table.loc[metric, column]
    return None if pd.isna(value) else float(value)


def paper_figure(experiment: str, metric: str) -> PaperFigure | None:
    """The paper's figure comparable with our `metric` of `experiment` (test NLL vs test bpb), or None."""
    if experiment not in PAPER_MODELS or metric != PAPER_METRIC[1]:
        return None
    dataset, model = PAPER_MODELS[experiment]
    table = paper_results()
    rows = table[(table.dataset == dataset) & (table.model == model) & (table.metric == PAPER_METRIC[0])]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return PaperFigure(dataset=row.dataset, model=row.model, metric=row.metric, value=float(row.value),
                       unit=row.unit, source=row.source, confidence=row.confidence)


def reference_table() -> pd.DataFrame:
    """The published figures alone: workshop columns plus the paper's test NLL on the bpb row."""
    table = workshop_metrics().reindex(list(WORKSHOP_METRICS))
    for experiment, (_, model) in PAPER_MODELS.items():
        figure = paper_figure(experiment, PAPER_METRIC[1])
        if figure is not None:
            table[f"paper: {model} test NLL (bits)"] = [figure.value if metric == PAPER_METRIC[1] else None
                                                       for metric in table.index]
    table.index.name = "metric"
    return table
