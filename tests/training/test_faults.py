"""Faults around training: foreign checkpoints, a second process on the same run folder, errors and
signals mid-run, killed writes, non-finite weights, read-only or full disks, file modes."""

import hashlib
import io
import json
import math
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from study import cli
from study.config import ConfigError
from study.files import StagingFolder, make_temporary_folder, write_atomic
from study.training import loop
from study.training.checkpoint import (DIGEST_BYTES, MAGIC, CheckpointError, load_checkpoint, load_model,
                                       save_checkpoint)
from study.training.experiment import load_experiment
from study.training.lock import LOCK_NAME, RunLock, RunLockedError
from study.training.loop import TrainingDiverged, train
from test_loop import REPO, tiny


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data-cache")


def write_raw_checkpoint(path: Path, payload) -> Path:
    """A file with the project's header and a valid checksum around any torch.save payload."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    data = buffer.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(data).digest() + data)
    return path


class Hostile:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_hostile_pickle_with_a_valid_checksum_is_refused_unrun(tmp_path):
    marker = tmp_path / "code-ran"
    path = write_raw_checkpoint(tmp_path / "forged.pt", {"format": "sashimi-study/checkpoint/1", "x": Hostile(marker)})
    with pytest.raises(CheckpointError) as caught:
        load_model(path)
    message = str(caught.value)
    assert not marker.exists()
    assert "weights_only=False" not in message and "weights_only` set to `False" not in message
    assert "not forgery" in message and "never load such a file with full pickle" in message
    assert "posix.system" in message


@pytest.mark.parametrize("payload, message", [
    ([1, 2, 3], "holds a list, not a sashimi-study checkpoint"),
    ({"format": "sashimi-study/checkpoint/1", "model_config": {}}, "lacks 'model_state'"),
    ({"format": "sashimi-study/checkpoint/1", "model_config": [], "model_state": {}}, "must be dicts"),
    ({"format": "other/2", "model_config": {}, "model_state": {}}, "has format 'other/2'"),
])
def test_payloads_that_are_not_the_projects_dict_are_checkpoint_errors(tmp_path, payload, message):
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(write_raw_checkpoint(tmp_path / "foreign.pt", payload))


def test_a_checkpoint_with_a_bad_model_config_or_state_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "bad.pt"
    save_checkpoint(path, {"model_config": {"d_model": "wide"}, "model_state": {}})
    with pytest.raises(CheckpointError):
        load_model(path)
    save_checkpoint(path, {"model_config": {"no_such_key": 1, "n_layers": 1, "d_model": 16}, "model_state": {}})
    with pytest.raises(CheckpointError, match="another architecture"):
        load_model(path)


def test_corruption_errors_say_what_the_checksum_protects_against(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"model_config": {}, "model_state": {}})
    raw = bytearray(path.read_bytes())
    raw[len(MAGIC) + DIGEST_BYTES + 5] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corruption and truncation, not forgery"):
        load_checkpoint(path)


def test_non_finite_weights_are_never_written(tmp_path):
    path = save_checkpoint(tmp_path / "last.pt", {"model_config": {}, "model_state": {"w": torch.ones(2)}})
    with pytest.raises(CheckpointError, match="weights are not finite .*'w'"):
        save_checkpoint(path, {"model_config": {}, "model_state": {"w": torch.tensor([1.0, math.nan])}})
    assert torch.equal(load_checkpoint(path)["model_state"]["w"], torch.ones(2))


# -- the run lock ----------------------------------------------------------------------------------------
def test_a_held_run_folder_is_refused_with_the_holder_and_exit_2(tmp_path, data_cache, capsys, monkeypatch):
    arguments = tiny(tmp_path, data_cache)
    experiment = load_experiment(arguments)
    monkeypatch.setattr(loop.Run, "_prepare_data", lambda self: pytest.fail("data prepared despite the lock"))
    with RunLock(experiment.run_dir, "holder"):
        with pytest.raises(RunLockedError, match=f"is already being trained by pid {os.getpid()} on host "
                                                 f"{socket.gethostname()}"):
            train(experiment)
        assert cli.main(["train", *arguments]) == 2
    error = capsys.readouterr().err
    assert f"run {experiment.run_dir} (tiny) is already being trained by pid {os.getpid()}" in error
    assert "Traceback" not in error


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 7, "host": "gone", "since": 0}))
    with RunLock(tmp_path, "run") as lock:
        holder = json.loads((tmp_path / LOCK_NAME).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(RunLockedError):
            RunLock(tmp_path, "run").acquire()
    lock.release()
    RunLock(tmp_path, "run").acquire().release()


# -- status, temporaries, divergence ----------------------------------------------------------------------
def test_any_error_marks_the_run_failed_and_stale_temporaries_are_removed(tmp_path, data_cache, monkeypatch):
    experiment = load_experiment(tiny(tmp_path, data_cache))
    stale = [experiment.run_dir / ".run.json.k1ll3d.tmp", experiment.run_dir / "checkpoints" / ".last.pt.x7y8.tmp"]
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a write")
    kept = experiment.run_dir / "checkpoints" / "notes.tmp"
    kept.write_text("not ours")

    def broken(self):
        raise RuntimeError("the data loader exploded")
    monkeypatch.setattr(loop.Run, "_prepare_data", broken)
    with pytest.raises(RuntimeError):
        train(experiment)
    record = json.loads((experiment.run_dir / "run.json").read_text())
    assert record["status"] == "failed" and record["error"] == "RuntimeError: the data loader exploded"
    assert not any(path.exists() for path in stale) and kept.exists()


def test_weights_made_non_finite_by_a_step_keep_the_last_finite_checkpoint(tmp_path, data_cache, monkeypatch):
    experiment = load_experiment(tiny(tmp_path, data_cache, "train.checkpoint_every_steps=1"))
    original, calls = torch.optim.AdamW.step, {"n": 0}

    def poisoning_step(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 3:
            with torch.no_grad():
                self.param_groups[0]["params"][0].fill_(math.inf)
        return result
    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    with pytest.raises(TrainingDiverged, match="weights became non-finite in the optimizer step at step 3"):
        train(experiment)
    last = load_checkpoint(experiment.run_dir / "checkpoints" / "last.pt")
    assert last["progress"]["step"] == 2
    assert all(torch.isfinite(tensor).all() for tensor in last["model_state"].values())
    assert json.loads((experiment.run_dir / "run.json").read_text())["status"] == "failed"


def test_an_infinite_learning_rate_ends_as_diverged_not_as_a_missing_checkpoint(tmp_path, data_cache, capsys):
    experiment = load_experiment(tiny(tmp_path, data_cache))
    experiment.train.lr = math.inf  # past any config validation: the loop must still stop cleanly
    with pytest.raises(TrainingDiverged) as caught:
        train(experiment)
    message = str(caught.value)
    assert "no checkpoint" not in message and "Lower train.lr" in message
    record = json.loads((experiment.run_dir / "run.json").read_text())
    assert record["status"] == "failed" and "TrainingDiverged" in record["error"]
    assert not list((experiment.run_dir / "checkpoints").glob("*.pt"))


# -- disks --------------------------------------------------------------------------------------------------
def test_a_read_only_runs_folder_fails_before_data_preparation(tmp_path, data_cache, small_filesystem, monkeypatch):
    runs = small_filesystem(64, read_only=True)
    monkeypatch.setattr(loop.Run, "_prepare_data", lambda self: pytest.fail("data prepared for an unwritable run"))
    with pytest.raises(ConfigError, match="cannot write to .*read-only.*paths.runs="):
        train(load_experiment(tiny(tmp_path, data_cache, f"paths.runs={runs}")))


def test_a_full_runs_folder_fails_before_data_preparation(tmp_path, data_cache, small_filesystem, monkeypatch):
    runs = small_filesystem(64)
    with pytest.raises(OSError):
        (runs / "filler").write_bytes(b"x" * 128 * 1024)
    monkeypatch.setattr(loop.Run, "_prepare_data", lambda self: pytest.fail("data prepared for a full disk"))
    with pytest.raises(ConfigError, match="cannot write to .*no space left.*paths.runs="):
        train(load_experiment(tiny(tmp_path, data_cache, f"paths.runs={runs}")))


def test_a_disk_that_fills_during_training_keeps_the_last_checkpoint(tmp_path, data_cache, small_filesystem,
                                                                    monkeypatch):
    runs = small_filesystem(16384)
    experiment = load_experiment(tiny(tmp_path, data_cache, f"paths.runs={runs}", "train.checkpoint_every_steps=1"))
    original, saves = loop.Run.save, {"n": 0}

    def save_then_fill(self, name):
        path = original(self, name)
        saves["n"] += 1
        if saves["n"] == 2:  # leave less room than one more checkpoint needs
            try:
                with open(runs / "filler", "wb") as handle:
                    while True:
                        handle.write(b"x" * 4096)
                        handle.flush()
            except OSError:
                pass
            os.truncate(runs / "filler", max(0, (runs / "filler").stat().st_size - 8192))
        return path
    monkeypatch.setattr(loop.Run, "save", save_then_fill)
    with pytest.raises(CheckpointError, match="cannot write .*last.pt: no space left.*run the same command again"):
        train(experiment)
    assert load_checkpoint(experiment.run_dir / "checkpoints" / "last.pt")["progress"]["step"] == 2
    assert not list((experiment.run_dir / "checkpoints").glob(".*.tmp"))


# -- file modes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("umask, file_mode, folder_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_written_files_and_folders_follow_the_umask(tmp_path, umask, file_mode, folder_mode):
    previous = os.umask(umask)
    try:
        written = write_atomic(tmp_path / "run.json", b"{}")
        folder = make_temporary_folder(tmp_path, ".outputs.tmp-")
        output = StagingFolder(tmp_path / "generated")
    finally:
        os.umask(previous)
    assert stat.S_IMODE(written.stat().st_mode) == file_mode
    assert stat.S_IMODE(folder.stat().st_mode) == folder_mode
    assert stat.S_IMODE(output.temporary.stat().st_mode) == folder_mode
    output.discard()


# -- two processes, and signals ------------------------------------------------------------------------------
def wait_for(condition, what: str, process: subprocess.Popen, limit: float = 240.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"training exited ({process.returncode}) before {what}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no {what} within {limit:.0f} s")
        time.sleep(0.2)


@pytest.mark.slow
def test_a_second_training_of_the_same_config_is_refused_and_sigterm_interrupts_cleanly(tmp_path, data_cache):
    arguments = tiny(tmp_path, data_cache, "train.max_epochs=1000", "train.checkpoint_every_steps=1")
    experiment = load_experiment(arguments)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "study.cli", "train", *arguments], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        last = experiment.run_dir / "checkpoints" / "last.pt"
        wait_for(last.exists, "a first checkpoint", first)
        second = subprocess.run([sys.executable, "-m", "study.cli", "train", *arguments], cwd=REPO, env=env,
                                capture_output=True, text=True, timeout=240)
        assert second.returncode == 2
        assert f"is already being trained by pid {first.pid} on host {socket.gethostname()}" in second.stderr
        assert "Traceback" not in second.stderr
        first.send_signal(signal.SIGTERM)
        _, error = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 128 + signal.SIGTERM, error
    assert "interrupted by SIGTERM" in error and "run the same command again to resume" in error
    record = json.loads((experiment.run_dir / "run.json").read_text())
    assert record["status"] == "interrupted" and record["interrupted"]["signal"] == "SIGTERM"
    assert load_checkpoint(last)["progress"]["step"] == record["interrupted"]["step"] > 0
    RunLock(experiment.run_dir, "run").acquire().release()  # the lock went with its process


# -- names stay inside their roots ---------------------------------------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("run_group=../../x", "run_group='../../x' is not a plain name"),
    ("run_group=/tmp/elsewhere", "is not a plain name"),
    ("experiment=../../../etc/x", "experiment='../../../etc/x' is not one of the experiment configs"),
    ("data=../study/replicate", "data='../study/replicate' is not one of the data configs"),
    ("experiment=youtubemix-sashimi-9", "is not one of the experiment configs: bigband-sashimi-2"),
])
def test_user_names_cannot_leave_their_folders(override, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment([override])


def test_search_sampling_writes_inside_the_run_or_study_folder(tmp_path):
    from analysis.sampling_search import default_output
    run_checkpoint = tmp_path / "runs" / "train" / "abc123" / "checkpoints" / "best.pt"
    assert default_output(str(run_checkpoint), run_checkpoint, tmp_path / "runs") == run_checkpoint.parents[1] / "sampling-search"
    loose = tmp_path / "models" / "best.pt"
    assert default_output(str(loose), loose, tmp_path / "runs") == tmp_path / "models" / "sampling-search"
    study = tmp_path / "runs" / "replicate" / "abc" / "checkpoints" / "best.pt"
    assert default_output("study:replicate", study, tmp_path / "runs") == tmp_path / "runs" / "replicate" / "sampling-search"


def test_a_last_checkpoint_that_cannot_resume_is_a_checkpoint_error(tmp_path, data_cache):
    experiment = load_experiment(tiny(tmp_path, data_cache))
    save_checkpoint(experiment.run_dir / "checkpoints" / "last.pt", {"model_config": {}, "model_state": {}})
    with pytest.raises(CheckpointError, match="lacks 'optimizer_state', 'scheduler_state', 'rng', 'progress' "
                                              r"\(needed to resume\).*move the file away"):
        train(experiment)
    assert json.loads((experiment.run_dir / "run.json").read_text())["status"] == "failed"


def test_init_from_is_a_file_or_a_signature_never_a_pattern_outside_the_runs(tmp_path, data_cache):
    with pytest.raises(ConfigError, match="train.init_from='../../elsewhere' is not a plain name"):
        train(load_experiment(tiny(tmp_path, data_cache, "train.init_from=../../elsewhere")))
