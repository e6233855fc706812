"""The config schema: each default written once, every value checked by its dataclass before any work,
and any composed config either valid or refused with a ConfigError (property-based)."""

import math
from dataclasses import fields

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from analysis.sampling_search import SearchSettings
from study.command_args import parse_key_values
from study.config import CONFIG_DIR, StudyConfig, compose_config, default_values, model_preset, settings_from
from study.data.settings import DataSettings
from study.errors import ConfigError
from study.errors import GenerationError
from study.generation.command import GenerateConfig
from study.model_config import ModelConfig
from study.training.experiment import load_experiment
from study.training.settings import TrainSettings

GROUP_SCHEMAS = {"model": ModelConfig, "data": DataSettings, "train": TrainSettings}


def test_group_files_only_override_the_schema_defaults():
    defaults = default_values()
    for group, schema in GROUP_SCHEMAS.items():
        known = {f.name for f in fields(schema)}
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            written = OmegaConf.to_container(OmegaConf.load(path)) or {}
            assert set(written) <= known, path
            for key, value in written.items():
                assert defaults[f"{group}.{key}"] != value, f"{path} repeats the default {group}.{key}={value!r}"
    for group in ("scale", "experiment"):  # @package _global_ files override the root schema
        for path in sorted((CONFIG_DIR / group).glob("*.yaml")):
            written = OmegaConf.to_container(OmegaConf.load(path)) or {}
            flat = {}
            for key, value in written.items():
                if isinstance(value, dict):
                    flat.update({f"{key}.{inner}": v for inner, v in value.items()})
                elif key != "defaults":
                    flat[key] = value
            for key, value in flat.items():
                assert key in defaults, f"{path}: {key} is not a schema key"
                assert defaults[key] != value, f"{path} repeats the default {key}={value!r}"


def test_the_root_config_is_the_schema_with_the_chosen_groups():
    config = compose_config([])
    typed = settings_from(config)
    assert isinstance(typed, StudyConfig) and typed.model == model_preset("sashimi-8") == ModelConfig(l_max=131072)
    assert typed.train == TrainSettings() and typed.data.name == "toy-piano"
    assert (typed.model.n_classes, typed.model.l_max) == (2 ** typed.data.bits, typed.data.sample_len)
    smoke = settings_from(compose_config(["experiment=bigband-sashimi-2", "scale=smoke", "data.bits=10"]))
    assert smoke.model.n_layers == 2 and smoke.model.n_classes == 1024 and smoke.model.l_max == 4096


