"""Loading studies: trials, run records, histories, and missing, empty or unreadable studies."""

import shutil

import pandas as pd

from analysis.missing import Missing
from analysis.results import find_studies, load_results, load_study


def test_loads_every_study_with_records_and_histories(fixture):
    results = load_results(fixture.runs_dir)
    assert [study.name for study in results.studies] == ["ablation", "grid-dropout", "replicate"]
    assert results.missing == []
    assert len(results.trials) == 13
    assert results.study("grid-dropout").varied_keys == ["model.dropout"]
    assert results.study("replicate").varied_keys == []
    assert all(len(study.records) == len(study.trials) for study in results.studies)
    histories = results.histories
    # 12 finished trials x 3 epochs + the failed one's 2 epochs
    assert len(histories) == 12 * 3 + 2
    assert {"study", "trial", "epoch", "val/bpb", "train/loss", "status"} <= set(histories.columns)


def test_missing_and_empty_studies_are_reported_not_raised(fixture, tmp_path):
    empty = fixture.runs_dir / "empty"
    empty.mkdir()
    pd.DataFrame({"study": pd.Series(dtype=str), "trial": pd.Series(dtype=str)}).to_parquet(empty / "results.parquet")
    broken = fixture.runs_dir / "broken"
    broken.mkdir()
    (broken / "results.parquet").write_bytes(b"not parquet")
    results = load_results(fixture.runs_dir, ["replicate", "empty", "broken", "absent"])
    assert [study.name for study in results.studies] == ["replicate"]
    text = [str(missing) for missing in results.missing]
    assert len(text) == 3
    assert "has no trials" in text[0] and "unreadable" in text[1] and "does not exist" in text[2]
    assert all(line.startswith("missing: ") and "study run" in line for line in text)
    nothing = load_results(tmp_path / "no-runs-here")
    assert nothing.studies == [] and "does not exist" in str(nothing.missing[0])
    assert nothing.trials.empty and nothing.histories.empty


def test_without_results_parquet_the_table_is_rebuilt_from_run_records(fixture):
    (fixture.runs_dir / "grid-dropout" / "results.parquet").unlink()
    assert "grid-dropout" in find_studies(fixture.runs_dir)
    study = load_study(fixture.runs_dir, "grid-dropout")
    assert not isinstance(study, Missing)
    assert study.source == "run.json" and "results.parquet" in study.notes[0].what
    assert len(study.trials) == 6 and study.varied_keys == ["model.dropout"]
    row = study.trials.sort_values(["model.dropout", "seed"]).iloc[-1]
    assert row["trial"] == "model.dropout=0.2,seed=1"
    assert row["final/test/bpb"] == 2.71


def test_a_moved_runs_folder_still_finds_its_run_records(fixture, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.copytree(fixture.runs_dir, moved)
    shutil.rmtree(fixture.runs_dir)
    study = load_study(moved, "replicate")
    assert len(study.records) == 3 and study.notes == []
