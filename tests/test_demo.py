"""`make demo` end to end at the tiniest sizes: every step runs, the report has tables and audio,
and a second run reuses what the first finished."""

import os
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = ("model.d_model=8 model.d_state=8 data.sample_len=4096 data.toy_clips=24 data.toy_clip_seconds=1 "
        "data.clip_seconds=1 train.max_epochs=1 train.max_steps_per_epoch=3 train.max_eval_windows=1 "
        "tracking.wandb=disabled")


@pytest.mark.slow
def test_make_demo_runs_the_whole_study_and_reuses_it(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "STUDY_DATA_CACHE": str(tmp_path / "cache"),
           "STUDY_DOWNLOADS": str(tmp_path / "downloads")}
    arguments = f"runs={tmp_path / 'runs'} report_out={tmp_path / 'reports'} search_trials=2 {TINY}"
    command = ["make", "demo", f"ARGS={arguments}"]
    started = time.perf_counter()
    first = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    first_seconds = time.perf_counter() - started
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-4000:]
    html = tmp_path / "reports" / "demo" / "report.html"
    assert f"report: {html}" in first.stdout
    for study in ("replicate", "ablation", "grid-dropout"):
        assert (tmp_path / "runs" / study / "results.parquet").is_file(), study
    assert (tmp_path / "runs" / "replicate" / "sampling-search" / "results.csv").is_file()
    assert list((tmp_path / "runs" / "replicate" / "examples").glob("*-continuation.wav"))
    page = html.read_text()
    assert "<audio" in page and "final/test/bpb" in page and "youtubemix-sashimi-8" in page
    assert "| final/test/bpb |" in first.stdout  # the summary table on screen
    assert "[2/6] study ablation" in first.stdout and "[6/6] report done in " in first.stdout
    runs = (tmp_path / "runs").resolve()
    assert f"STUDY_RUNS={runs} make report" in first.stdout and f"STUDY_RUNS={runs} make search" in first.stdout
    assert "trial 1/4 model.dropout=0.0,seed=0: same signature as the finished run" in first.stdout
    assert "trial 1/2 experiment=bigband-sashimi-8,seed=0: epoch 1/1 step " in first.stdout  # progress lines
    started = time.perf_counter()
    second = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    assert "1 trials (1 already finished)" in second.stdout and "2 trials (2 already finished)" in second.stdout
    assert "sampling search: 2 trials stored, running 0 more" in second.stdout
    assert time.perf_counter() - started < first_seconds


def test_the_demos_next_commands_read_its_runs_folder(tmp_path, monkeypatch):
    from analysis.results import default_runs_dir
    from analysis.sampling_search import SearchSettings
    from study.demo import DEFAULT_RUNS, next_commands
    monkeypatch.chdir(tmp_path)
    checkpoint, prompt = tmp_path / "best.pt", tmp_path / "prompt.wav"
    plain = next_commands(DEFAULT_RUNS.resolve(), checkpoint, prompt, [])
    assert [command.split("  #")[0].strip() for command in plain] == [
        "make report", "make search", f"study generate checkpoint={checkpoint} prompt={prompt} seconds=4 n=2",
        "make replicate SCALE=smoke"]
    elsewhere = tmp_path / "elsewhere"
    moved = next_commands(elsewhere, checkpoint, prompt, ["model.d_model=8"])
    assert moved[0].startswith(f"STUDY_RUNS={elsewhere} make report") and len(moved) == 3
    monkeypatch.setenv("STUDY_RUNS", str(elsewhere))          # what that prefix does for report and search
    assert default_runs_dir() == elsewhere and SearchSettings().runs == str(elsewhere)