@pytest.mark.parametrize("override,message", [
    ("model.d_model=0", r"model.d_model=0 is not allowed \(an integer >= 1\); e.g. model.d_model=64"),
    ("model.pool=[4,0]", r"model.pool=\[4, 0\] is not allowed \(a list of integers >= 1\); e.g. model.pool=\[4,4\]"),
    ("model.n_layers=0", r"model.n_layers=0 is not allowed \(an integer >= 1\); e.g. model.n_layers=8"),
    ("model.dropout=1.0", r"model.dropout=1.0 is not allowed \(a finite number >= 0 and < 1\)"),
    ("model.d_state=15", r"model.d_state=15 must be even"),
    ("train.lr=nan", r"train.lr=nan is not allowed \(a finite number > 0\); e.g. train.lr=0.004"),
    ("train.lr=inf", r"train.lr=inf is not allowed \(a finite number > 0\); e.g. train.lr=0.004"),
    ("train.checkpoint_every_steps=0", r"train.checkpoint_every_steps=0 is not allowed \(an integer >= 1\)"),
    ("train.betas=[0.9]", r"train.betas=\[0.9\] is not allowed \(a list of 2 finite numbers"),
    ("train.lr=abc", r"Value 'abc' of type 'str' could not be converted to Float \(key train.lr; e.g. train.lr=0.004\)"),
    ("train.bogus=1", r"Key 'bogus' not in 'TrainSettings'"),
    ("data.bits=40", r"data.bits=40 is not allowed \(an integer >= 2 and <= 16\); e.g. data.bits=8"),
    ("data.split=[0.5,0.6,0.1]", r"data.split=\[0.5, 0.6, 0.1\] is not allowed \(three train/val/test fractions"),
    ("seed=-1", r"seed=-1 is not allowed \(an integer >= 0\)"),
    ("model.l_max=4096", r"are derived from data.bits=8 and data.sample_len=131072"),
    ("tracking.wandb=maybe", r"tracking.wandb='maybe' is not allowed \(one of offline, online, disabled\)"),
    ("train.lr=[1", r"cannot compose the config"),
])
def test_bad_values_are_refused_with_key_value_range_and_fix(override, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment([override])


def test_direct_construction_checks_the_same_ranges():
    with pytest.raises(ConfigError, match="model.n_layers=0"):
        ModelConfig(n_layers=0)
    with pytest.raises(ConfigError, match="train.lr=nan"):
        TrainSettings(lr=math.nan)
    with pytest.raises(ConfigError, match="data.source='ftp'"):
        DataSettings(name="x", source="ftp")
    assert TrainSettings(betas=[0.5, 0.6]).betas == (0.5, 0.6)


def test_key_value_settings_validate_in_post_init():
    with pytest.raises(ConfigError, match=r"trials=0 is not allowed \(an integer >= 1\); e.g. trials=12"):
        parse_key_values(SearchSettings, ["trials=0"], "search-sampling")
    with pytest.raises(ConfigError, match=r"top_p_max=2.0 is not allowed"):
        SearchSettings(top_p_max=2.0)
    with pytest.raises(GenerationError, match=r"prompt_seconds=-1.0 must be > 0"):
        parse_key_values(GenerateConfig, ["checkpoint=x.pt", "prompt_seconds=-1"], "generate")
    with pytest.raises(GenerationError, match=r"prompt_windows=0 must be >= 1"):
        GenerateConfig(checkpoint="x.pt", prompt_windows=0)
    assert parse_key_values(SearchSettings, ["trials=3", "sampler=grid"], "search-sampling").trials == 3


# -- property: every composed config validates or is refused with a ConfigError --------------------
KEYS = sorted(key for key in default_values() if not key.startswith(("paths.", "ray.address")))
GROUPS = {group: sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))
          for group in ("model", "data", "train", "scale", "experiment")}
TEXT = st.sampled_from(["a", "toy-piano", "plateau", "legs", "diag", "x y", "'quoted'", "${nope}", "[", "=", "null"])
SCALAR = st.one_of(
    st.integers(min_value=-3, max_value=300_000).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(lambda x: repr(float(x))),
    st.sampled_from(["true", "false", "null"]), TEXT,
)
VALUE = st.one_of(SCALAR, st.lists(st.integers(min_value=-1, max_value=8), max_size=4).map(
    lambda items: "[" + ",".join(map(str, items)) + "]"),
    st.lists(st.floats(min_value=-0.5, max_value=1.5), min_size=1, max_size=4).map(
    lambda items: "[" + ",".join(map(repr, items)) + "]"))
OVERRIDE = st.one_of(
    st.tuples(st.sampled_from(KEYS), VALUE).map(lambda pair: f"{pair[0]}={pair[1]}"),
    st.sampled_from(sorted(GROUPS)).flatmap(
        lambda group: st.sampled_from(GROUPS[group] + ["nope"]).map(lambda choice: f"{group}={choice}")),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow],
          phases=[Phase.explicit, Phase.generate], database=None)  # no shrinking: a failure prints as drawn
@given(overrides=st.lists(OVERRIDE, min_size=1, max_size=3))
def test_any_overrides_validate_or_raise_config_error(overrides):
    try:
        experiment = load_experiment(overrides)
    except ConfigError as error:
        assert str(error)  # refused with a message, never another exception
        return
    typed = settings_from(experiment.config)  # what was accepted is a checked config
    assert typed.model.l_max == typed.data.sample_len and typed.model.l_max % typed.model.total_pool == 0
    assert math.isfinite(typed.train.lr) and typed.train.lr > 0
    assert len(experiment.signature) == 12

