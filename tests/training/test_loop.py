"""Training: loss falls, resume after SIGKILL is exact, checkpoints are atomic, records and
tracking files appear, and bad input is refused before training starts."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from study.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from study.config import ConfigError
from study.training.experiment import load_experiment
from study.training.loop import TrainingDiverged, train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


def tiny(tmp_path, data_cache, *extra):
    return ["name=tiny", "data=toy-piano", "scale=smoke", "model=sashimi-2", "model.n_layers=1", "model.d_model=16",
            "model.d_state=16", "data.sample_len=1024", "data.toy_clips=24", "data.toy_clip_seconds=2",
            "data.clip_seconds=2", "train.max_epochs=2", "train.max_steps_per_epoch=8", "train.max_eval_windows=2",
            "train.checkpoint_every_steps=2", "tracking.wandb=disabled", f"paths.runs={tmp_path / 'runs'}",
            f"paths.data_cache={data_cache}", f"paths.downloads={data_cache / 'downloads'}", *extra]


def test_loss_falls_on_toy_music(tmp_path, data_cache):
    experiment = load_experiment(tiny(tmp_path, data_cache, "train.max_epochs=3", "train.max_steps_per_epoch=15"))
    record = train(experiment)
    history = record["history"]
    assert record["status"] == "finished"
    assert history[-1]["train/loss"] < history[0]["train/loss"] - 0.3
    assert record["final_metrics"]["final/val/bpb"] < 8.0
    assert set(record["final_metrics"]) == {f"final/{split}/{name}" for split in ("val", "test") for name in
                                            ("loss", "bpb", "accuracy", "accuracy@3", "accuracy@5", "accuracy@10")}


def test_run_record_makes_the_run_reproducible(tmp_path, data_cache):
    experiment = load_experiment(tiny(tmp_path, data_cache, "train.max_epochs=1"))
    record = train(experiment, command="study train ...")
    on_disk = json.loads((experiment.run_dir / "run.json").read_text())
    assert on_disk["signature"] == experiment.signature and experiment.run_dir.name == experiment.signature
    for key in ("config", "git", "packages", "device", "data_fingerprint", "parameters", "seed", "wall_seconds",
                "final_metrics", "command"):
        assert key in on_disk, key
    assert on_disk["packages"]["torch"].startswith("2.11")
    assert on_disk["data_config"]["name"] == "toy-piano" and on_disk["data_fingerprint"]
    assert on_disk["data_config"]["quantizer"] == "official" and on_disk["deviations"] == []
    groups = {(group["lr"], group["weight_decay"]): group["tensors"] for group in on_disk["optimizer_groups"]}
    assert "decoder.bias" in groups[(0.004, 0.0)] and "decoder.weight" in groups[(0.004, 0.0)]  # weight decay 0
    assert all(name.rsplit(".", 1)[1] in ("inv_dt", "A_real", "A_imag", "B", "P") for name in groups[(0.001, 0.0)])
    # the same experiment lands in the same folder and is not trained again
    again = load_experiment(tiny(tmp_path, data_cache, "train.max_epochs=1", "tracking.wandb=offline"))
    assert again.run_dir == experiment.run_dir
    assert train(again)["finished"] == record["finished"]


def test_smoke_scale_swaps_hub_data_for_its_embedded_stand_in():
    experiment = load_experiment(["experiment=youtubemix-sashimi-8", "scale=smoke"])
    assert experiment.data.name == "toy-piano" and experiment.data.stands_in_for == "youtubemix"
    assert experiment.data.source == "toy-piano" and experiment.data.sample_len == 4096
    full = load_experiment(["experiment=youtubemix-sashimi-8"])
    assert full.data.name == "youtubemix" and full.data.sample_len == 131072 and full.model.l_max == 131072


def test_wandb_offline_files_appear(tmp_path, data_cache):
    experiment = load_experiment(tiny(tmp_path, data_cache, "train.max_epochs=1", "tracking.wandb=offline"))
    train(experiment)
    runs = list((experiment.run_dir / "wandb").glob("offline-run-*"))
    assert runs and list(runs[0].glob("*.wandb"))
    assert list(runs[0].glob("files/media/audio/**/*.wav")), "the end-of-training audio sample is missing"


def run_train_process(arguments, env):
    return subprocess.Popen([sys.executable, "-m", "study.cli", "train", *arguments], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_kill_and_resume_gives_identical_results(tmp_path, data_cache):
    extra = ("train.max_epochs=3", "train.max_steps_per_epoch=10", "train.checkpoint_every_steps=3",
             "model.dropout=0.1")
    common = tiny(tmp_path, data_cache, *extra)
    straight = tiny(tmp_path / "straight", data_cache, *extra)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert subprocess.run([sys.executable, "-m", "study.cli", "train", *straight], cwd=REPO, env=env,
                          capture_output=True).returncode == 0
    interrupted = load_experiment(common)
    process = run_train_process(common, env)
    last = interrupted.run_dir / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while time.time() < deadline:
        if last.exists():
            progress = load_checkpoint(last)["progress"]
            if progress["step"] >= 13 and progress["batch_in_epoch"] > 0:
                break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((interrupted.run_dir / "run.json").read_text())["status"] == "running"
    assert run_train_process(common, env).wait() == 0
    resumed = json.loads((interrupted.run_dir / "run.json").read_text())
    reference_experiment = load_experiment(straight)
    reference = json.loads((reference_experiment.run_dir / "run.json").read_text())
    assert resumed["final_metrics"] == reference["final_metrics"]
    weights = load_checkpoint(interrupted.run_dir / "checkpoints" / "last.pt")["model_state"]
    reference_weights = load_checkpoint(reference_experiment.run_dir / "checkpoints" / "last.pt")["model_state"]
    for name, tensor in reference_weights.items():
        assert torch.equal(weights[name], tensor), name


def test_checkpoint_write_is_atomic_and_corruption_is_detected(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"model_config": {}, "model_state": {}, "value": torch.arange(3)})

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        save_checkpoint(path, {"model_config": {}, "model_state": {}, "value": torch.arange(5)})
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["value"], torch.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    (tmp_path / "other.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a sashimi-study checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, data_cache, monkeypatch):
    from study.sashimi import SaShiMi
    experiment = load_experiment(tiny(tmp_path, data_cache, "train.checkpoint_every_steps=1"))
    original, calls = SaShiMi.forward, {"n": 0}

    def poisoned(self, tokens):
        calls["n"] += 1
        logits = original(self, tokens)
        return logits * float("nan") if calls["n"] == 4 else logits
    monkeypatch.setattr(SaShiMi, "forward", poisoned)
    with pytest.raises(TrainingDiverged, match="loss became nan at step 4"):
        train(experiment)
    record = json.loads((experiment.run_dir / "run.json").read_text())
    assert record["status"] == "failed" and "nan" in record["error"]
    assert load_checkpoint(experiment.run_dir / "checkpoints" / "last.pt")["progress"]["step"] == 3


@pytest.mark.parametrize("override,message", [
    ("train.bogus=1", "bogus"),
    ("train.lr=abc", "Value 'abc' of type 'str' could not be converted to Float \\(key train.lr"),
    ("train.lr=-0.1", "train.lr=-0.1 is not allowed \\(a finite number > 0\\)"),
    ("train.lr=nan", "train.lr=nan is not allowed"),
    ("train.checkpoint_every_steps=0", "train.checkpoint_every_steps=0 is not allowed \\(an integer >= 1\\)"),
    ("model.n_layers=0", "model.n_layers=0 is not allowed"),
    ("data.sample_len=1000", "not divisible by the total pooling factor 16"),
    ("train.batch_size=100000", "fewer than train.batch_size=100000"),
    ("name=bigband-sashimi-8", "claims 8 layers but model.n_layers=1"),
    ("description='SaShiMi on 8 kHz audio'", "claims 8 khz but data.sample_rate=16000"),
])
def test_bad_input_is_refused_before_training(tmp_path, data_cache, override, message):
    with pytest.raises(ConfigError, match=message):
        train(load_experiment(tiny(tmp_path, data_cache, override)))
    assert not list((tmp_path / "runs").glob("*/*/checkpoints/*.pt"))


def test_init_from_loads_weights_and_refuses_other_shapes(tmp_path, data_cache):
    source = load_experiment(tiny(tmp_path, data_cache, "train.max_epochs=1"))
    train(source)
    best = source.run_dir / "checkpoints" / "best.pt"
    wider = load_experiment(tiny(tmp_path, data_cache, "train.max_epochs=1", "model.d_model=32",
                                 f"train.init_from={best}"))
    with pytest.raises(CheckpointError, match="tensor 'encoder.weight' has shape"):
        train(wider)
    same = load_experiment(tiny(tmp_path, data_cache, "train.max_epochs=1", "train.lr=0.001",
                                f"train.init_from={source.signature}"))
    record = train(same)
    assert record["status"] == "finished"


def test_logged_lr_is_train_lr_and_each_group_has_its_own(tmp_path, data_cache):
    experiment = load_experiment(tiny(tmp_path, data_cache, "train.max_epochs=1", "train.max_steps_per_epoch=2",
                                      "train.lr=0.004", "train.weight_decay=0.01", "model.ssm_lr=0.001"))
    (epoch,) = train(experiment)["history"]
    assert epoch["lr"] == 0.004
    assert {key: value for key, value in epoch.items() if key.startswith("lr/")} == {
        "lr/default": 0.004, "lr/no_weight_decay": 0.004, "lr/ssm": 0.001}
