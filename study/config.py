"""Compose the project's Hydra configs (experiments/) from command-line style overrides.

One entry point for every command and test; it never changes defaults that signatures depend on.
"""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import DictConfig, OmegaConf

from study.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "experiments"




def compose_config(overrides: list[str] | tuple[str, ...] = (), config_name: str = "config") -> DictConfig:
    """The resolved config for `overrides` (e.g. ["model=sashimi-2", "train.lr=0.002"])."""
    check_group_choices(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="study"):
            config = compose(config_name=config_name, overrides=list(overrides))
    except ConfigCompositionException as error:
        cause = error.__cause__ or error
        raise ConfigError(
            f"cannot compose the config from overrides {list(overrides)}: {cause}. "
            f"Available config groups: {config_groups()}"
        ) from error
    OmegaConf.resolve(config)
    return config


def config_groups() -> dict[str, list[str]]:
    """Available options for every config group, e.g. {'model': ['sashimi-2', 'sashimi-8'], ...}."""
    groups = {}
    for folder in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir()):
        groups[folder.name] = sorted(f.stem for f in folder.glob("*.yaml"))
    return groups


def check_group_choices(overrides) -> None:
    """Refuse a config group choice that is not one of the group's files (`experiment=../../x`,
    `data=../study/replicate`, a typo that `optional experiment` would silently skip)."""
    groups = config_groups()
    for override in overrides:
        key, separator, value = str(override).lstrip("+").partition("=")
        if separator and key in groups and value not in groups[key] and value != "null":
            raise ConfigError(f"{key}={value!r} is not one of the {key} configs: {', '.join(groups[key])} "
                              f"(files in {CONFIG_DIR / key}); pick one of those or add {CONFIG_DIR / key}/<name>.yaml")
