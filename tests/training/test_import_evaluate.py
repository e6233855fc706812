"""`study import` then `study evaluate` end to end on an official-layout checkpoint and the toy data."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from study.cli import main as cli
from study.data.dataset import WindowDataset
from study.data.prepare import find_prepared
from study.config import compose_config
from study.model_config import ModelConfig
from study.sashimi import SaShiMi
from study.training.checkpoint import load_model
from tests.training.official_fixture import official_state

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def toy_data(cache) -> list[str]:
    return ["data=toy-piano", "data.sample_len=1024", "data.toy_clips=24", "data.toy_clip_seconds=2",
            "data.clip_seconds=2", f"paths.data_cache={cache}", f"paths.downloads={cache / 'downloads'}"]


def test_import_then_evaluate_gives_the_workshop_table(tmp_path, capsys):
    torch.manual_seed(5)
    original = SaShiMi(ModelConfig(n_layers=1, d_model=8, d_state=8, l_max=1024, pool=[4, 4])).eval()
    source = tmp_path / "sashimi_toy.pt"
    torch.save(official_state(original), source)
    run = tmp_path / "imported"
    assert cli(["import", f"checkpoint={source}", f"out={run}", "data=toy-piano"]) == 0
    printed = capsys.readouterr().out
    assert "1 layers, d_model 8, pools [4, 4]" in printed and str(run) in printed
    record = json.loads((run / "run.json").read_text())
    assert record["status"] == "imported" and record["imported_from"]["layout"] == "v4"
    assert record["data_config"]["quantizer"] == "official" and record["data_config"]["sample_len"] == 1024
    model, payload = load_model(run / "checkpoints" / "best.pt")
    tokens = torch.randint(0, 256, (1, 1024))
    with torch.no_grad():
        assert torch.equal(model(tokens), original(tokens))

    cache = tmp_path / "cache"
    assert cli(["evaluate", f"checkpoint={run / 'checkpoints' / 'best.pt'}", "max_windows=3", *toy_data(cache)]) == 0
    printed = capsys.readouterr().out
    assert "quantizer official" in printed and "not like for like" not in printed
    record = json.loads((run / "run.json").read_text())
    (name, entry), = record["evaluations"].items()
    result = json.loads(open(entry["file"]).read())
    expected_keys = {f"final/{split}/{metric}" for split in ("val", "test")
                     for metric in ("loss", "bpb", "accuracy", "accuracy@3", "accuracy@5", "accuracy@10")}
    assert set(result["metrics"]) == expected_keys and result["windows"] == {"val": 3, "test": 3}
    # the loss equals a direct computation over the same windows with the original weights
    prepared = find_prepared(compose_config(toy_data(cache)).data, compose_config(toy_data(cache)).paths)
    assert prepared.fingerprint == result["data_fingerprint"]
    windows = WindowDataset(prepared, "val")
    inputs, targets = windows.__getitems__([0, 1, 2])
    with torch.no_grad():
        direct = F.cross_entropy(original(inputs).reshape(-1, 256), targets.reshape(-1)).item()
    assert result["metrics"]["final/val/loss"] == pytest.approx(direct, rel=1e-5)
    assert result["metrics"]["final/val/bpb"] == pytest.approx(direct / np.log(2), rel=1e-5)

    # the torchaudio tokens: another cache, marked as not like for like
    assert cli(["evaluate", f"checkpoint={run / 'checkpoints' / 'best.pt'}", "max_windows=3", "splits=[val]",
                *toy_data(cache), "data.quantizer=torchaudio"]) == 0
    assert "not like for like" in capsys.readouterr().out
    record = json.loads((run / "run.json").read_text())
    assert len(record["evaluations"]) == 2
    other = next(e for e in record["evaluations"].values() if e["quantizer"] == "torchaudio")
    assert other["data_fingerprint"] != result["data_fingerprint"] and set(other["metrics"]) == {
        key for key in expected_keys if key.startswith("final/val/")}


def test_import_and_evaluate_refuse_bad_input_in_one_line(tmp_path, capsys):
    foreign = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(2, 2)}, foreign)
    assert cli(["import", f"checkpoint={foreign}", f"out={tmp_path / 'x'}"]) == 2
    assert "'conv1.weight' has no counterpart" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert cli(["import"]) == 2
    assert "checkpoint=..." in capsys.readouterr().err
    assert cli(["evaluate", f"checkpoint={foreign}", "data=toy-piano"]) == 2
    assert "not a sashimi-study checkpoint" in capsys.readouterr().err
