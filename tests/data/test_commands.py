"""`study data prepare|info` and `study bench data` through study.cli.main with composed Hydra configs."""

import json

import pytest

from study.cli import main
from study.bench import data as bench

SMALL_OVERRIDES = ["data.toy_clips=5", "data.toy_clip_seconds=2", "data.sample_len=4096", "data.split=[0.6,0.2,0.2]"]


def overrides(tmp_path, *extra):
    return [*extra, *SMALL_OVERRIDES, f"paths.data_cache={tmp_path}/cache", f"paths.downloads={tmp_path}/downloads"]


def test_prepare_prints_a_summary_and_info_prints_the_manifest(tmp_path, capsys):
    assert main(["data", "prepare", *overrides(tmp_path, "data=toy-trio")]) == 0
    out = capsys.readouterr().out
    assert "toy-trio: prepared" in out and str(tmp_path / "cache" / "toy-trio-") in out
    assert "train" in out and "val" in out and "test" in out and "skipped 0 files" in out
    assert main(["data", "prepare", *overrides(tmp_path, "data=toy-trio")]) == 0
    assert "toy-trio: reused" in capsys.readouterr().out
    assert main(["data", "info", *overrides(tmp_path, "data=toy-trio")]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["name"] == "toy-trio" and manifest["splits"]["train"]["files"] == 3
    folder = tmp_path / "cache" / f"toy-trio-{manifest['fingerprint'][:12]}"
    assert json.loads((folder / "manifest.json").read_text()) == manifest


def test_overrides_reach_preparation(tmp_path, capsys):
    assert main(["data", "prepare", *overrides(tmp_path, "data=toy-piano", "data.sample_rate=8000",
                                               "data.quantization=linear", "data.bits=6")]) == 0
    out = capsys.readouterr().out
    assert "8000 Hz, linear 6 bits" in out


@pytest.mark.parametrize("argv, message", [
    (["data", "info", "data=toy-piano"], "not prepared with these settings"),
    (["data", "prepare", "data=folder"], "data.path=/path/to/music"),
    (["data", "prepare", "data=toy-piano", "data.bits=40"], "data.bits=8"),
    (["data", "prepare", "data=toy-piano", "data.split=[0.9,0.05,0.05]", "data.toy_clips=3"], "val split has 0 files"),
    (["data", "prepare", "data=no-such-dataset"], "is not one of the data configs"),
])
def test_user_errors_print_the_message_and_return_2(tmp_path, capsys, argv, message):
    status = main([*argv[:2], *overrides(tmp_path), *argv[2:]])
    captured = capsys.readouterr()
    assert status == 2
    assert message in captured.err
    assert "Traceback" not in captured.err + captured.out


def test_usage_and_unknown_subcommand(capsys):
    assert main(["data"]) == 0 and "study data <prepare|info>" in capsys.readouterr().out
    assert main(["data", "frobnicate"]) == 2 and "unknown command 'frobnicate'" in capsys.readouterr().err


def test_bench_data_reports_both_throughputs(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(bench, "LOADER_SECONDS", 0.2)
    assert main(["bench", "data", *SMALL_OVERRIDES, f"paths.downloads={tmp_path}/downloads"]) == 0
    out = capsys.readouterr().out
    assert "h of audio per minute" in out and "windows/s" in out and "nothing written" in out
