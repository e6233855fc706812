"""The data config group: override files onto one schema (DataSettings), official defaults, and
composition via Hydra."""

from dataclasses import fields
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from study.config import compose_config, data_preset
from study.errors import ConfigError
from study.data.settings import DataSettings

DATA_DIR = Path(__file__).resolve().parents[2] / "experiments" / "data"
NAMES = ("youtubemix", "bigband", "folder", "toy-piano", "toy-trio")
OFFICIAL = {"sample_rate": 16000, "clip_seconds": 60, "split": (0.88, 0.06, 0.06), "sample_len": 131072,
            "bits": 8, "quantization": "mu-law", "normalization": "minmax", "quantizer": "official"}


def test_every_data_config_overrides_the_schema_and_keeps_official_preprocessing():
    assert sorted(p.stem for p in DATA_DIR.glob("*.yaml")) == sorted(NAMES)
    known = {f.name for f in fields(DataSettings)}
    for name in NAMES:
        written = OmegaConf.to_container(OmegaConf.load(DATA_DIR / f"{name}.yaml"))
        assert {"name", "source"} <= set(written) <= known, name  # overrides only, of schema keys
        assert not set(written) & set(OFFICIAL), f"{name} repeats a default of DataSettings"
        settings = data_preset(name)
        assert settings.name == name
        assert {key: getattr(settings, key) for key in OFFICIAL} == OFFICIAL, name
        assert settings.toy_clips >= 24 and settings.toy_clip_seconds == 60


def test_hub_configs_point_at_the_published_archives():
    youtubemix = OmegaConf.load(DATA_DIR / "youtubemix.yaml")
    bigband = OmegaConf.load(DATA_DIR / "bigband.yaml")
    assert (youtubemix.source, youtubemix.repo_id, youtubemix.filename) == ("hub", "krandiash/youtubemix", "youtube_mix.zip")
    assert (bigband.source, bigband.repo_id, bigband.filename) == ("hub", "galbezalel/youtube_bigband",
                                                                   "youtube_bigband_mono.zip")
    assert any("samplernn-pytorch/issues/47" in text for text in youtubemix.warnings)


@pytest.mark.parametrize("name", NAMES)
def test_root_config_composes_with_each_data_choice(name):
    config = compose_config([f"data={name}", "data.sample_rate=8000"])
    assert config.data.name == name and config.data.sample_rate == 8000
    assert {"data_cache", "downloads"} <= set(config.paths)


def test_quantizer_is_checked_and_part_of_the_run_signature():
    from study.training.experiment import load_experiment
    official = load_experiment(["data=toy-piano"])
    assert official.data.quantizer == "official"
    other = load_experiment(["data=toy-piano", "data.quantizer=torchaudio"])
    assert other.signature != official.signature
    with pytest.raises(ConfigError, match=r"data.quantizer='nearest' is not allowed \(one of official, torchaudio\); e.g. data.quantizer=official"):
        DataSettings.from_config(compose_config(["data=toy-piano", "data.quantizer=nearest"]).data)
