"""Live trial progress: what a training run writes to progress.json, and the lines or bars the study
driver shows from it, on a terminal and off one."""

import io
import json

from study.progress import ProgressMonitor, ProgressWriter, Watched, read_progress
from study.training.record import update_record


def train_steps(writer: ProgressWriter, epochs: int, steps: int, monitor: ProgressMonitor) -> None:
    for epoch in range(1, epochs + 1):
        for step in range(1, steps + 1):
            writer(epoch, epochs, step, steps, loss=5.0 - 0.1 * step, tokens_per_second=4096.0)
            monitor.poll()


def test_off_a_terminal_each_trial_prints_a_line_per_epoch_and_one_at_the_end(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    stream = io.StringIO()
    monitor = ProgressMonitor([Watched(1, "model.dropout=0.0,seed=0", first), Watched(2, "model.dropout=0.1,seed=0", second)],
                              total=2, stream=stream, line_seconds=3600)
    train_steps(ProgressWriter(first, interval_seconds=0), 2, 4, monitor)
    update_record(first, status="finished", final_metrics={"final/val/bpb": 7.25}, wall_seconds=75.0)
    monitor.poll()
    monitor.poll()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("trial 1/2 model.dropout=0.0,seed=0: epoch 1/2 step 1/4 | 4,096 tokens/s | "
                               "loss 4.9000 | ETA ")
    assert lines[1].startswith("trial 1/2 model.dropout=0.0,seed=0: epoch 2/2 step 1/4 | ")
    assert lines[2] == "trial 1/2 model.dropout=0.0,seed=0: finished, val bpb 7.2500, 01:15"


def test_the_written_progress_gives_the_fraction_done_and_an_eta(tmp_path):
    writer = ProgressWriter(tmp_path, interval_seconds=0)
    writer.started -= 30.0                      # 30 s since the trial started
    writer(1, 2, 1, 5, loss=4.0, tokens_per_second=100.0)
    writer(2, 2, 1, 5, loss=3.0, tokens_per_second=100.0)
    progress = read_progress(tmp_path)
    assert progress.fraction == 6 / 10
    assert 19.0 < progress.eta_seconds < 21.5   # 30 s for 6 of 10 steps: 4 steps left at 5 s each
    assert json.loads((tmp_path / "progress.json").read_text())["epoch"] == 2


def test_the_writer_writes_at_most_every_interval_but_always_at_an_epochs_end(tmp_path):
    writer = ProgressWriter(tmp_path, interval_seconds=3600)
    writer(1, 1, 1, 3, loss=4.0, tokens_per_second=1.0)
    writer(1, 1, 2, 3, loss=4.0, tokens_per_second=1.0)
    assert read_progress(tmp_path).step == 1
    writer(1, 1, 3, 3, loss=4.0, tokens_per_second=1.0)
    assert read_progress(tmp_path).step == 3


def test_on_a_terminal_each_trial_gets_a_bar(tmp_path):
    stream = io.StringIO()
    with ProgressMonitor([Watched(1, "seed=0", tmp_path)], total=1, stream=stream, terminal=True,
                         poll_seconds=3600) as monitor:
        train_steps(ProgressWriter(tmp_path, interval_seconds=0), 1, 4, monitor)
    shown = stream.getvalue()
    assert "trial 1/1 seed=0" in shown and "4/4" in shown and "epoch 1/1 step 4/4" in shown


def test_a_failure_left_by_an_earlier_attempt_is_not_reported_again(tmp_path):
    update_record(tmp_path, status="failed", error="the training loss became nan")
    stream = io.StringIO()
    monitor = ProgressMonitor([Watched(1, "seed=0", tmp_path)], total=1, stream=stream)
    monitor.poll()
    assert stream.getvalue() == ""
    update_record(tmp_path, status="finished", final_metrics={})
    monitor.poll()
    assert stream.getvalue() == "trial 1/1 seed=0: finished\n"
