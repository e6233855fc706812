"""Hyperparameter grids: each metric's mean and std over seeds for every value of the varied keys,
and the value a researcher would pick (best mean of the study's `metric:` in its `mode:`; lowest val
bpb by default). Select on validation, never on test; test columns are shown for the selected value.
"""

import math
from dataclasses import dataclass

import pandas as pd

from analysis.results import Results, finished
from study.records import DEFAULT_METRIC, DEFAULT_MODE
from analysis.tables import DECIMALS, mean_std

GRID_METRICS = ("final/val/bpb", "final/test/bpb", "final/val/accuracy", "final/test/accuracy")


def selection_label(metric: str, mode: str) -> str:
    """'lowest val bpb' for (final/val/bpb, min), 'highest val accuracy' for (final/val/accuracy, max)."""
    words = metric.removeprefix("final/").replace("/", " ")
    return f"{'lowest' if mode == 'min' else 'highest'} {words}"


@dataclass
class Grid:
    """One study's grid: values has index = varied settings, columns = (metric, mean|std|n)."""
    study: str
    keys: list[str]
    values: pd.DataFrame
    trials: pd.DataFrame
    scale: str
    experiment: str
    metric: str = DEFAULT_METRIC    # the study's selection metric and mode (its study.json)
    mode: str = DEFAULT_MODE

    @property
    def best(self):
        """The index entry with the best mean selection metric (lowest for mode min), or None if none finished."""
        column = (self.metric, "mean")
        if column not in self.values or self.values[column].dropna().empty:
            return None
        means = self.values[column]
        return means.idxmin() if self.mode == "min" else means.idxmax()

    @property
    def selection(self) -> str:
        return selection_label(self.metric, self.mode)

    def formatted(self, decimals: int = DECIMALS) -> pd.DataFrame:
        """'m ± s' per metric, the seed count, and a mark on the value selected by the study's metric."""
        table = pd.DataFrame(index=self.values.index)
        for metric in dict.fromkeys((*GRID_METRICS, self.metric)):
            if (metric, "mean") in self.values:
                table[metric] = [mean_std(mean, std, decimals) for mean, std in
                                 zip(self.values[(metric, "mean")], self.values[(metric, "std")])]
        table["seeds"] = self.values[(GRID_METRICS[0], "n")].astype(int) if (GRID_METRICS[0], "n") in self.values else 0
        best = self.best
        table[f"selected ({self.selection})"] = ["✓" if index == best else "" for index in table.index]
        return table


def grid_keys(trials: pd.DataFrame, varied: list[str]) -> list[str]:
    """The varied config keys, with 'experiment' first when a study mixes experiments."""
    extra = ["experiment"] if trials["experiment"].nunique() > 1 else []
    return extra + list(varied)


def summarise(trials: pd.DataFrame, keys: list[str], metrics=GRID_METRICS) -> pd.DataFrame:
    """Mean, sample std (ddof=1) and count of each metric per combination of `keys` (finished trials)."""
    done = finished(trials)
    metrics = [metric for metric in metrics if metric in done]
    if done.empty or not metrics:
        return pd.DataFrame()
    grouped = done.groupby(keys if len(keys) > 1 else keys[0], dropna=False, sort=True)[metrics]
    values = grouped.agg(["mean", lambda column: column.std(ddof=1) if column.count() > 1 else math.nan, "count"])
    values.columns = pd.MultiIndex.from_tuples([(metric, name) for metric in metrics for name in ("mean", "std", "n")])
    return values


def grids(results: Results) -> list[Grid]:
    """One Grid for every study that varies a config key other than the seed."""
    found = []
    for study in results.studies:
        if not study.varied_keys:
            continue
        keys = grid_keys(study.trials, study.varied_keys)
        metrics = tuple(dict.fromkeys((*GRID_METRICS, study.metric)))
        found.append(Grid(study=study.name, keys=keys, values=summarise(study.trials, keys, metrics),
                          trials=finished(study.trials),
                          scale=", ".join(sorted(study.trials["scale"].astype(str).unique())),
                          experiment=", ".join(sorted(study.trials["experiment"].astype(str).unique())),
                          metric=study.metric, mode=study.mode))
    return found
