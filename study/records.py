"""Names shared by whoever writes or reads runs: file names, run-record and results-table columns,
the config keys a signature leaves out, and how a study picks its best trial.

Pure constants and tiny readers (no torch, no Hydra), imported by both study/ and analysis/.
"""

import json
from pathlib import Path

RUN_RECORD_FILE = "run.json"              # <runs>/<run_group>/<signature>/run.json
RESULTS_FILE = "results.parquet"          # <runs>/<study>/results.parquet, one row per trial
STUDY_FILE = "study.json"                 # <runs>/<study>/study.json: which definition made the folder
CHECKPOINT_FOLDER = "checkpoints"         # <run>/checkpoints/{best,last}.pt
BEST_CHECKPOINT = "best.pt"

SPLITS = ("val", "test")
METRIC_NAMES = ("loss", "bpb", "accuracy", "accuracy@3", "accuracy@5", "accuracy@10")
FINAL_METRICS = tuple(f"final/{split}/{name}" for split in SPLITS for name in METRIC_NAMES)
TRIAL_COLUMNS = ("study", "trial", "signature", "seed", "status", "error", "wall_seconds", "parameters",
                 "checkpoint", "run_dir", "experiment", "data", "scale")
STATUSES = ("finished", "failed", "running", "pending")

# Config keys that do not change a run's results: left out of its signature (so moving outputs,
# switching trackers, renaming an experiment or recomputing blocks in backward finds the same run
# folder) and never counted as "varied" by the analysis. A key and everything under it.
SIGNATURE_EXCLUDED = (
    "paths", "tracking", "ray",                                  # where outputs go, trackers, scheduling
    "name", "description", "run_group", "scale_name",            # names
    "train.device", "train.num_workers", "train.progress",       # where and how it is shown
    "train.log_every_steps", "train.checkpoint_every_steps",     # logging and checkpoint cadence
    "model.kernel_backend", "model.checkpoint_blocks",           # same numbers, other speed or memory
    "model.n_classes", "model.l_max",                            # derived from data.bits, data.sample_len
    "data.warnings",                                             # text shown with results
)
# Keys the analysis never treats as a studied variable: the above and the seed (a study's replicate axis).
BOOKKEEPING_KEYS = SIGNATURE_EXCLUDED + ("seed",)

DEFAULT_METRIC, DEFAULT_MODE = "final/val/bpb", "min"
MODES = ("min", "max")


def listed(key: str, keys: tuple[str, ...]) -> bool:
    """True when dotted `key` is one of `keys` or lies under one ('paths.runs' under 'paths')."""
    return any(key == entry or key.startswith(entry + ".") for entry in keys)


def flatten(config: dict, prefix: str = "") -> dict:
    """{'model': {'dropout': 0.1}} -> {'model.dropout': 0.1}; lists are kept as values."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def study_selection(study_folder: Path) -> tuple[str, str]:
    """(metric, mode) by which the study in `study_folder` picks its best trial: those of its
    study.json (copied from the study file's `metric:`/`mode:`), else final/val/bpb, min."""
    path = Path(study_folder) / STUDY_FILE
    try:
        content = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        content = {}
    if not isinstance(content, dict):
        content = {}
    return str(content.get("metric") or DEFAULT_METRIC), str(content.get("mode") or DEFAULT_MODE)


def best_row(table, metric: str, mode: str):
    """The row of `table` (a pandas DataFrame) with the lowest (mode=min) or highest (max) `metric`."""
    ordered = table.dropna(subset=[metric]).sort_values(metric, ascending=(mode == "min"), kind="stable")
    return ordered.iloc[0] if len(ordered) else None
