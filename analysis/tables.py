"""The workshop's metrics table for our experiments: mean and std over seeds beside the workshop's and
the paper's published values, and the differences.

Only finished trials count; it never mixes scales, data or studies in one column and never hides
that a column is smoke-scale or stand-in data, or that its tokens come from another quantizer than the
published numbers' (each such column is flagged in its header and notes, its Δ kept but marked).
"""

import math
from dataclasses import dataclass, field

import pandas as pd

from analysis.reference_values import (PAPER_MODELS, REFERENCE_QUANTIZER, WORKSHOP_COLUMNS, WORKSHOP_METRICS,
                                       paper_figure, quantizer_of, workshop_value)
from analysis.results import Results, finished

FIELDS = ("mean", "std", "n", "workshop", "workshop_diff", "paper", "paper_diff")
DECIMALS = 4
NOT_REPLICATION_MARK = "†"
OTHER_TOKENS_MARK = "‡"  # a Δ across quantizers: our tokens are not the published numbers' tokens


@dataclass
class Column:
    """One column of ours: trials of one experiment, study, scale and data (seeds pooled)."""
    label: str
    study: str
    experiment: str
    scale: str
    data: str
    stands_in_for: str | None
    settings: dict
    seeds: list
    trials: int
    finished: int
    data_warnings: list[str] = field(default_factory=list)
    quantizer: str = REFERENCE_QUANTIZER

    @property
    def same_tokens_as_references(self) -> bool:
        return self.quantizer == REFERENCE_QUANTIZER

    @property
    def workshop_column(self) -> str | None:
        return WORKSHOP_COLUMNS.get(self.experiment)

    @property
    def paper_model(self) -> str | None:
        return PAPER_MODELS.get(self.experiment, (None, None))[1]

    @property
    def is_replication(self) -> bool:
        """Full scale on the real data with the official tokens: the only columns comparable with
        published numbers."""
        return self.scale == "full" and not self.stands_in_for and self.same_tokens_as_references

    @property
    def flags(self) -> list[str]:
        flags = []
        if self.scale != "full":
            flags.append(f"{self.scale} scale")
        if self.stands_in_for:
            flags.append(f"stand-in data ({self.data} for {self.stands_in_for})")
        if self.trials > self.finished:
            flags.append(f"{self.trials - self.finished} of {self.trials} trials not finished, left out")
        if not self.same_tokens_as_references:
            flags.append(f"{OTHER_TOKENS_MARK} {self.quantizer} quantizer, the published numbers used the "
                         f"{REFERENCE_QUANTIZER} one: Δ compares bpb on different tokens")
        if self.finished == 1:
            flags.append("one seed, no std")
        return flags


@dataclass
class WorkshopTable:
    """values: index = workshop metric, columns = (column label, field) with FIELDS; plus column facts."""
    values: pd.DataFrame
    columns: list[Column]

    @property
    def empty(self) -> bool:
        return not self.columns

    @property
    def notes(self) -> list[str]:
        notes = ["Ours: mean ± sample std (ddof=1) over the finished seeds; n = finished trials.",
                 "Δ = ours − reference: lower is better for bpb and loss, higher for accuracies.",
                 "Loss in nats per sample; bpb = loss / ln 2. The paper's test NLL is in bits per sample, "
                 "the same unit as our test bpb (8-bit mu-law samples).",
                 "The workshop slides print no final/val/accuracy@10.",
                 f"The workshop's and the paper's numbers come from the {REFERENCE_QUANTIZER} tokenizer "
                 f"(data.quantizer={REFERENCE_QUANTIZER}); each column says which quantizer made its tokens, "
                 f"and {OTHER_TOKENS_MARK} marks a comparison across quantizers."]
        for column in self.columns:
            references = [f"workshop '{column.workshop_column}'" if column.workshop_column else "no workshop column",
                          f"paper '{column.paper_model}'" if column.paper_model else "no paper figure"]
            notes.append(f"{column.label} <- study {column.study}, experiment {column.experiment}, data "
                         f"{column.data} ({column.quantizer} quantizer), scale {column.scale}, seeds {column.seeds}; "
                         "compared with "
                         + " and ".join(references) + ".")
            if not column.is_replication:
                notes.append(f"{NOT_REPLICATION_MARK} {column.label} is NOT a replication: "
                             + "; ".join(column.flags) + ".")
            elif column.flags:
                notes.append(f"{column.label}: " + "; ".join(column.flags) + ".")
        return notes

    def header(self, column: Column) -> str:
        mark = "" if column.is_replication else f" {NOT_REPLICATION_MARK}"
        mark += "" if column.same_tokens_as_references else f" {OTHER_TOKENS_MARK}"
        return f"{column.label} (n={column.finished}, {column.quantizer} tokens){mark}"

    def tidy(self) -> pd.DataFrame:
        """One row per (column, metric) with numeric fields: what the CSV export holds."""
        rows = []
        for column in self.columns:
            for metric in self.values.index:
                row = {"column": column.label, "study": column.study, "experiment": column.experiment,
                       "scale": column.scale, "data": column.data, "stands_in_for": column.stands_in_for,
                       "replication": column.is_replication, "quantizer": column.quantizer,
                       "reference_quantizer": REFERENCE_QUANTIZER,
                       "across_quantizers": not column.same_tokens_as_references, "metric": metric}
                row.update({name: self.values.loc[metric, (column.label, name)] for name in FIELDS})
                row.update({"workshop_column": column.workshop_column, "paper_model": column.paper_model,
                            "flags": "; ".join(column.flags)})
                rows.append(row)
        return pd.DataFrame(rows)

    def formatted(self, decimals: int = DECIMALS) -> pd.DataFrame:
        """Strings for display and export: 'm ± s' per column, then its references and differences."""
        table = pd.DataFrame(index=self.values.index)
        for column in self.columns:
            part = self.values[column.label]
            table[self.header(column)] = [mean_std(row["mean"], row["std"], decimals) for _, row in part.iterrows()]
            across = "" if column.same_tokens_as_references else f" {OTHER_TOKENS_MARK}"
            if column.workshop_column:
                table[f"workshop: {column.workshop_column} ({REFERENCE_QUANTIZER} tokens)"] = \
                    part["workshop"].map(lambda v: number(v, decimals))
                table[f"Δ workshop ({column.label}){across}"] = \
                    part["workshop_diff"].map(lambda v: number(v, decimals, "+"))
            if column.paper_model:
                table[f"paper: {column.paper_model} ({REFERENCE_QUANTIZER} tokens)"] = \
                    part["paper"].map(lambda v: number(v, decimals))
                table[f"Δ paper ({column.label}){across}"] = part["paper_diff"].map(lambda v: number(v, decimals, "+"))
        table.index.name = "metric"
        return table


