"""An experiment from composed config: validated settings, the data it really uses, its signature
(run folder name) and the guard against mislabeled runs. Pure: it trains nothing.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from study.config import ConfigError, compose_config, data_preset, settings_from
from study.files import checked_name
from study.model_config import ModelConfig
from study.signature import signature
from study.training.settings import TrainSettings

__all__ = ["Experiment", "TrainSettings", "data_config_in_use", "check_labels", "experiment_from", "load_experiment"]


def data_config_in_use(config: DictConfig) -> DictConfig:
    """The data config a run really uses: with `data.use_stand_in` (smoke scale), the embedded
    stand-in named by `data.stand_in` takes the place of the source; every preprocessing knob
    the config sets is kept. Other keys are returned unchanged."""
    data = OmegaConf.to_container(config.data, resolve=True)
    use_stand_in, stand_in = data.pop("use_stand_in", False), data.pop("stand_in", None)
    if use_stand_in and stand_in and stand_in != data["name"]:
        source = data_preset(stand_in)
        for key in ("name", "source", "path", "repo_id", "filename", "seed", "warnings"):
            data[key] = getattr(source, key)
        data["warnings"] = list(source.warnings)
        data["stands_in_for"] = config.data.name
    return OmegaConf.create(data)


DATASET_WORDS = {"youtubemix": "youtubemix", "youtube-mix": "youtubemix", "bigband": "bigband",
                 "big-band": "bigband", "toy-piano": "toy-piano", "toy-trio": "toy-trio"}


def check_labels(config: DictConfig) -> None:
    """Refuse an experiment whose name or description claims a depth, dataset or sample rate
    that its resolved config contradicts (the public BigBand "8-layer" config set n_layers: 2)."""
    text = f"{config.get('name', '')} {config.get('description', '')}".lower()
    where = f"experiment {config.get('name')!r}"
    depths = {int(m) for m in re.findall(r"sashimi-(\d+)", text)}
    depths |= {int(m) for m in re.findall(r"\b(\d+)[- ]?layers?\b", text)}
    for depth in depths:
        if depth != config.model.n_layers:
            raise ConfigError(f"{where} claims {depth} layers but model.n_layers={config.model.n_layers}; "
                              "fix the name/description or the model config")
    data = data_config_in_use(config)
    actual = {data.name, data.get("stands_in_for")}
    for word, dataset in DATASET_WORDS.items():
        if re.search(rf"\b{re.escape(word)}\b", text) and dataset not in actual:
            raise ConfigError(f"{where} claims dataset {dataset} but uses data={data.name}; "
                              "fix the name/description or the data config")
    for number, unit in re.findall(r"\b(\d+(?:\.\d+)?)\s*(khz|hz)\b", text):
        rate = float(number) * (1000 if unit == "khz" else 1)
        if abs(rate - data.sample_rate) > 0.5:
            raise ConfigError(f"{where} claims {number} {unit} but data.sample_rate={data.sample_rate}; "
                              "fix the name/description or data.sample_rate")


@dataclass
class Experiment:
    config: DictConfig
    train: TrainSettings
    model: ModelConfig
    data: DictConfig            # the data config in use (stand-in resolved)
    signature: str

    @property
    def run_dir(self) -> Path:
        return Path(str(self.config.paths.runs)) / str(self.config.get("run_group", "train")) / self.signature


def experiment_from(config: DictConfig) -> Experiment:
    """Validate everything that can be checked before data or training start."""
    checked_name(config.get("run_group", "train"), "run_group",
                 "the run folder is <paths.runs>/<run_group>/<signature>, so run_group must be one folder name")
    settings = settings_from(config)
    check_labels(config)
    return Experiment(config=config, train=settings.train, model=settings.model, data=data_config_in_use(config),
                      signature=signature(config))


def load_experiment(overrides: list[str]) -> Experiment:
    return experiment_from(compose_config(overrides))
