"""`study run STUDY [overrides]`: a study (experiments/study/STUDY.yaml) as Ray Tune trials, one per
variation x seed, each a `study train` run in runs/<study>/<signature>/; rerunning resumes it.

It never launches what cannot run (a GPU trial on a cluster without GPUs, a config that does not
compose) and never mixes a study folder with another definition of the study.
"""

import hashlib
import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

# Ray's snapshot warnings add noise, not information. Set before Ray is imported.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
from omegaconf import OmegaConf

from study.config import CONFIG_DIR, compose_config
from study.errors import ConfigError, StudyDefinitionError, StudyError
from study.files import check_writable, checked_name, folder_mode, write_atomic
from study.migrate import adopt_moved_run
from study.progress import ProgressMonitor, ProgressWriter, Watched
from study.records import (BEST_CHECKPOINT, CHECKPOINT_FOLDER, DEFAULT_METRIC, DEFAULT_MODE, FINAL_METRICS,
                           MODES, RESULTS_FILE, STUDY_FILE, best_row, study_selection)
from study.training.experiment import Experiment, load_experiment
from study.training.record import read_record, write_json_atomic

log = logging.getLogger(__name__)
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


# -- Ray --------------------------------------------------------------------------------------------
def connect_ray(address: str | None):
    import ray
    if ray.is_initialized():
        return ray
    # Ray's notice that token authentication is on (it is, for a local instance) is not actionable here
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    return ray


def check_resources(ray_module, gpus: float, cpus: float) -> None:
    """Ray waits forever for resources a cluster lacks: refuse at once instead."""
    available = ray_module.cluster_resources()
    if gpus > 0 and available.get("GPU", 0) < gpus:
        raise StudyDefinitionError(
            f"each trial asks for {gpus:g} GPU but the Ray cluster has {available.get('GPU', 0):g}; "
            "run on a GPU machine or cluster (ray.address=...), or use scale=smoke (CPU), "
            "or set ray.gpus_per_trial=0 to train at full scale on CPU (very slow)")
    if available.get("CPU", 0) < cpus:
        raise StudyDefinitionError(f"each trial asks for {cpus:g} CPUs but the cluster has {available.get('CPU', 0):g}; "
                         f"set ray.cpus_per_trial={int(available.get('CPU', 1))}")


def trial_main(config: dict) -> None:
    """The Ray Tune trainable: one training run, reporting each epoch with a checkpoint."""
    config = config["trial"]
    import numba
    import torch
    from ray import tune
    from ray.tune import Checkpoint

    from study.training.loop import Run

    cpus = max(1, int(config["cpus"]))
    torch.set_num_threads(cpus)
    numba.set_num_threads(min(cpus, numba.config.NUMBA_NUM_THREADS))
    experiment = load_experiment(config["overrides"])
    last = experiment.run_dir / "checkpoints" / "last.pt"
    restored = tune.get_checkpoint()
    if restored is not None and not last.exists():  # e.g. a node without the shared runs folder
        with restored.as_directory() as directory:
            if (Path(directory) / "last.pt").exists():
                last.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(directory) / "last.pt", last)

    def report(metrics: dict, run: Run) -> None:
        with tempfile.TemporaryDirectory() as directory:
            os.chmod(directory, folder_mode())  # Ray copies it into shared storage
            shutil.copy2(run.checkpoint_dir / "last.pt", Path(directory) / "last.pt")
            tune.report(ray_safe(metrics), checkpoint=Checkpoint.from_directory(directory))

    record = Run(experiment, reporter=report, command="study train " + " ".join(config["overrides"]),
                 on_step=ProgressWriter(experiment.run_dir)).execute()
    tune.report({**ray_safe(record.get("final_metrics", {})), "done": True})


def ray_safe(metrics: dict) -> dict:
    """Numbers only, with names TensorBoard accepts ('accuracy@3' -> 'accuracy_at_3')."""
    return {k.replace("@", "_at_"): v for k, v in metrics.items() if isinstance(v, (int, float))}


def finished_run_elsewhere(runs_root: Path, trial: Trial) -> Path | None:
    """A finished run folder of the trial's signature in another study's folder (runs/<other>/<signature>/),
    so a run two studies share trains once; None if there is none."""
    signature = trial.experiment.signature
    for folder in sorted(runs_root.glob(f"*/{signature}")):
        record = read_record(folder)
        if folder != trial.experiment.run_dir and record.get("status") == "finished" \
                and record.get("signature") == signature:
            return folder
    return None


def result_row(study: Study, trial: Trial, error: str | None = None) -> dict:
    run_dir = trial.reused or trial.experiment.run_dir
    record = read_record(run_dir)
    status = record.get("status", "pending")
    if error and status != "finished":
        status = "failed"
    config = trial.experiment.config
    row = {"study": study.name, "trial": trial.label, "signature": trial.experiment.signature, "seed": trial.seed,
           "status": status, "error": error or record.get("error"), "wall_seconds": record.get("wall_seconds"),
           "parameters": record.get("parameters"), "run_dir": str(run_dir),
           "checkpoint": (str(run_dir / CHECKPOINT_FOLDER / BEST_CHECKPOINT)
                          if (run_dir / CHECKPOINT_FOLDER / BEST_CHECKPOINT).exists() else None),
           "experiment": str(config.name), "data": str(trial.experiment.data.name),
           "scale": str(config.get("scale_name", "full"))}
    for override in trial.variation:
        key, _, chosen = override.partition("=")
        if "." not in key:  # a config group choice, e.g. experiment=bigband-sashimi-2
            row[key] = chosen
            continue
        value = OmegaConf.select(config, key)
        row[key] = value if not OmegaConf.is_config(value) else str(value)
    final = record.get("final_metrics", {})
    row.update({metric: final.get(metric) for metric in METRICS})
    return row


