"""Studies into pandas: trials (results.parquet), their run records (run.json) and per-epoch histories.

A study that is missing, empty or unreadable becomes a `Missing` entry, never an exception; this
module only reads run folders and never writes or repairs them.
"""

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.missing import Missing
from study.records import (BOOKKEEPING_KEYS, DEFAULT_METRIC, DEFAULT_MODE, FINAL_METRICS, RESULTS_FILE,
                           RUN_RECORD_FILE, TRIAL_COLUMNS, flatten, listed, study_selection)


def default_runs_dir() -> Path:
    """Where studies live: $STUDY_RUNS, else ./runs (the same rule as the config's paths.runs)."""
    return Path(os.environ.get("STUDY_RUNS", "runs"))


@dataclass
class Study:
    """One study: its trials (one row each), their run records by signature, and loading notes."""
    name: str
    path: Path
    trials: pd.DataFrame
    records: dict[str, dict] = field(default_factory=dict)
    source: str = RESULTS_FILE
    notes: list[Missing] = field(default_factory=list)
    metric: str = DEFAULT_METRIC    # how the study picks its best trial (its study.json)
    mode: str = DEFAULT_MODE

    @property
    def config_columns(self) -> list[str]:
        """The dotted config-key columns of the results (e.g. model.dropout)."""
        return config_columns(self.trials)

    @property
    def varied_keys(self) -> list[str]:
        """Config keys that take more than one value in this study (seed excluded)."""
        return varied_keys(self.trials)

    def record(self, signature: str) -> dict:
        return self.records.get(signature, {})


@dataclass
class Results:
    """Every study asked for: those that loaded, and a `Missing` for each that did not."""
    runs_dir: Path
    studies: list[Study] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)

    @property
    def trials(self) -> pd.DataFrame:
        """All trials of all studies in one frame (columns are the union of the studies')."""
        frames = [study.trials for study in self.studies if not study.trials.empty]
        if not frames:
            return empty_trials()
        return pd.concat(frames, ignore_index=True)

    @property
    def histories(self) -> pd.DataFrame:
        """Per-epoch metrics of every trial: study, trial, signature, seed, experiment, status, epoch, ..."""
        frames = [study_history(study) for study in self.studies]
        frames = [frame for frame in frames if not frame.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["study", "trial", "signature", "seed", "experiment", "status", "epoch"])

    def study(self, name: str) -> Study | None:
        return next((study for study in self.studies if study.name == name), None)

    def record(self, study: str, signature: str) -> dict:
        found = self.study(study)
        return found.record(signature) if found is not None else {}


def empty_trials() -> pd.DataFrame:
    return pd.DataFrame({column: pd.Series(dtype=object) for column in (*TRIAL_COLUMNS, *FINAL_METRICS)})


def config_columns(trials: pd.DataFrame) -> list[str]:
    """Columns named by a dotted config key (model.dropout, train.lr, ...), not metrics."""
    return [column for column in trials.columns
            if "." in column and not column.startswith("final/") and column not in TRIAL_COLUMNS]


def varied_keys(trials: pd.DataFrame) -> list[str]:
    """Config-key columns with more than one distinct value among `trials` (seed excluded)."""
    return [column for column in config_columns(trials)
            if not listed(column, BOOKKEEPING_KEYS) and trials[column].dropna().astype(str).nunique() > 1]


