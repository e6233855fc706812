"""The study harness on a real local Ray: smoke studies end to end, resume after the driver is
killed, a multi-node cluster, and refusals before launch."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import study.harness as harness
import study.studies as studies
from study import cli
from study.errors import ConfigError, StudyDefinitionError
from study.harness import run_study

REPO = Path(__file__).resolve().parent.parent
TINY = ["scale=smoke", "model.d_model=8", "model.d_state=8", "data.sample_len=512", "data.toy_clips=24",
        "data.toy_clip_seconds=1", "data.clip_seconds=1", "train.max_epochs=1", "train.max_steps_per_epoch=3",
        "train.max_eval_windows=1", "tracking.wandb=disabled", "ray.max_failures=0"]


@pytest.fixture(scope="module")
def ray_local():
    import ray
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def paths(tmp_path, cache):
    return [f"paths.runs={tmp_path / 'runs'}", f"paths.data_cache={cache}", f"paths.downloads={cache / 'dl'}"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.slow
def test_replicate_and_ablation_smoke_studies_end_to_end(ray_local, tmp_path, cache):
    table = run_study("replicate", TINY + paths(tmp_path, cache))
    assert list(table.status) == ["finished"]
    ablation = run_study("ablation", TINY + paths(tmp_path, cache))
    on_disk = pd.read_parquet(tmp_path / "runs" / "ablation" / "results.parquet")
    assert list(on_disk.experiment) == ["bigband-sashimi-8", "bigband-sashimi-2"]
    assert list(on_disk["experiment"]) == list(ablation["experiment"])
    assert (on_disk.status == "finished").all() and (on_disk.data == "toy-trio").all()
    assert on_disk.parameters.iloc[0] > on_disk.parameters.iloc[1]
    for column in studies.METRICS + ["signature", "seed", "wall_seconds", "checkpoint", "run_dir", "trial"]:
        assert column in on_disk and on_disk[column].notna().all(), column
    for row in on_disk.itertuples():
        record = json.loads((Path(row.run_dir) / "run.json").read_text())
        assert record["signature"] == row.signature and Path(row.checkpoint).is_file()
        assert record["config"]["run_group"] == "ablation" and record["config"]["tracking"]["group"] == "ablation"
    # a second run finds every trial finished and launches nothing
    again = run_study("ablation", TINY + paths(tmp_path, cache))
    assert list(again.signature) == list(on_disk.signature)


def test_gpu_trial_without_gpu_fails_fast(ray_local, tmp_path, cache):
    started = time.time()
    with pytest.raises(StudyDefinitionError, match="asks for 1 GPU but the Ray cluster has 0"):
        run_study("replicate", TINY + paths(tmp_path, cache) + ["ray.gpus_per_trial=1"])
    assert time.time() - started < 60


def test_unknown_study_lists_the_available_ones():
    with pytest.raises(StudyDefinitionError, match="unknown study 'nope'; available: ablation, grid-dropout"):
        run_study("nope", [])


def test_bad_study_files_name_the_file_and_key(tmp_path, monkeypatch):
    monkeypatch.setattr(studies, "STUDY_DIR", tmp_path)
    (tmp_path / "typo.yaml").write_text("base: []\nvariations: [[]]\nseeds: [0]\nmetrc: x\n")
    with pytest.raises(StudyDefinitionError, match=r"typo.yaml: unknown key 'metrc'"):
        run_study("typo", [])
    (tmp_path / "broken.yaml").write_text("base: []\nvariations: [[model.no_such_key=1]]\n")
    with pytest.raises(StudyDefinitionError, match=r"broken.yaml: variation \['model.no_such_key=1'\] does not compose"):
        run_study("broken", TINY)


@pytest.mark.parametrize("text, message", [
    ("base: [\n  - scale=smoke\nvariations: [[]]\n", r"bad.yaml is not valid YAML at line \d+, column \d+"),
    ("base: []\nvariations: []\n", r"bad.yaml: 'variations' is empty, so the study has no trials"),
    ("base: []\nvariations: [[]]\nseeds: []\n", r"bad.yaml: 'seeds' must be a non-empty list of integers"),
    ("- just\n- a list\n", r"bad.yaml holds a list, not a mapping"),
])
def test_broken_study_files_are_definition_errors(tmp_path, monkeypatch, capsys, text, message):
    monkeypatch.setattr(studies, "STUDY_DIR", tmp_path)
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(StudyDefinitionError, match=message):
        run_study("bad", [])
    assert cli.main(["run", "bad"]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("name", ["../study/replicate", "../../etc/passwd", "/etc/hosts", ".hidden", "a/b"])
def test_a_study_name_is_a_name_not_a_path(tmp_path, monkeypatch, name):
    monkeypatch.setattr(studies, "STUDY_DIR", tmp_path / "studies")
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "replicate.yaml").write_text("base: []\nvariations: [[]]\n")
    with pytest.raises(StudyDefinitionError, match="is not a plain name"):
        run_study(name, [])
    with pytest.raises(StudyDefinitionError, match="is not a plain name"):
        studies.best_checkpoint(tmp_path / "runs", name)


def test_an_unwritable_runs_folder_fails_before_ray_or_data(tmp_path, cache, small_filesystem, monkeypatch):
    runs = small_filesystem(64, read_only=True)
    monkeypatch.setattr(harness, "connect_ray", lambda address: pytest.fail("Ray started for an unwritable folder"))
    started = time.time()
    with pytest.raises(ConfigError, match="cannot write to .*read-only.*paths.runs="):
        run_study("replicate", TINY + [f"paths.runs={runs}", f"paths.data_cache={cache}"])
    assert time.time() - started < 60


def test_a_study_folder_is_not_mixed_with_another_definition(tmp_path, cache):
    study = studies.load_study("grid-lr")
    folder = tmp_path / "runs" / "grid-lr"
    studies.claim_study_folder(folder, study, TINY)
    studies.claim_study_folder(folder, study, TINY)  # same definition: fine
    with pytest.raises(StudyDefinitionError, match="another definition"):
        studies.claim_study_folder(folder, study, TINY + ["model.dropout=0.2"])


def test_sample_rate_grid_keeps_the_window_duration(tmp_path, cache):
    trials = studies.plan_trials(studies.load_study("grid-sample-rate"), TINY + paths(tmp_path, cache))
    lengths = {t.experiment.data.sample_rate: t.experiment.data.sample_len for t in trials}
    assert lengths == {8000: 256, 16000: 512, 24000: 768}


@pytest.mark.slow
def test_killed_driver_resumes_the_study(tmp_path, cache):
    arguments = TINY + paths(tmp_path, cache) + ["train.max_steps_per_epoch=40", "train.checkpoint_every_steps=2",
                                                 "ray.max_concurrent_trials=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "study.cli", "run", "ablation", *arguments]
    driver = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    trials = studies.plan_trials(studies.load_study("ablation"), [a for a in arguments if not a.startswith("ray.")])
    records = [t.experiment.run_dir / "run.json" for t in trials]
    deadline, interrupted = time.time() + 400, None
    while time.time() < deadline and interrupted is None:
        states = [json.loads(r.read_text()) if r.exists() else {} for r in records]
        finished = [s for s in states if s.get("status") == "finished"]
        for trial, state in zip(trials, states):
            last = trial.experiment.run_dir / "checkpoints" / "last.pt"
            if finished and state.get("status") == "running" and last.exists():
                interrupted = trial
        time.sleep(0.2)
    assert interrupted is not None, "the study never reached one finished and one running trial"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    finished_trial = next(t for t in trials if t is not interrupted)
    finished_at = json.loads((finished_trial.experiment.run_dir / "run.json").read_text())["finished"]
    assert subprocess.run(command, cwd=REPO, env=env, capture_output=True, timeout=600).returncode == 0
    assert json.loads((finished_trial.experiment.run_dir / "run.json").read_text())["finished"] == finished_at
    resumed = json.loads((interrupted.experiment.run_dir / "run.json").read_text())
    assert resumed["status"] == "finished" and resumed["resumes"] and resumed["resumes"][0]["step"] > 0


@pytest.mark.slow
def test_study_runs_on_a_multi_node_cluster(tmp_path, cache):
    import ray
    from ray.cluster_utils import Cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        table = run_study("ablation", TINY + paths(tmp_path, cache) + [f"ray.address={cluster.address}"])
        assert (table.status == "finished").all()
        assert len([n for n in ray.nodes() if n["Alive"]]) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_a_finished_run_is_reused_by_another_study_with_the_same_signature(tmp_path, cache, monkeypatch, capsys):
    from analysis.results import load_results
    from study.training.loop import train
    monkeypatch.setattr(studies, "STUDY_DIR", tmp_path / "studies")
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "depth.yaml").write_text("base: []\nvariations: [[experiment=bigband-sashimi-2]]\n")
    (tmp_path / "studies" / "dropout.yaml").write_text("base: [experiment=bigband-sashimi-2]\n"
                                                       "variations: [[model.dropout=0.0]]\n")
    arguments = [a for a in TINY if not a.startswith("ray.")] + paths(tmp_path, cache)
    (first,) = studies.plan_trials(studies.load_study("depth"), arguments)
    record = train(first.experiment)
    monkeypatch.setattr(harness, "connect_ray", lambda address: pytest.fail("the reused trial was launched"))
    table = run_study("dropout", arguments)
    (row,) = table.to_dict("records")
    assert row["signature"] == first.experiment.signature and row["status"] == "finished"
    assert row["run_dir"] == str(first.experiment.run_dir) and Path(row["checkpoint"]).is_file()
    assert row["final/val/bpb"] == record["final_metrics"]["final/val/bpb"] and row["model.dropout"] == 0.0
    assert not (tmp_path / "runs" / "dropout" / first.experiment.signature).exists()   # nothing trained there
    assert "reusing it, not training again" in capsys.readouterr().out
    (loaded,) = load_results(tmp_path / "runs", ["dropout"]).studies
    assert loaded.record(first.experiment.signature)["final_metrics"] == record["final_metrics"]


@pytest.mark.slow
def test_study_run_prints_progress_lines_off_a_terminal(tmp_path, cache):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "study.cli", "run", "replicate", *TINY, *paths(tmp_path, cache), "ray.cpus_per_trial=1"]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith("trial 1/1 seed=0: epoch 1/1 step ") and "tokens/s | loss " in line
               and "| ETA " in line for line in lines), result.stdout
    assert any(line.startswith("trial 1/1 seed=0: finished, val bpb ") for line in lines), result.stdout
    noise = result.stdout + result.stderr
    assert "Token authentication is enabled" not in noise and "Started a local Ray instance" not in noise
