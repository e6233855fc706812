"""`study run STUDY [overrides]`: a study (experiments/study/STUDY.yaml) as Ray Tune trials, one per
variation x seed, each a `study train` run in runs/<study>/<signature>/; rerunning resumes it.

It never launches what cannot run (a GPU trial on a cluster without GPUs, a config that does not
compose) and never mixes a study folder with another definition of the study.
"""

import io
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

# Ray's snapshot warnings add noise, not information. Set before Ray is imported.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
from omegaconf import OmegaConf

from study.config import compose_config
from study.errors import StudyDefinitionError
from study.files import check_writable, folder_mode, write_atomic
from study.progress import ProgressMonitor, ProgressWriter, Watched
from study.records import BEST_CHECKPOINT, CHECKPOINT_FOLDER, RESULTS_FILE, best_row
from study.studies import (METRICS, Study, Trial, available_studies, claim_study_folder, load_study, plan_trials,
                           split_overrides)
from study.training.experiment import load_experiment
from study.training.record import read_record

log = logging.getLogger(__name__)


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