def number(value, decimals: int = DECIMALS, sign: str = "") -> str:
    """A float as text with fixed decimals; '' for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:{sign}.{decimals}f}"


def mean_std(mean, std, decimals: int = DECIMALS) -> str:
    """'m ± s', or 'm' when there is no std (one seed), or '—' when there is no value at all."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return number(mean, decimals)
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def replication_trials(results: Results) -> pd.DataFrame:
    """Trials of studies that vary nothing but the seed (grids are summarised by analysis.grids)."""
    keep = [study.trials for study in results.studies if not study.varied_keys]
    return pd.concat(keep, ignore_index=True) if keep else results.trials.iloc[0:0]


def group_columns(results: Results, trials: pd.DataFrame) -> list[tuple[Column, pd.DataFrame]]:
    """Split trials into table columns: one per (study, experiment, scale, data, varied settings)."""
    groups = []
    for study in results.studies:
        study_trials = trials[trials["study"] == study.name]
        if study_trials.empty:
            continue
        keys = ["experiment", "scale", "data", *study.varied_keys]
        for values, rows in study_trials.groupby(keys, dropna=False, sort=True):
            values = dict(zip(keys, values))
            all_records = [study.record(signature) for signature in rows["signature"]]
            quantizers = [quantizer_of(record) for record in all_records]
            for quantizer in sorted(set(quantizers)):  # never one column over two quantizers' tokens
                keep = [q == quantizer for q in quantizers]
                part = rows[keep]
                records = [record for record, kept in zip(all_records, keep) if kept]
                stand_ins = {(record.get("data_config") or {}).get("stands_in_for") for record in records} - {None}
                warnings = sorted({warning for record in records for warning in record.get("data_warnings") or []})
                done = finished(part)
                groups.append((Column(
                    label=values["experiment"], study=study.name, experiment=values["experiment"],
                    scale=values["scale"], data=values["data"], stands_in_for=", ".join(sorted(stand_ins)) or None,
                    settings={key: values[key] for key in study.varied_keys},
                    seeds=sorted(int(seed) for seed in done["seed"].dropna()), trials=len(part), finished=len(done),
                    data_warnings=warnings, quantizer=quantizer), done))
    order = list(WORKSHOP_COLUMNS)
    groups.sort(key=lambda group: (order.index(group[0].experiment) if group[0].experiment in order else len(order),
                                   group[0].experiment, group[0].study))
    _disambiguate([column for column, _ in groups])
    return groups


def _disambiguate(columns: list[Column]) -> None:
    """Make labels unique: add the study, then the varied settings, then the scale, each only where it
    tells apart columns that would otherwise share a label."""
    for extra in (lambda c: f"[{c.study}]",
                  lambda c: ", ".join(f"{k}={v}" for k, v in c.settings.items()),
                  lambda c: f"{c.scale}",
                  lambda c: f"({c.quantizer})"):
        labels = [column.label for column in columns]
        for label in set(labels):
            clashing = [column for column in columns if column.label == label]
            if len(clashing) > 1 and len({extra(column) for column in clashing}) > 1:
                for column in clashing:
                    column.label = f"{column.label} {extra(column)}".rstrip()


def workshop_table(results: Results, include_grids: bool = False) -> WorkshopTable:
    """The workshop's table for our columns (grid studies left out unless include_grids)."""
    trials = results.trials if include_grids else replication_trials(results)
    groups = group_columns(results, trials)
    metrics = list(WORKSHOP_METRICS)
    data: dict[tuple[str, str], list[float]] = {}
    for column, rows in groups:
        cells = {name: [] for name in FIELDS}
        for metric in metrics:
            values = rows[metric].dropna() if metric in rows else pd.Series(dtype=float)
            mean = float(values.mean()) if len(values) else math.nan
            workshop = workshop_value(column.experiment, metric)
            paper = paper_figure(column.experiment, metric)
            workshop = math.nan if workshop is None else workshop
            paper_value = math.nan if paper is None else paper.value
            cells["mean"].append(mean)
            cells["std"].append(float(values.std(ddof=1)) if len(values) > 1 else math.nan)
            cells["n"].append(float(len(values)))
            cells["workshop"].append(workshop)
            cells["workshop_diff"].append(mean - workshop)
            cells["paper"].append(paper_value)
            cells["paper_diff"].append(mean - paper_value)
        data.update({(column.label, name): cells[name] for name in FIELDS})
    values = pd.DataFrame(data, index=metrics, dtype=float)
    if data:
        values.columns = pd.MultiIndex.from_tuples(values.columns, names=["column", "field"])
    values.index.name = "metric"
    return WorkshopTable(values=values, columns=[column for column, _ in groups])
