"""Warnings a reader must see before trusting a number: smoke scale, stand-in or leaky data, failed,
unfinished or mislabeled runs (results row disagreeing with its run record), uncommitted code.

It only reports; it never drops, fixes or re-labels a trial.
"""

import math
import re
from dataclasses import asdict, dataclass

import pandas as pd

from analysis.results import Results, Study, config_columns
from study.records import FINAL_METRICS, RESULTS_FILE, SPLITS, flatten

LEVELS = ("error", "warning", "missing", "note")
RELATIVE_TOLERANCE = 1e-6
BPB_TOLERANCE = 1e-3
TOP_K = ("accuracy", "accuracy@3", "accuracy@5", "accuracy@10")


@dataclass(frozen=True)
class Finding:
    """One thing to warn about: how serious, where (study, trial), what, and how to fix it."""
    level: str
    study: str
    trial: str
    message: str
    fix: str


def findings(results: Results) -> list[Finding]:
    """Every finding for the loaded studies, errors first, in a stable order."""
    found = [Finding("missing", "", "", missing.what, missing.how) for missing in results.missing]
    for study in results.studies:
        found += [Finding("missing", study.name, "", note.what, note.how) for note in study.notes]
        found += scale_findings(study) + data_findings(study) + status_findings(study)
        found += label_findings(study) + metric_findings(study) + code_findings(study)
    return sorted(found, key=lambda finding: LEVELS.index(finding.level))


