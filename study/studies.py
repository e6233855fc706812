"""Study definitions: experiments/study/NAME.yaml read and checked, planned into trials (one per variation x
seed, each composed now), and the study folder's claim. It never starts Ray or trains anything.
"""

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from study.config import CONFIG_DIR, compose_config
from study.errors import ConfigError, StudyDefinitionError
from study.files import checked_name
from study.migrate import adopt_moved_run
from study.records import (DEFAULT_METRIC, DEFAULT_MODE, FINAL_METRICS, MODES, RESULTS_FILE, STUDY_FILE, best_row,
                           study_selection)
from study.training.experiment import Experiment, load_experiment
from study.training.record import write_json_atomic

STUDY_DIR = CONFIG_DIR / "study"
STUDY_KEYS = {"description", "base", "variations", "seeds", "metric", "mode", "keep_window_seconds"}
METRICS = list(FINAL_METRICS)


@dataclass
class Study:
    name: str
    path: Path
    description: str
    base: list[str]
    variations: list[list[str]]
    seeds: list[int]
    metric: str = DEFAULT_METRIC    # how the study picks its best trial (transfer, analysis, sampling search)
    mode: str = DEFAULT_MODE        # min | max
    keep_window_seconds: bool = False


@dataclass
class Trial:
    label: str                      # e.g. "model.dropout=0.1,seed=0"
    variation: list[str]
    seed: int
    overrides: list[str]            # everything `study train` needs to rebuild this trial
    experiment: Experiment = field(repr=False)
    reused: Path | None = None      # a finished run folder of the same signature in another study


def available_studies() -> list[str]:
    return sorted(p.stem for p in STUDY_DIR.glob("*.yaml"))


def load_study(name: str) -> Study:
    try:
        checked_name(name, "study", f"name a study in {STUDY_DIR}: {', '.join(available_studies())}")
    except ConfigError as error:
        raise StudyDefinitionError(str(error)) from None
    path = STUDY_DIR / f"{name}.yaml"
    if not path.is_file():
        raise StudyDefinitionError(f"unknown study {name!r}; available: {', '.join(available_studies())} "
                         f"(add one as {STUDY_DIR}/<name>.yaml)")
    try:
        content = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise StudyDefinitionError(f"{path} is not valid YAML{line} ({problem}); fix the file "
                                   "(a study file is a mapping with base: [...] and variations: [[...]])") from None
    if not isinstance(content, dict):
        raise StudyDefinitionError(f"{path} holds a {type(content).__name__}, not a mapping; a study file has "
                                   f"keys {sorted(STUDY_KEYS)}")
    unknown = sorted(set(content) - STUDY_KEYS)
    if unknown:
        raise StudyDefinitionError(f"{path}: unknown key {unknown[0]!r}; a study file has {sorted(STUDY_KEYS)}")
    for key in ("base", "variations"):
        if key not in content:
            raise StudyDefinitionError(f"{path}: missing key {key!r}")
    variations = content["variations"]
    if not isinstance(variations, list) or not all(isinstance(v, list) for v in variations):
        raise StudyDefinitionError(f"{path}: 'variations' must be a list of override lists, e.g. [[model.dropout=0.1]]")
    if not variations:
        raise StudyDefinitionError(f"{path}: 'variations' is empty, so the study has no trials; list at least one, "
                                   "e.g. [[model.dropout=0.1]], or [[]] for the base config alone")
    seeds = content.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(seed, int) for seed in seeds):
        raise StudyDefinitionError(f"{path}: 'seeds' must be a non-empty list of integers, e.g. [0, 1, 2]")
    metric, mode = str(content.get("metric", DEFAULT_METRIC)), str(content.get("mode", DEFAULT_MODE))
    if metric not in METRICS:
        raise StudyDefinitionError(f"{path}: metric {metric!r} is not a result column; use one of {METRICS}, "
                                   f"e.g. metric: {DEFAULT_METRIC}")
    if mode not in MODES:
        raise StudyDefinitionError(f"{path}: mode {mode!r} is not min or max; e.g. mode: {DEFAULT_MODE}")
    return Study(name=name, path=path, description=str(content.get("description", "")),
                 base=[str(o) for o in content["base"]], variations=[[str(o) for o in v] for v in variations],
                 seeds=[int(s) for s in content.get("seeds", [0])], metric=metric, mode=mode,
                 keep_window_seconds=bool(content.get("keep_window_seconds")))


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(trial overrides, harness overrides): `ray.*` keys configure scheduling, not runs."""
    harness = [o for o in overrides if o.startswith("ray.")]
    return [o for o in overrides if not o.startswith("ray.")], harness


def absolute_paths(overrides: list[str]) -> list[str]:
    """Pin paths.* to absolute folders: Ray runs trials in their own working directories."""
    config = compose_config(overrides)
    pinned = []
    for key in ("runs", "data_cache", "downloads"):
        value = str(config.paths[key])
        if "://" not in value:
            value = str(Path(value).expanduser().resolve())
        pinned.append(f"paths.{key}={value}")
    return overrides + pinned


def window_for_rate(overrides: list[str], variation: list[str]) -> list[str]:
    """keep_window_seconds: data.sample_len scaled by the variation's rate / the base rate, rounded
    to a multiple of the model's total pooling."""
    base = compose_config(overrides)
    varied = compose_config(overrides + variation)
    pool = 1
    for stride in varied.model.pool:
        pool *= int(stride)
    samples = round(base.data.sample_len * varied.data.sample_rate / base.data.sample_rate / pool) * pool
    return [f"data.sample_len={samples}"]