def find_studies(runs_dir: Path) -> list[str]:
    """Names of the folders under `runs_dir` that hold a results.parquet or run records, sorted."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return []
    names = []
    for folder in sorted(path for path in runs_dir.iterdir() if path.is_dir() and not path.name.startswith(".")):
        if (folder / RESULTS_FILE).is_file() or any(folder.glob(f"*/{RUN_RECORD_FILE}")):
            names.append(folder.name)
    return names


def load_results(runs_dir: Path, studies: list[str] | None = None) -> Results:
    """Load the named studies (default: every study under `runs_dir`); absent ones become `Missing`."""
    runs_dir = Path(runs_dir)
    results = Results(runs_dir=runs_dir)
    names = list(studies) if studies else find_studies(runs_dir)
    if not names:
        where = "does not exist" if not runs_dir.is_dir() else "holds no study"
        results.missing.append(Missing(
            f"results: {runs_dir} {where}",
            "run a study first, e.g. `make replicate SCALE=smoke` or `study run replicate scale=smoke`, "
            "or point `study report runs=...` at the folder that holds the studies"))
        return results
    for name in names:
        loaded = load_study(runs_dir, name)
        if isinstance(loaded, Missing):
            results.missing.append(loaded)
        else:
            results.studies.append(loaded)
    return results


def load_study(runs_dir: Path, name: str) -> Study | Missing:
    """One study from runs_dir/name: results.parquet if present, else rebuilt from its run records."""
    folder = Path(runs_dir) / name
    rerun = f"run `study run {name}` to produce it, or check the name and runs=..."
    if not folder.is_dir():
        return Missing(f"study {name!r}: {folder} does not exist", rerun)
    results_path = folder / RESULTS_FILE
    notes: list[Missing] = []
    if results_path.is_file():
        try:
            trials = pd.read_parquet(results_path)
        except Exception as error:  # pyarrow raises several types for a truncated or foreign file
            return Missing(f"study {name!r}: {results_path} is unreadable ({type(error).__name__}: {error})",
                           f"{rerun}; the harness rewrites results.parquet at the end of each trial")
        source = RESULTS_FILE
    else:
        record_dirs = sorted(path.parent for path in folder.glob(f"*/{RUN_RECORD_FILE}"))
        if not record_dirs:
            return Missing(f"study {name!r}: {folder} has neither {RESULTS_FILE} nor run records", rerun)
        trials = trials_from_records(name, [(path, read_json(path / RUN_RECORD_FILE)) for path in record_dirs])
        source = RUN_RECORD_FILE
        notes.append(Missing(f"{RESULTS_FILE} of {name!r}",
                             f"the table was rebuilt from {len(record_dirs)} run records, as expected for runs of "
                             "`study train`; `study run <study>` writes results.parquet"))
    if trials.empty:
        return Missing(f"study {name!r}: {results_path} has no trials",
                       f"the study has not started a trial yet; {rerun}")
    trials = normalise_trials(trials, name)
    records: dict[str, dict] = {}
    for row in trials.itertuples(index=False):
        run_dir = resolve_run_dir(row.run_dir, folder, row.signature)
        if run_dir is None:
            notes.append(Missing(f"run record of trial {row.trial!r} in study {name!r}",
                                 f"no {RUN_RECORD_FILE} at {row.run_dir} nor under {folder}; copy the run folder "
                                 "beside results.parquet or rerun the trial"))
            continue
        record = read_json(run_dir / RUN_RECORD_FILE)
        record["_run_dir"] = str(run_dir)
        records[str(row.signature)] = record
    metric, mode = study_selection(folder)
    return Study(name=name, path=folder, trials=trials, records=records, source=source, notes=notes,
                 metric=metric, mode=mode)


def normalise_trials(trials: pd.DataFrame, study: str) -> pd.DataFrame:
    """Add any absent standard column (as missing values) so later code can index every column."""
    trials = trials.copy()
    for column in (*TRIAL_COLUMNS, *FINAL_METRICS):
        if column not in trials.columns:
            trials[column] = None
    trials["study"] = trials["study"].fillna(study)
    trials["status"] = trials["status"].fillna("pending").astype(str)
    for column in ("signature", "trial", "experiment", "data", "scale"):
        trials[column] = trials[column].map(lambda value: "unknown" if _absent(value) else str(value))
    for column in FINAL_METRICS:
        trials[column] = pd.to_numeric(trials[column], errors="coerce").astype(float)
    return trials


def _absent(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def resolve_run_dir(run_dir, study_dir: Path, signature: str) -> Path | None:
    """The trial's run folder: as recorded, else by signature or folder name under the study folder."""
    candidates = []
    if not _absent(run_dir):
        recorded = Path(str(run_dir))
        candidates += [recorded, study_dir / recorded.name]
        if not recorded.is_absolute():
            candidates.append(study_dir.parent / recorded)
    candidates.append(study_dir / str(signature))
    return next((path for path in candidates if (path / RUN_RECORD_FILE).is_file()), None)


def read_json(path: Path) -> dict:
    """A JSON file as a dict; an unreadable one gives {'_unreadable': reason} instead of raising."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        return {"_unreadable": f"{path}: {error}"}
    return content if isinstance(content, dict) else {"_unreadable": f"{path}: not a JSON object"}


def trials_from_records(study: str, records: list[tuple[Path, dict]]) -> pd.DataFrame:
    """The results.parquet rows rebuilt from run records; config keys that differ become columns."""
    flats = [flatten(record.get("config", {})) for _, record in records]
    keys = sorted({key for flat in flats for key in flat})
    varied = [key for key in keys if not listed(key, BOOKKEEPING_KEYS)
              and len({json.dumps(flat.get(key), sort_keys=True, default=str) for flat in flats}) > 1]
    rows = []
    for (run_dir, record), flat in zip(records, flats):
        config = record.get("config", {})
        seed = record.get("seed", config.get("seed"))
        settings = [f"{key}={flat.get(key)}" for key in varied]
        row = {
            "study": study,
            "trial": ",".join([*settings, f"seed={seed}"]),
            "signature": record.get("signature", run_dir.name),
            "seed": seed,
            "status": record.get("status", "pending"),
            "error": record.get("error"),
            "wall_seconds": record.get("wall_seconds"),
            "parameters": record.get("parameters"),
            "checkpoint": record.get("best_checkpoint"),
            "run_dir": str(run_dir),
            "experiment": record.get("name", config.get("name")),
            "data": record.get("data_config", {}).get("name", config.get("data", {}).get("name")),
            "scale": config.get("scale_name"),
        }
        row.update({key: flat.get(key) for key in varied})
        row.update({metric: record.get("final_metrics", {}).get(metric) for metric in FINAL_METRICS})
        rows.append(row)
    return pd.DataFrame(rows)


def study_history(study: Study) -> pd.DataFrame:
    """Per-epoch history of each trial of `study` from its run record, one row per epoch."""
    frames = []
    for row in study.trials.itertuples(index=False):
        history = study.record(row.signature).get("history") or []
        if not history:
            continue
        frame = pd.DataFrame(history)
        frame.insert(0, "study", study.name)
        frame.insert(1, "trial", row.trial)
        frame.insert(2, "signature", row.signature)
        frame.insert(3, "seed", row.seed)
        frame.insert(4, "experiment", row.experiment)
        frame.insert(5, "status", row.status)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def finished(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials whose status is 'finished' (the only ones whose final metrics count)."""
    return trials[trials["status"] == "finished"] if "status" in trials else trials.iloc[0:0]
