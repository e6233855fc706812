"""An experiment from composed config: validated training settings, the data it really uses, its
signature (run folder name) and the guard against mislabeled runs. Pure: it trains nothing.
"""

import hashlib
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from study.config import CONFIG_DIR, ConfigError, compose_config
from study.files import checked_name
from study.sashimi import ModelConfig, model_config_from

# Keys that do not change a run's results: left out of its signature, so that moving outputs,
# switching trackers or renaming an experiment finds the same run folder.
SIGNATURE_EXCLUDED = ("paths", "tracking", "run_group", "name", "description", "train.device",
                      "train.log_every_steps", "train.checkpoint_every_steps", "train.num_workers",
                      "train.progress", "model.kernel_backend", "ray")


@dataclass
class TrainSettings:
    """The `train` config group, type-checked. Defaults are the official YouTubeMix recipe."""
    lr: float = 0.004
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.999)
    batch_size: int = 1
    max_epochs: int = 1000
    max_steps_per_epoch: int | None = None   # cap on optimizer steps per epoch (smoke scale)
    max_eval_windows: int | None = None      # cap on windows per val/test evaluation (smoke scale)
    schedule: str = "plateau"                # plateau (official) | cosine (with warmup) | constant
    plateau_factor: float = 0.2
    plateau_patience: int = 20
    warmup_steps: int = 0
    min_lr: float = 0.0
    gradient_clip: float | None = None
    exempt_decoder_bias: bool = False        # deviation: no weight decay on the decoder bias (official: decayed)
    precision: str = "fp32"                  # fp32 | bf16 (autocast, CUDA only)
    compile: bool = False
    device: str = "auto"                     # auto | cpu | cuda
    deterministic: bool = True
    checkpoint_every_steps: int = 100        # mid-epoch `last` checkpoints, for preemption
    log_every_steps: int = 50
    init_from: str | None = None             # checkpoint path or run signature to start from
    num_workers: int = 0
    progress: str = "auto"                   # auto (bar on a terminal, log lines otherwise) | bar | log

    def validate(self) -> None:
        positive = {"lr": self.lr, "batch_size": self.batch_size, "max_epochs": self.max_epochs}
        for name, value in positive.items():
            if value <= 0:
                raise ConfigError(f"train.{name}={value} must be positive")
        if self.weight_decay < 0:
            raise ConfigError(f"train.weight_decay={self.weight_decay} must be >= 0")
        if self.schedule not in ("plateau", "cosine", "constant"):
            raise ConfigError(f"train.schedule={self.schedule!r} is unknown: use plateau, cosine or constant")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"train.precision={self.precision!r} is unknown: use fp32 or bf16")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"train.device={self.device!r} is unknown: use auto, cpu or cuda")
        if self.gradient_clip is not None and self.gradient_clip <= 0:
            raise ConfigError(f"train.gradient_clip={self.gradient_clip} must be positive or null")
        for name in ("max_steps_per_epoch", "max_eval_windows"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"train.{name}={value} must be positive or null")


def _coerce(name: str, value, annotation):
    """Check a config value against a TrainSettings field type; ints are accepted as floats."""
    text = str(annotation)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"train.{name} must not be null")
    if "float" in text and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if "int" in text and isinstance(value, int) and not isinstance(value, bool):
        return value
    if "bool" in text and isinstance(value, bool):
        return value
    if "str" in text and isinstance(value, str):
        return value
    if "tuple" in text and isinstance(value, (list, tuple)):
        return tuple(value)
    raise ConfigError(f"train.{name}={value!r} has the wrong type: expected {text.replace('typing.', '')}")


def train_settings_from(config: DictConfig) -> TrainSettings:
    values = OmegaConf.to_container(config.train, resolve=True)
    known = {f.name: f for f in fields(TrainSettings)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown train keys {unknown}; known: {sorted(known)}")
    settings = TrainSettings(**{name: _coerce(name, value, known[name].type) for name, value in values.items()})
    settings.validate()
    return settings


def data_config_in_use(config: DictConfig) -> DictConfig:
    """The data config a run really uses: with `data.use_stand_in` (smoke scale), the embedded
    stand-in named by `data.stand_in` takes the place of the source; every preprocessing knob
    the config sets is kept. Other keys are returned unchanged."""
    data = OmegaConf.to_container(config.data, resolve=True)
    use_stand_in, stand_in = data.pop("use_stand_in", False), data.pop("stand_in", None)
    if use_stand_in and stand_in and stand_in != data["name"]:
        source = OmegaConf.to_container(OmegaConf.load(CONFIG_DIR / "data" / f"{stand_in}.yaml"), resolve=True)
        for key in ("name", "source", "path", "repo_id", "filename", "seed", "warnings"):
            data[key] = source.get(key)
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


def _without(container: dict, dotted: str) -> None:
    head, _, rest = dotted.partition(".")
    if head in container:
        if rest:
            if isinstance(container[head], dict):
                _without(container[head], rest)
        else:
            del container[head]


def signature(config: DictConfig, length: int = 12) -> str:
    """sha256 of the canonical JSON of the resolved config minus SIGNATURE_EXCLUDED, first `length` hex."""
    container = OmegaConf.to_container(config, resolve=True)
    for dotted in SIGNATURE_EXCLUDED:
        _without(container, dotted)
    canonical = json.dumps(container, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


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
                 f"the run folder is <paths.runs>/<run_group>/<signature>, so run_group must be one folder name")
    try:
        train = train_settings_from(config)
        model = model_config_from({"model": config.model, "data": config.data})
        check_labels(config)
    except ValueError as error:
        raise ConfigError(str(error)) from error
    return Experiment(config=config, train=train, model=model, data=data_config_in_use(config),
                      signature=signature(config))


def load_experiment(overrides: list[str]) -> Experiment:
    return experiment_from(compose_config(overrides))
