"""Signatures as config deltas: pinned for every shipped experiment and study trial, blind to the keys
that do not change results and to keys added with a default, and runs named by the earlier scheme
found and renamed."""

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

import study.studies as studies
from study.config import compose_config
from study.migrate import adopt_moved_run, main as migrate_main, migrate_runs
from study.records import RESULTS_FILE, RUN_RECORD_FILE, SIGNATURE_EXCLUDED
from study.signature import config_delta, signature
from study.training.experiment import load_experiment
from study.training.loop import Run

LEGACY = json.loads((Path(__file__).parent / "training" / "legacy_run_config.json").read_text())

# A change here renames run folders: only change a default or the exclusions on purpose, and say so.
EXPERIMENTS = {
    ("bigband-sashimi-2", "full"): "f01c0b3f7498", ("bigband-sashimi-8", "full"): "87c5334d2a9d",
    ("youtubemix-sashimi-8", "full"): "208815f851ae", ("bigband-sashimi-2", "smoke"): "381d62ef5532",
    ("bigband-sashimi-8", "smoke"): "a5cfd81819b4", ("youtubemix-sashimi-8", "smoke"): "7fe750e34b62",
}
TRIALS = {
    "ablation": {"full": ["87c5334d2a9d", "f01c0b3f7498"], "smoke": ["a5cfd81819b4", "381d62ef5532"]},
    "grid-dropout": {"full": ["f01c0b3f7498", "df0f5d1d8931", "7dbd443629d6", "a71195f920f9"],
                     "smoke": ["381d62ef5532", "0bb1ba62cd69", "75561e64aa7a", "dc958bb1bf28"]},
    "grid-lr": {"full": ["9a031871d750", "dcb4daff781e", "f01c0b3f7498", "6fbb2ba695da"],
                "smoke": ["0a521f93652e", "33065d6975fa", "381d62ef5532", "1ae3db566f67"]},
    "grid-sample-rate": {"full": ["c90c3727d63f", "f01c0b3f7498", "b12d831d59f8"],
                         "smoke": ["ebd0de9f0a75", "381d62ef5532", "6f767c6a3261"]},
    "grid-weight-decay": {"full": ["f01c0b3f7498", "0434a6659f41", "79f005cef245", "06eaf2e81cd6"],
                          "smoke": ["381d62ef5532", "af1f67ad811f", "3ae3c058561e", "d04169a60cd0"]},
    "replicate": {"full": ["208815f851ae"], "smoke": ["7fe750e34b62"]},
    "transfer": {"full": ["87c5334d2a9d", "7616852634ff"], "smoke": ["a5cfd81819b4", "072e229eff61"]},
}


@pytest.mark.parametrize("experiment,scale", sorted(EXPERIMENTS))
def test_shipped_experiment_signatures_are_pinned(experiment, scale):
    assert load_experiment([f"experiment={experiment}", f"scale={scale}"]).signature == EXPERIMENTS[experiment, scale]


@pytest.mark.parametrize("name", sorted(TRIALS))
def test_study_trial_signatures_are_pinned(name, tmp_path, monkeypatch):
    assert sorted(TRIALS) == studies.available_studies()
    monkeypatch.setattr(studies, "resolve_study_references", lambda overrides, runs_root: overrides)  # keep study:NAME
    for scale, expected in TRIALS[name].items():
        trials = studies.plan_trials(studies.load_study(name), [f"scale={scale}", f"paths.runs={tmp_path}"])
        assert [trial.experiment.signature for trial in trials] == expected, scale


def test_signature_is_the_hash_of_the_delta_from_the_defaults():
    config = compose_config(["experiment=bigband-sashimi-2"])
    assert config_delta(config) == {"data.filename": "youtube_bigband_mono.zip", "data.name": "bigband",
                                    "data.repo_id": "galbezalel/youtube_bigband", "data.source": "hub",
                                    "data.stand_in": "toy-trio", "model.n_layers": 2, "model.name": "sashimi-2"}
    stated = compose_config(["experiment=bigband-sashimi-2", "train.lr=0.004", "model.d_model=64"])
    assert signature(stated) == signature(config)  # a default written out is no difference
    assert signature(compose_config(["experiment=bigband-sashimi-2", "train.lr=0.002"])) != signature(config)