def findings_table(found: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([asdict(finding) for finding in found], columns=["level", "study", "trial", "message", "fix"])


def scale_findings(study: Study) -> list[Finding]:
    smoke = study.trials[study.trials["scale"] == "smoke"]
    if smoke.empty:
        return []
    rerun = (f"study run {study.name} scale=full" if study.source == RESULTS_FILE
             else "study train experiment=<name> scale=full")
    return [Finding("warning", study.name, "",
                    f"{len(smoke)} of {len(study.trials)} trials ran at scale=smoke (tiny model, few short epochs, "
                    "stand-in data): they check the pipeline and are not a replication of any published number",
                    f"rerun at full scale on a GPU: {rerun}")]


def data_findings(study: Study) -> list[Finding]:
    found, warned = [], set()
    stand_ins = {}
    for row in study.trials.itertuples(index=False):
        record = study.record(row.signature)
        data_config = record.get("data_config") or {}
        if data_config.get("stands_in_for"):
            stand_ins.setdefault((data_config.get("name", row.data), data_config["stands_in_for"]), []).append(row.trial)
        for warning in record.get("data_warnings") or []:
            if warning not in warned:
                warned.add(warning)
                found.append(Finding("warning", study.name, "", warning,
                                     "report val/test NLL of this data as an in-distribution score"))
    for (used, replaced), trial_labels in stand_ins.items():
        found.append(Finding("warning", study.name, "",
                             f"{len(trial_labels)} trials trained on the embedded stand-in {used!r} instead of "
                             f"{replaced!r}: their metrics say nothing about {replaced}",
                             "run at scale=full (data.use_stand_in=false) with the real data prepared"))
    return found


def status_findings(study: Study) -> list[Finding]:
    found = []
    for row in study.trials.itertuples(index=False):
        command = study.record(row.signature).get("command") or f"study run {study.name}"
        if row.status == "failed":
            error = row.error if isinstance(row.error, str) and row.error else "no error recorded"
            found.append(Finding("error", study.name, row.trial, f"failed: {error}",
                                 f"see {row.run_dir}/run.json; rerun with `{command}`"))
        elif row.status in ("running", "pending"):
            found.append(Finding("note", study.name, row.trial,
                                 f"status {row.status}: no final metrics yet, left out of the tables",
                                 f"wait for it or resume it with `{command}`"))
        elif row.status != "finished":
            found.append(Finding("error", study.name, row.trial, f"unknown status {row.status!r}",
                                 "the harness writes finished|failed|running|pending; rerun the trial"))
    return found


def _same(left, right) -> bool:
    if _missing(left) and _missing(right):
        return True
    try:
        return math.isclose(float(left), float(right), rel_tol=RELATIVE_TOLERANCE, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(left) == str(right)


def _missing(value) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def parse_trial_label(label: str) -> dict[str, str]:
    """'model.dropout=0.1,seed=0' -> {'model.dropout': '0.1', 'seed': '0'} (values may hold commas)."""
    parts = re.split(r",(?=[\w.@/-]+=)", str(label))
    return dict(part.split("=", 1) for part in parts if "=" in part)


def label_findings(study: Study) -> list[Finding]:
    """Results rows that disagree with their own label or run record: a mislabeled trial."""
    found = []
    keys = config_columns(study.trials)
    for row in study.trials.to_dict("records"):
        trial, record = row["trial"], study.record(row["signature"])
        mismatches = []
        for key, value in parse_trial_label(trial).items():
            column = "experiment" if key == "experiment" else key
            if column in row and not _same(value, row[column]):
                mismatches.append(f"label says {key}={value} but the {column} column holds {row[column]}")
        if record and "_unreadable" not in record:
            config = flatten(record.get("config") or {})
            data_config = record.get("data_config") or {}
            # The results may name the data used or the set it stands in for; both are accepted.
            data_names = {data_config.get("name"), data_config.get("stands_in_for"), config.get("data.name")}
            if data_config.get("name") and row.get("data") not in data_names:
                mismatches.append(f"results say data={row.get('data')} but run.json says {data_config['name']}")
            expected = {"signature": record.get("signature"), "experiment": record.get("name"),
                        "seed": record.get("seed"), "status": record.get("status"),
                        "scale": config.get("scale_name")}
            expected.update({key: config[key] for key in keys if key in config})
            for column, value in expected.items():
                if value is not None and not _same(row.get(column), value):
                    mismatches.append(f"results say {column}={row.get(column)} but run.json says {value}")
        elif record.get("_unreadable"):
            mismatches.append(f"run record unreadable: {record['_unreadable']}")
        if mismatches:
            found.append(Finding("error", study.name, trial, "mislabeled: " + "; ".join(mismatches),
                                 "trust run.json (written by the run itself); rewrite results.parquet by "
                                 f"rerunning `study run {study.name}` or drop the trial"))
    duplicated = study.trials[study.trials.duplicated("signature", keep=False)]
    for signature, rows in duplicated.groupby("signature"):
        found.append(Finding("error", study.name, ", ".join(rows["trial"].astype(str)),
                             f"{len(rows)} rows share signature {signature}: the same run counted several times",
                             f"rerun `study run {study.name}` so each trial has one row"))
    return found


def metric_findings(study: Study) -> list[Finding]:
    """Metrics that contradict their definition or their run record (bpb = loss / ln 2, top-k order)."""
    found = []
    for row in study.trials[study.trials["status"] == "finished"].to_dict("records"):
        problems = []
        absent = [metric for metric in FINAL_METRICS if _missing(row.get(metric))]
        if absent:
            problems.append(f"finished but {len(absent)} final metrics are empty ({', '.join(absent[:3])}...)")
        for split in SPLITS:
            loss, bpb = row.get(f"final/{split}/loss"), row.get(f"final/{split}/bpb")
            if not _missing(loss) and not _missing(bpb) and abs(bpb - loss / math.log(2)) > BPB_TOLERANCE:
                problems.append(f"{split} bpb {bpb:.4f} is not loss/ln 2 = {loss / math.log(2):.4f} "
                                "(a loss in bits, or swapped columns?)")
            values = [row.get(f"final/{split}/{name}") for name in TOP_K]
            if not any(_missing(value) for value in values) and any(a > b + 1e-9 for a, b in zip(values, values[1:])):
                problems.append(f"{split} top-k accuracies are not increasing in k: {values}")
        record_metrics = study.record(row["signature"]).get("final_metrics") or {}
        differing = [metric for metric in FINAL_METRICS
                     if metric in record_metrics and not _same(row.get(metric), record_metrics[metric])]
        if differing:
            problems.append(f"results.parquet and run.json disagree on {', '.join(differing)}")
        if problems:
            found.append(Finding("error", study.name, row["trial"], "; ".join(problems),
                                 "recompute from the run's best.pt or rerun the trial"))
    return found


def code_findings(study: Study) -> list[Finding]:
    """Runs from uncommitted or unknown code, and studies mixing several commits."""
    found, commits = [], set()
    for row in study.trials.itertuples(index=False):
        git = study.record(row.signature).get("git") or {}
        if not git:
            continue
        commits.add(git.get("commit"))
        if git.get("dirty"):
            found.append(Finding("warning", study.name, row.trial,
                                 f"trained from uncommitted changes on top of {str(git.get('commit'))[:10]}",
                                 "commit the code and rerun for an exactly reproducible result"))
        elif git.get("commit") is None:
            found.append(Finding("warning", study.name, row.trial, "code version unknown (not a git checkout)",
                                 "run from a git clone of the project"))
    commits.discard(None)
    if len(commits) > 1:
        found.append(Finding("note", study.name, "", f"trials ran on {len(commits)} different commits: "
                             + ", ".join(sorted(commit[:10] for commit in commits)),
                             "rerun the study on one commit if the code changed what is measured"))
    return found
