"""A small runs folder for the analysis tests: three studies, run records, examples, a sampling search.

The numbers are chosen so that means, stds and differences can be computed by hand in the tests;
it writes only under the folder it is given.
"""

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile

LEAKAGE_WARNING = ("YouTubeMix val and test clips repeat training material: the source video loops about 45 "
                   "minutes of pieces roughly six times.")
COMMIT = "0123456789abcdef0123456789abcdef01234567"
STARTED = 1_760_000_000.0  # 2025-10-09 UTC


@dataclass
class Fixture:
    """Where the fixture put things."""
    runs_dir: Path
    examples_dir: Path
    sampling_file: Path


@dataclass
class Trial:
    """One trial's identity and the three numbers its metrics are derived from."""
    study: str
    experiment: str
    data: str
    scale: str
    seed: int
    test_bpb: float
    val_bpb: float
    test_accuracy: float
    status: str = "finished"
    settings: tuple[tuple[str, float], ...] = ()
    n_layers: int = 8
    stands_in_for: str | None = None
    warnings: tuple[str, ...] = ()
    error: str | None = None
    quantizer: str | None = "official"   # None: a record from before data.quantizer existed


def final_metrics(test_bpb: float, val_bpb: float, test_accuracy: float) -> dict:
    """All twelve final metrics from three numbers: loss = bpb * ln 2, accuracy@k = accuracy + offset."""
    metrics = {}
    for split, bpb, accuracy in (("test", test_bpb, test_accuracy), ("val", val_bpb, test_accuracy - 0.02)):
        metrics[f"final/{split}/bpb"] = bpb
        metrics[f"final/{split}/loss"] = bpb * math.log(2)
        metrics[f"final/{split}/accuracy"] = accuracy
        for k, offset in ((3, 0.3), (5, 0.4), (10, 0.5)):
            metrics[f"final/{split}/accuracy@{k}"] = accuracy + offset
    return metrics


def signature_of(trial: Trial) -> str:
    text = f"{trial.study}/{trial.experiment}/{trial.settings}/{trial.seed}"
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def default_trials() -> list[Trial]:
    stand_in = dict(data="toy-piano", stands_in_for="youtubemix", warnings=(LEAKAGE_WARNING,))
    rows = [Trial("replicate", "youtubemix-sashimi-8", scale="smoke", seed=seed, test_bpb=2.0 + 0.1 * seed,
                  val_bpb=1.9 + 0.1 * seed, test_accuracy=0.40 + 0.02 * seed, **stand_in) for seed in range(3)]
    rows.append(Trial("ablation", "bigband-sashimi-8", "bigband", "full", 0, 3.2, 3.5, 0.28))
    rows += [Trial("ablation", "bigband-sashimi-2", "bigband", "full", seed, bpb, bpb + 0.4, 0.27, n_layers=2)
             for seed, bpb in ((0, 3.1), (1, 3.3))]
    rows.append(Trial("ablation", "bigband-sashimi-2", "bigband", "full", 2, math.nan, math.nan, math.nan,
                      status="failed", n_layers=2, error="training diverged: loss is nan at step 120"))
    rows += [Trial("grid-dropout", "youtubemix-sashimi-8", scale="smoke", seed=seed,
                   test_bpb=2.5 + dropout + 0.01 * seed, val_bpb=2.4 + dropout + 0.01 * seed, test_accuracy=0.3,
                   settings=(("model.dropout", dropout),), **stand_in)
             for dropout in (0.0, 0.1, 0.2) for seed in (0, 1)]
    return rows


def run_record(trial: Trial, run_dir: Path, index: int) -> dict:
    settings = dict(trial.settings)
    config = {"name": trial.experiment, "seed": trial.seed, "scale_name": trial.scale,
              "model": {"n_layers": trial.n_layers, "dropout": settings.get("model.dropout", 0.0), "d_model": 64},
              "data": {"name": trial.stands_in_for or trial.data},
              "train": {"lr": 0.004, "weight_decay": 0.0}}
    data_config = {"name": trial.data, "sample_rate": 16000}
    if trial.quantizer is not None:
        data_config["quantizer"] = trial.quantizer
    if trial.stands_in_for:
        data_config["stands_in_for"] = trial.stands_in_for
    finished = trial.status == "finished"
    history = [{"epoch": epoch, "step": 12 * epoch, "train/loss": 2.5 - 0.2 * epoch, "lr": 0.004,
                "val/loss": (trial.val_bpb + 0.3 * (3 - epoch)) * math.log(2),
                "val/bpb": trial.val_bpb + 0.3 * (3 - epoch), "val/accuracy": 0.3}
               for epoch in (1, 2, 3) if finished or epoch < 3]
    override = " ".join(f"{key}={value}" for key, value in trial.settings)
    return {
        "status": trial.status, "name": trial.experiment, "signature": signature_of(trial), "config": config,
        "data_config": data_config, "data_fingerprint": f"fp-{trial.data}", "data_warnings": list(trial.warnings),
        "parameters": 4_050_000 if trial.n_layers == 8 else 1_290_000, "seed": trial.seed,
        "git": {"commit": COMMIT, "dirty": False},
        "packages": {"torch": "2.11.0", "numpy": "2.4.6", "sashimi-study": "0.1.0"},
        "device": {"type": "cuda" if trial.scale == "full" else "cpu", "gpu": "NVIDIA H100 80GB HBM3"}
        if trial.scale == "full" else {"type": "cpu", "platform": "Linux"},
        "command": f"study train experiment={trial.experiment} scale={trial.scale} seed={trial.seed} {override}".strip(),
        "history": history,
        "final_metrics": final_metrics(trial.test_bpb, trial.val_bpb, trial.test_accuracy) if finished else {},
        "wall_seconds": 600.0 + index, "started": STARTED + 1000 * index, "finished": STARTED + 1000 * index + 600,
        **({"error": trial.error} if trial.error else {}),
    }