def best_checkpoint(runs_root: Path, study: str) -> Path:
    """best.pt of the finished trial of `study` that is best by the study's `metric:` and `mode:`
    (as recorded in its study.json; final/val/bpb, min for a folder without one)."""
    try:
        checked_name(study, "study", "refer to a study by its name, e.g. study:replicate")
    except ConfigError as error:
        raise StudyDefinitionError(str(error)) from None
    results = runs_root / study / RESULTS_FILE
    if not results.is_file():
        raise StudyDefinitionError(f"study {study!r} has no results at {results}; run `study run {study}` first "
                         "(at the same scale, e.g. `make replicate SCALE=smoke`)")
    table = pd.read_parquet(results)
    finished = table[(table.status == "finished") & table.checkpoint.notna()]
    metric, mode = study_selection(runs_root / study)
    best = best_row(finished, metric, mode) if metric in finished else None
    if best is None:
        raise StudyDefinitionError(f"study {study!r} has no finished trial with a checkpoint and a value of "
                                   f"{metric} in {results}")
    return Path(best.checkpoint)


def resolve_study_references(overrides: list[str], runs_root: Path) -> list[str]:
    """train.init_from=study:NAME -> the best finished trial's best.pt of study NAME."""
    resolved = []
    for override in overrides:
        key, _, value = override.partition("=")
        if key == "train.init_from" and value.startswith("study:"):
            override = f"train.init_from={best_checkpoint(runs_root, value.removeprefix('study:'))}"
        resolved.append(override)
    return resolved


def plan_trials(study: Study, user_overrides: list[str]) -> list[Trial]:
    """Every trial's overrides, each composed and validated now so nothing fails after launch."""
    common = absolute_paths(study.base + user_overrides)
    runs_root = Path(str(compose_config(common).paths.runs))
    trials = []
    for variation in study.variations:
        extra = window_for_rate(common, variation) if study.keep_window_seconds else []
        for seed in study.seeds:
            overrides = resolve_study_references(
                common + variation + extra + [f"seed={seed}", f"run_group={study.name}",
                                              f"tracking.group={study.name}"], runs_root)
            label = ",".join(variation + extra + [f"seed={seed}"])
            try:
                experiment = load_experiment(overrides)
            except ConfigError as error:
                raise StudyDefinitionError(f"{study.path}: variation {variation} does not compose: {error}") from error
            adopt_moved_run(experiment.run_dir)  # a folder named by an earlier signature scheme
            trials.append(Trial(label=label, variation=variation + extra, seed=seed, overrides=overrides,
                                experiment=experiment))
    return trials


def study_definition_hash(study: Study, user_overrides: list[str]) -> str:
    definition = {"file": study.path.read_text(), "overrides": sorted(user_overrides)}
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


def claim_study_folder(folder: Path, study: Study, user_overrides: list[str]) -> None:
    """Write (or check) folder/study.json so two definitions of a study never share a folder."""
    marker = folder / STUDY_FILE
    digest = study_definition_hash(study, user_overrides)
    if marker.is_file():
        existing = json.loads(marker.read_text())
        if existing["definition_hash"] != digest:
            raise StudyDefinitionError(
                f"{folder} holds study {study.name!r} run with another definition (overrides "
                f"{existing['overrides']}, file hash differs or overrides differ); use another paths.runs=..., "
                f"or move {folder} away to start over")
        return
    write_json_atomic(marker, {"study": study.name, "definition_hash": digest, "overrides": user_overrides,
                               "file": str(study.path), "metric": study.metric, "mode": study.mode,
                               "created": time.time()})
