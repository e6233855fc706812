"""A study's `metric:` and `mode:` pick its best trial everywhere: `train.init_from=study:NAME`, the
sampling search's `checkpoint=study:NAME` and the analysis grids."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

import study.studies as studies
from analysis.grids import grids
from analysis.results import load_results
from analysis.sampling_search import resolve_checkpoint
from study.errors import StudyDefinitionError
from study.records import RESULTS_FILE, STUDY_FILE

sys.path.insert(0, str(Path(__file__).parent / "analysis"))
from analysis_fixture import build_fixture  # noqa: E402


def write_study(runs: Path, name: str, rows: list[dict], selection: dict | None) -> None:
    folder = runs / name
    folder.mkdir(parents=True)
    for row in rows:
        (folder / row["signature"]).mkdir()
        row["checkpoint"] = str(folder / row["signature"] / "best.pt")
        Path(row["checkpoint"]).write_bytes(b"weights")
    pd.DataFrame(rows).to_parquet(folder / RESULTS_FILE)
    if selection is not None:
        (folder / STUDY_FILE).write_text(json.dumps({"study": name, **selection}))


ROWS = [{"signature": "aaa", "status": "finished", "final/val/bpb": 2.0, "final/val/accuracy": 0.50},
        {"signature": "bbb", "status": "finished", "final/val/bpb": 1.9, "final/val/accuracy": 0.40},
        {"signature": "ccc", "status": "failed", "final/val/bpb": None, "final/val/accuracy": 0.90}]


def test_best_checkpoint_follows_the_study_metric_and_mode(tmp_path):
    write_study(tmp_path, "by-accuracy", [dict(row) for row in ROWS], {"metric": "final/val/accuracy", "mode": "max"})
    write_study(tmp_path, "by-default", [dict(row) for row in ROWS], None)
    best = studies.best_checkpoint(tmp_path, "by-accuracy")
    assert best.parent.name == "aaa"  # highest val accuracy among finished trials (ccc failed)
    assert studies.best_checkpoint(tmp_path, "by-default").parent.name == "bbb"  # lowest val bpb
    assert resolve_checkpoint("study:by-accuracy", tmp_path) == best
    resolved = studies.resolve_study_references(["train.init_from=study:by-accuracy"], tmp_path)
    assert resolved == [f"train.init_from={best}"]


def test_study_files_refuse_an_unknown_metric_or_mode(tmp_path, monkeypatch):
    monkeypatch.setattr(studies, "STUDY_DIR", tmp_path)
    (tmp_path / "odd.yaml").write_text("base: []\nvariations: [[]]\nmetric: final/val/accuracy\nmode: max\n")
    assert (studies.load_study("odd").metric, studies.load_study("odd").mode) == ("final/val/accuracy", "max")
    (tmp_path / "odd.yaml").write_text("base: []\nvariations: [[]]\nmetric: val/bpb\n")
    with pytest.raises(StudyDefinitionError, match="metric 'val/bpb' is not a result column"):
        studies.load_study("odd")
    (tmp_path / "odd.yaml").write_text("base: []\nvariations: [[]]\nmode: lowest\n")
    with pytest.raises(StudyDefinitionError, match="mode 'lowest' is not min or max"):
        studies.load_study("odd")


def test_claimed_study_folder_records_the_selection(tmp_path, monkeypatch):
    monkeypatch.setattr(studies, "STUDY_DIR", tmp_path)
    (tmp_path / "acc.yaml").write_text("base: []\nvariations: [[]]\nmetric: final/val/accuracy\nmode: max\n")
    studies.claim_study_folder(tmp_path / "runs" / "acc", studies.load_study("acc"), [])
    recorded = json.loads((tmp_path / "runs" / "acc" / STUDY_FILE).read_text())
    assert (recorded["metric"], recorded["mode"]) == ("final/val/accuracy", "max")


def test_grids_select_by_the_study_metric(tmp_path):
    fixture = build_fixture(tmp_path)
    folder = fixture.runs_dir / "grid-dropout"
    table = pd.read_parquet(folder / RESULTS_FILE)
    table["final/val/accuracy"] = 0.3 + table["model.dropout"]  # best accuracy at the worst bpb
    table.to_parquet(folder / RESULTS_FILE)
    (grid,) = grids(load_results(fixture.runs_dir))
    assert grid.best == 0.0  # no study.json: lowest val bpb
    (folder / STUDY_FILE).write_text(json.dumps({"metric": "final/val/accuracy", "mode": "max"}))
    (grid,) = grids(load_results(fixture.runs_dir))
    assert (grid.metric, grid.mode, grid.best) == ("final/val/accuracy", "max", 0.2)
    formatted = grid.formatted()
    assert formatted.loc[0.2, "selected (highest val accuracy)"] == "✓"
    assert formatted.loc[0.0, "selected (highest val accuracy)"] == ""