def results_row(trial: Trial, run_dir: Path, record: dict) -> dict:
    label = [*(f"{key}={value}" for key, value in trial.settings), f"seed={trial.seed}"]
    if trial.study == "ablation":
        label.insert(0, f"experiment={trial.experiment}")
    row = {"study": trial.study, "trial": ",".join(label),
           "signature": record["signature"], "seed": trial.seed, "status": trial.status, "error": trial.error,
           "wall_seconds": record["wall_seconds"], "parameters": record["parameters"],
           "checkpoint": str(run_dir / "checkpoints" / "best.pt") if trial.status == "finished" else None,
           "run_dir": str(run_dir), "experiment": trial.experiment, "data": trial.data, "scale": trial.scale}
    row.update(dict(trial.settings))
    row.update(final_metrics(trial.test_bpb, trial.val_bpb, trial.test_accuracy))
    return row


def write_wav(path: Path, seconds: float, frequency: float, sample_rate: int = 16000) -> None:
    time = np.arange(int(seconds * sample_rate)) / sample_rate
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * frequency * time)).astype(np.float32), sample_rate)


def write_examples(folder: Path) -> None:
    """The files and manifest.json `study generate` writes for one split prompt and one continuation."""
    folder.mkdir(parents=True, exist_ok=True)
    write_wav(folder / "prompt00.wav", 0.25, 440.0)
    write_wav(folder / "prompt00-reference.wav", 0.25, 440.0)
    write_wav(folder / "prompt00-sample00.wav", 0.5, 660.0)
    write_wav(folder / "prompt00-sample00-continuation.wav", 0.25, 660.0)
    manifest = {
        "format": "sashimi-study/generation/1", "created": "2025-10-09T12:00:00+0000",
        "settings": {"seconds": 0.25, "samples": 4000, "n": 1, "batch_size": 1, "seed": 0,
                     "temperature": 0.9, "top_k": 0, "top_p": 0.95},
        "checkpoint": {"path": "/runs/replicate/abc/checkpoints/best.pt", "sha256": "0" * 64, "step": 36},
        "device": "cpu",
        "prompts": [{"name": "prompt00", "kind": "split", "split": "test", "window": 0, "seconds": 0.25,
                     "samples": 4000, "index": 0, "source": "split:test:0", "file": "prompt00.wav",
                     "reference_file": "prompt00-reference.wav",
                     "log_likelihood": {"sum_nats": -9000.0, "mean_nats": -2.25}}],
        "continuations": [{"id": "prompt00-sample00", "prompt": 0, "sample": 0, "stream": 0, "rank": 1,
                           "files": {"audio": "prompt00-sample00.wav",
                                     "continuation": "prompt00-sample00-continuation.wav",
                                     "spectrogram": "prompt00-sample00.png"},
                           "log_likelihood": {"model": {"sum_nats": -8000.0, "mean_nats": -2.0}}}],
        "timings": {"prompt_seconds": 0.7, "generation_seconds": 1.5},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))


def write_sampling_search(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"temperature": t, "top_p": p, "score/noise": (t - 0.9) ** 2, "score/repetition": (p - 0.95) ** 2}
            for t in (0.8, 0.9, 1.0) for p in (0.9, 0.95, 1.0)]
    frame = pd.DataFrame(rows)
    frame["score"] = frame["score/noise"] + frame["score/repetition"]
    path = folder / "trials.csv"
    frame.to_csv(path, index=False)
    return path


def build_fixture(root: Path, trials: list[Trial] | None = None) -> Fixture:
    """Write runs/{replicate,ablation,grid-dropout} with results.parquet and run.json files under `root`
    (the default trials, or `trials`)."""
    runs_dir = root / "runs"
    rows: dict[str, list[dict]] = {}
    for index, trial in enumerate(trials if trials is not None else default_trials()):
        run_dir = runs_dir / trial.study / signature_of(trial)
        run_dir.mkdir(parents=True, exist_ok=True)
        record = run_record(trial, run_dir, index)
        (run_dir / "run.json").write_text(json.dumps(record, indent=2))
        rows.setdefault(trial.study, []).append(results_row(trial, run_dir, record))
    for study, study_rows in rows.items():
        pd.DataFrame(study_rows).to_parquet(runs_dir / study / "results.parquet")
    examples_dir = runs_dir / "replicate" / "examples"
    write_examples(examples_dir)
    sampling_file = write_sampling_search(runs_dir / "replicate" / "sampling-search")
    return Fixture(runs_dir=runs_dir, examples_dir=examples_dir, sampling_file=sampling_file)