@pytest.mark.parametrize("override", ["model.checkpoint_blocks=true", "model.kernel_backend=torch",
                                      "train.device=cpu", "train.log_every_steps=7", "train.checkpoint_every_steps=3",
                                      "train.num_workers=2", "train.progress=log", "paths.runs=/elsewhere",
                                      "tracking.wandb=disabled", "ray.gpus_per_trial=0", "run_group=other",
                                      "name=renamed", "description=anything"])
def test_keys_that_do_not_change_results_are_left_out(override):
    assert any(override.startswith(key) for key in SIGNATURE_EXCLUDED)
    assert signature(compose_config([override])) == signature(compose_config([]))


def test_a_key_added_with_its_default_keeps_existing_signatures():
    config = OmegaConf.to_container(compose_config(["scale=smoke"]), resolve=True)
    before_the_key = copy.deepcopy(config)
    del before_the_key["train"]["min_lr"], before_the_key["data"]["stands_in_for"]  # as recorded before they existed
    assert signature(before_the_key) == signature(config)


def test_a_record_of_the_earlier_scheme_maps_to_todays_signature():
    today = compose_config(["experiment=bigband-sashimi-2", "scale=smoke"])
    assert signature(LEGACY["config"]) == signature(today) == "381d62ef5532"
    assert LEGACY["legacy_signature"] == "6ec8242c63e9"  # the folder name that record was written under


def write_legacy_run(runs: Path, status: str = "finished") -> Path:
    folder = runs / "ablation" / LEGACY["legacy_signature"]
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "best.pt").write_bytes(b"weights")
    record = {"status": status, "signature": LEGACY["legacy_signature"], "config": LEGACY["config"]}
    (folder / RUN_RECORD_FILE).write_text(json.dumps(record))
    pd.DataFrame([{"study": "ablation", "trial": "experiment=bigband-sashimi-2,seed=0",
                   "signature": folder.name, "run_dir": str(folder), "status": status,
                   "checkpoint": str(folder / "checkpoints" / "best.pt")}]).to_parquet(runs / "ablation" / RESULTS_FILE)
    return folder


def test_migrate_runs_renames_folders_and_updates_records_and_results(tmp_path, capsys):
    old = write_legacy_run(tmp_path)
    new = old.parent / "381d62ef5532"
    assert migrate_main([f"runs={tmp_path}", "dry_run=true"]) == 0 and old.is_dir()
    assert migrate_main([f"runs={tmp_path}"]) == 0
    assert not old.exists() and (new / "checkpoints" / "best.pt").is_file()
    record = json.loads((new / RUN_RECORD_FILE).read_text())
    assert record["signature"] == new.name and record["previous_signatures"] == [old.name]
    table = pd.read_parquet(tmp_path / "ablation" / RESULTS_FILE)
    assert list(table.signature) == [new.name] and list(table.run_dir) == [str(new)]
    assert list(table.checkpoint) == [str(new / "checkpoints" / "best.pt")]
    assert migrate_runs(tmp_path) == ([], [])  # nothing left to do
    write_legacy_run(tmp_path / "again")  # a second copy whose target exists is kept, not merged
    (tmp_path / "again" / "ablation" / new.name).mkdir()
    moved, refused = migrate_runs(tmp_path / "again")
    assert moved == [] and len(refused) == 1 and refused[0].source.is_dir()
    assert "would rename" in capsys.readouterr().out


def test_a_run_under_its_earlier_signature_is_found_by_train_and_run(tmp_path):
    old = write_legacy_run(tmp_path)
    experiment = load_experiment(["experiment=bigband-sashimi-2", "scale=smoke", "run_group=ablation",
                                  f"paths.runs={tmp_path}"])
    assert experiment.signature == "381d62ef5532" and not experiment.run_dir.exists()
    record = Run(experiment).execute()  # finds the finished run: nothing is trained
    assert record["status"] == "finished" and experiment.run_dir.is_dir() and not old.exists()
    assert adopt_moved_run(experiment.run_dir) is None
