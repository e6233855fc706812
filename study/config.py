"""The config schema (one dataclass per group, registered in Hydra's ConfigStore) and its composition
from the override files in experiments/.

Each default is written once, in a dataclass; YAML files only override. Every value is checked once,
by its dataclass's `__post_init__`, when `settings_from` builds the typed config; nothing here trains.
"""

from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from study import validation
from study.config_groups import CONFIG_DIR, config_groups  # noqa: F401 - part of this module's API
from study.data.settings import DataSettings
from study.errors import ConfigError
from study.records import flatten
from study.model_config import ModelConfig, model_preset  # noqa: F401 - model_preset is part of this module's API
from study.training.settings import TrainSettings

SCHEMA_NAME = "schema"   # experiments/config.yaml lists it first in its defaults


@dataclass
class RaySettings:
    """How `study run` schedules trials (never part of a run's signature)."""
    address: str | None = "${oc.env:RAY_ADDRESS,null}"  # an existing cluster, e.g. ray://head:10001 or auto
    storage: str | None = None      # Ray's results: a shared path or a pyarrow URI (s3://, gs://); default <runs>/<study>/ray
    gpus_per_trial: float = 1
    cpus_per_trial: float = 4
    max_concurrent_trials: int | None = None
    max_failures: int = 2           # retries of a failing trial, each from its last checkpoint

    def __post_init__(self) -> None:
        validation.text("ray.address", self.address, "auto", optional=True)
        validation.text("ray.storage", self.storage, "/shared/ray", optional=True)
        validation.number("ray.gpus_per_trial", self.gpus_per_trial, 1, minimum=0)
        validation.number("ray.cpus_per_trial", self.cpus_per_trial, 4, above=0)
        validation.integer("ray.max_concurrent_trials", self.max_concurrent_trials, 2, minimum=1, optional=True)
        validation.integer("ray.max_failures", self.max_failures, 2, minimum=0)


@dataclass
class TrackingSettings:
    wandb: str = "offline"          # offline | online | disabled
    project: str = "sashimi-study"
    group: str | None = None        # default: run_group
    log_audio_seconds: float = 1.0  # an unconditional sample from the best checkpoint; 0 logs none

    def __post_init__(self) -> None:
        validation.choice("tracking.wandb", self.wandb, ("offline", "online", "disabled"))
        validation.text("tracking.project", self.project, "sashimi-study")
        validation.text("tracking.group", self.group, "null", optional=True)
        validation.number("tracking.log_audio_seconds", self.log_audio_seconds, 1.0, minimum=0)


@dataclass
class PathSettings:
    data_cache: str = "${oc.env:STUDY_DATA_CACHE,data/cache}"
    downloads: str = "${oc.env:STUDY_DOWNLOADS,data/downloads}"
    runs: str = "${oc.env:STUDY_RUNS,runs}"

    def __post_init__(self) -> None:
        for key in ("data_cache", "downloads", "runs"):
            validation.text(f"paths.{key}", getattr(self, key), f"/tmp/{key}")


@dataclass
class StudyConfig:
    """The root config: the groups (model, data, train) and the run's bookkeeping."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataSettings = MISSING    # every data file sets data.name and data.source
    train: TrainSettings = field(default_factory=TrainSettings)
    name: str = "${data.name}-${model.name}"
    description: str = ""
    seed: int = 0
    run_group: str = "train"        # runs land in <paths.runs>/<run_group>/<signature>/ (a study sets its name)
    scale_name: str = "full"        # full (the paper's settings) | smoke (set by scale=smoke)
    ray: RaySettings = field(default_factory=RaySettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    paths: PathSettings = field(default_factory=PathSettings)

    def __post_init__(self) -> None:
        validation.text("name", self.name, "my-experiment")
        validation.text("description", self.description, "''")
        validation.integer("seed", self.seed, 0, minimum=0)
        validation.text("run_group", self.run_group, "train")
        validation.text("scale_name", self.scale_name, "full")
        if self.model.n_classes != 2 ** self.data.bits or self.model.l_max != self.data.sample_len:
            raise ConfigError(f"model.n_classes={self.model.n_classes} and model.l_max={self.model.l_max} are "
                              f"derived from data.bits={self.data.bits} and data.sample_len={self.data.sample_len}; "
                              "do not set them, set data.bits=8 or data.sample_len=131072 instead")


def schema() -> DictConfig:
    """The root schema with its defaults; model.n_classes and model.l_max follow the data group."""
    root = OmegaConf.structured(StudyConfig)
    root.model.n_classes = "${study_levels:${data.bits}}"
    root.model.l_max = "${data.sample_len}"
    return root


if not OmegaConf.has_resolver("study_levels"):
    OmegaConf.register_new_resolver("study_levels", lambda bits: 2 ** int(bits))
ConfigStore.instance().store(name=SCHEMA_NAME, node=schema())


def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """The resolved config for `overrides` (e.g. ["model=sashimi-2", "train.lr=0.002"]), types checked
    against the schema; ranges are checked by `settings_from`."""
    check_group_choices(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="study"):
            config = compose(config_name=config_name, overrides=list(overrides))
        OmegaConf.resolve(config)
    except HydraException as error:  # composition, override syntax, missing group option
        cause = error.__cause__ or error
        raise ConfigError(
            f"cannot compose the config from overrides {list(overrides)}: {first_line(cause)}. "
            f"Available config groups: {config_groups()}"
        ) from error
    except OmegaConfBaseException as error:
        raise validation.omegaconf_error(error, "") from error
    return config


def first_line(error: BaseException) -> str:
    """Hydra's or OmegaConf's first line, with the key and an example value from the schema."""
    lines = str(error).strip().splitlines()
    detail = lines[0] if lines else type(error).__name__
    key = getattr(error, "full_key", None)
    if not key:
        return detail
    default = default_values().get(str(key))
    example = f"; e.g. {key}={default}" if default is not None and default != MISSING else ""
    return f"{detail} (key {key}{example})"


def default_values() -> dict:
    """Every schema key's default, flattened ('???' where a group file must set it, e.g. data.name)."""
    root = OmegaConf.structured(StudyConfig)
    root.data = OmegaConf.structured(DataSettings)
    return flatten(OmegaConf.to_container(root, resolve=False, throw_on_missing=False))


def settings_from(config: DictConfig) -> StudyConfig:
    """The typed, range-checked config: raises ConfigError naming the first bad key, its value,
    what is allowed and an example fix."""
    return validation.build(StudyConfig, config, "")


def data_preset(name: str) -> DataSettings:
    """DataSettings of experiments/data/NAME.yaml (schema defaults + that file's overrides)."""
    path = CONFIG_DIR / "data" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown data config {name!r}: use one of {config_groups()['data']}")
    return validation.build(DataSettings, OmegaConf.load(path), "data")


def check_group_choices(overrides) -> None:
    """Refuse a config group choice that is not one of the group's files (`experiment=../../x`,
    `data=../study/replicate`, a typo that `optional experiment` would silently skip)."""
    groups = config_groups()
    for override in overrides:
        key, separator, value = str(override).lstrip("+").partition("=")
        if separator and key in groups and value not in groups[key] and value != "null":
            raise ConfigError(f"{key}={value!r} is not one of the {key} configs: {', '.join(groups[key])} "
                              f"(files in {CONFIG_DIR / key}); pick one of those or add {CONFIG_DIR / key}/<name>.yaml")
