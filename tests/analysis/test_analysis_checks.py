"""Warnings: smoke scale, stand-in and leaky data, failed trials, mislabeled results, uncommitted code."""

import json
import math
from pathlib import Path

import pandas as pd

from analysis.checks import findings, parse_trial_label
from analysis.results import load_results


def _messages(results, level=None):
    return [(finding.study, finding.trial, finding.message) for finding in findings(results)
            if level is None or finding.level == level]


def test_fixture_warnings(fixture):
    found = findings(load_results(fixture.runs_dir))
    levels = [finding.level for finding in found]
    assert levels == sorted(levels, key=["error", "warning", "missing", "note"].index)
    text = "\n".join(f"{finding.level} {finding.study} {finding.trial} {finding.message}" for finding in found)
    assert "warning replicate  3 of 3 trials ran at scale=smoke" in text
    assert "stand-in 'toy-piano' instead of 'youtubemix'" in text
    assert "repeat training material" in text                                  # the YouTubeMix leakage warning
    assert "error ablation experiment=bigband-sashimi-2,seed=2 failed: training diverged" in text
    assert not any("mislabeled" in finding.message for finding in found)


def test_mislabeled_rows_are_reported(fixture):
    path = fixture.runs_dir / "replicate" / "results.parquet"
    trials = pd.read_parquet(path)
    trials.loc[0, "seed"] = 5                                                  # label and run.json say seed 0
    trials.loc[1, "experiment"] = "bigband-sashimi-8"                          # run.json says youtubemix-sashimi-8
    trials.loc[2, "final/test/loss"] = trials.loc[2, "final/test/bpb"]          # a loss in bits, not nats
    trials.to_parquet(path)
    errors = _messages(load_results(fixture.runs_dir, ["replicate"]), "error")
    by_trial = {trial: message for _, trial, message in errors}
    assert "label says seed=0 but the seed column holds 5" in by_trial["seed=0"]
    assert "results say seed=5 but run.json says 0" in by_trial["seed=0"]
    assert "results say experiment=bigband-sashimi-8 but run.json says youtubemix-sashimi-8" in by_trial["seed=1"]
    losses = [message for _, trial, message in errors if trial == "seed=2"]
    assert any("is not loss/ln 2" in message and "disagree on final/test/loss" in message for message in losses)


def test_swapped_top_k_and_dirty_code_are_reported(fixture):
    path = fixture.runs_dir / "replicate" / "results.parquet"
    trials = pd.read_parquet(path)
    trials.loc[0, ["final/val/accuracy@3", "final/val/accuracy@10"]] = [0.9, 0.5]
    trials.to_parquet(path)
    record_path = Path(trials.loc[1, "run_dir"]) / "run.json"
    record = json.loads(record_path.read_text())
    record["git"]["dirty"] = True
    record_path.write_text(json.dumps(record))
    messages = _messages(load_results(fixture.runs_dir, ["replicate"]))
    assert any("top-k accuracies are not increasing" in message for _, _, message in messages)
    assert any(trial == "seed=1" and "uncommitted changes" in message for _, trial, message in messages)


def test_trial_labels_parse_with_commas_in_values():
    assert parse_trial_label("data.split=[0.8,0.1,0.1],seed=2") == {"data.split": "[0.8,0.1,0.1]", "seed": "2"}
    assert parse_trial_label("model.dropout=0.1,seed=0") == {"model.dropout": "0.1", "seed": "0"}
    assert math.isclose(float(parse_trial_label("train.lr=1e-3")["train.lr"]), 0.001)