def write_results(folder: Path, study: Study, trials: list[Trial], errors: dict[str, str]) -> pd.DataFrame:
    table = pd.DataFrame([result_row(study, trial, errors.get(trial.label)) for trial in trials])
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    write_atomic(folder / RESULTS_FILE, buffer.getvalue())
    return table


def run_study(name: str, overrides: list[str]) -> pd.DataFrame:
    study = load_study(name)
    trial_overrides, harness_overrides = split_overrides(overrides)
    config = compose_config(study.base + trial_overrides + harness_overrides)
    ray_settings = config.ray
    trials = plan_trials(study, trial_overrides)
    runs_root = Path(str(trials[0].experiment.config.paths.runs))
    folder = check_writable(runs_root / study.name, "paths.runs")
    for trial in trials:
        if read_record(trial.experiment.run_dir).get("status") != "finished":
            trial.reused = finished_run_elsewhere(runs_root, trial)
    pending = [t for t in trials if t.reused is None and read_record(t.experiment.run_dir).get("status") != "finished"]
    ray_module = None
    if pending:  # refuse what cannot run before anything is written
        ray_module = connect_ray(ray_settings.address)
        check_resources(ray_module, float(ray_settings.gpus_per_trial), float(ray_settings.cpus_per_trial))
    claim_study_folder(folder, study, trial_overrides)
    print(f"study {study.name}: {len(trials)} trials ({len(trials) - len(pending)} already finished), "
          f"folder {folder}")
    for number, trial in enumerate(trials, start=1):
        if trial.reused is not None:
            print(f"trial {number}/{len(trials)} {trial.label}: same signature as the finished run {trial.reused} "
                  f"of study {trial.reused.parent.name}; reusing it, not training again")
    errors: dict[str, str] = {}
    if pending:
        watched = [Watched(number, trial.label, trial.experiment.run_dir)
                   for number, trial in enumerate(trials, start=1) if any(trial is other for other in pending)]
        errors = launch(study, pending, ray_settings, folder, ProgressMonitor(watched, total=len(trials)))
    table = write_results(folder, study, trials, errors)
    print_summary(study, table, folder)
    return table


def prepare_data(trials: list[Trial]) -> None:
    """Prepare each distinct dataset once in the driver, so trials only read the cache (and so a
    missing download or token fails now, with its message, not inside every trial)."""
    from study.data.prepare import prepare
    seen = set()
    for trial in trials:
        key = json.dumps(OmegaConf.to_container(trial.experiment.data, resolve=True), sort_keys=True)
        if key not in seen:
            seen.add(key)
            prepare(trial.experiment.data, trial.experiment.config.paths, progress=True)


def launch(study: Study, trials: list[Trial], ray_settings, folder: Path, monitor: ProgressMonitor) -> dict[str, str]:
    from ray import tune

    gpus, cpus = float(ray_settings.gpus_per_trial), float(ray_settings.cpus_per_trial)
    prepare_data(trials)
    storage = str(ray_settings.storage) if ray_settings.storage else str((folder / "ray").resolve())
    specs = [{"label": t.label, "overrides": t.overrides, "cpus": cpus} for t in trials]
    tuner = tune.Tuner(
        tune.with_resources(trial_main, {"cpu": cpus, "gpu": gpus}),
        param_space={"trial": tune.grid_search(specs)},
        tune_config=tune.TuneConfig(max_concurrent_trials=ray_settings.max_concurrent_trials),
        run_config=tune.RunConfig(
            name=f"{study.name}-{time.strftime('%Y%m%d-%H%M%S')}", storage_path=storage, verbose=0,
            failure_config=tune.FailureConfig(max_failures=int(ray_settings.max_failures)),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
    )
    print(f"launching {len(trials)} trials on Ray ({gpus:g} GPU, {cpus:g} CPU each); Ctrl-C stops, "
          "the same command resumes", flush=True)
    with monitor:
        results = tuner.fit()
    errors = {}
    for result in results:
        if result.error is not None:
            lines = str(result.error).strip().splitlines() or [""]
            errors[result.config["trial"]["label"]] = f"{type(result.error).__name__}: {lines[-1][:500]}"
    return errors


def print_summary(study: Study, table: pd.DataFrame, folder: Path) -> None:
    columns = ["trial", "status", *dict.fromkeys([study.metric, "final/val/bpb", "final/test/bpb", "final/test/accuracy"]),
               "wall_seconds"]
    shown = table[[c for c in columns if c in table]]
    with pd.option_context("display.width", 160, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(shown.to_string(index=False))
    if "status" in table and study.metric in table:
        best = best_row(table[table.status == "finished"], study.metric, study.mode)
        if best is not None:
            print(f"best by {study.metric} ({study.mode}): {best.trial} ({best[study.metric]:.4f})")
    print(f"results: {folder / RESULTS_FILE}\nrun folders: {folder}/<signature>/ (run.json, checkpoints/)")


def main(argv: list[str]) -> int:
    if not argv or "=" in argv[0] or argv[0].startswith("-"):
        print(f"usage: study run STUDY [overrides]\nstudies: {', '.join(available_studies())}", file=sys.stderr)
        return 2
    try:
        table = run_study(argv[0], argv[1:])
    except KeyboardInterrupt:
        print("study run: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0 if (table.status == "finished").all() else 1
