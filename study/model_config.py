"""The `model` config group: ModelConfig (schema, defaults, checks) and the presets in experiments/model/.
It never builds a model, and reads the presets with PyYAML alone (no Hydra).
"""

from dataclasses import dataclass, field, fields
from pathlib import Path

from study import validation
from study.errors import ConfigError
from study.s4.layer import S4LayerSettings


@dataclass
class ModelConfig:
    """The `model` config group's schema and defaults (experiments/model/*.yaml override them).

    n_classes and l_max are not set by users: the root config derives them from data.bits and
    data.sample_len. Every value is checked in `__post_init__`.
    """

    name: str = "sashimi-8"
    n_layers: int = 8             # S4 + FF block pairs per stage (centre and each up stage)
    d_model: int = 64
    pool: list[int] = field(default_factory=lambda: [4, 4])
    expand: int = 2
    ff: int = 2
    dropout: float = 0.0
    norm: str = "transposed_ln"   # transposed_ln (official: scalar mean/scale) | layer_norm
    n_classes: int = 256          # 2 ** data.bits
    l_max: int = 131072           # training window (data.sample_len); layer reference lengths are l_max / pooling
    ssm_mode: str = "nplr"        # nplr (S4, DPLR) | diag (S4D)
    ssm_init: str = "legs"        # legs | diag-lin | diag-inv (diag mode)
    d_state: int = 64
    rank: int = 1
    dt_min: float = 0.001
    dt_max: float = 0.1
    dt_transform: str = "softplus"  # softplus | exp
    ssm_lr: float = 0.001         # learning rate of dt, A, B, P (no weight decay)
    final_act: str = "glu"        # glu | id (id: the paper-era parameter counts)
    kernel_backend: str = "auto"  # auto | torch | numba | triton
    checkpoint_blocks: bool = False  # recompute each residual block in backward: less memory, ~1/3 more time

    def __post_init__(self) -> None:
        validation.text("model.name", self.name, "sashimi-8")
        validation.integer("model.n_layers", self.n_layers, 8, minimum=1)
        validation.integer("model.d_model", self.d_model, 64, minimum=1)
        validation.integers("model.pool", self.pool, "[4,4]", minimum=1)
        self.pool = list(self.pool)
        validation.integer("model.expand", self.expand, 2, minimum=1)
        validation.integer("model.ff", self.ff, 2, minimum=0)  # 0: no feed-forward blocks
        validation.number("model.dropout", self.dropout, 0.1, minimum=0, below=1)
        validation.choice("model.norm", self.norm, ("transposed_ln", "layer_norm"))
        validation.integer("data.bits (model.n_classes = 2 ** data.bits)", self.n_classes, 256, minimum=2)
        validation.integer("data.sample_len (model.l_max)", self.l_max, 131072, minimum=1)
        if self.l_max % self.total_pool:
            raise ConfigError(
                f"data.sample_len={self.l_max} is not divisible by the total pooling factor {self.total_pool} "
                f"(model.pool={list(self.pool)}); use a multiple of {self.total_pool}, e.g. "
                f"data.sample_len={(self.l_max // self.total_pool + 1) * self.total_pool}")
        validation.choice("model.ssm_mode", self.ssm_mode, ("nplr", "diag"))
        validation.choice("model.ssm_init", self.ssm_init, ("legs", "diag-lin", "diag-inv"))
        if self.ssm_mode == "nplr" and self.ssm_init != "legs":
            raise ConfigError(f"model.ssm_init={self.ssm_init!r} with model.ssm_mode=nplr: the DPLR kernel "
                              "supports init=legs; use model.ssm_mode=diag for diag-lin / diag-inv")
        validation.integer("model.d_state", self.d_state, 64, minimum=2)
        if self.d_state % 2:
            raise ConfigError(f"model.d_state={self.d_state} must be even (conjugate pairs); e.g. model.d_state=64")
        validation.integer("model.rank", self.rank, 1, minimum=1)
        if self.ssm_mode == "nplr" and self.rank != 1:
            raise ConfigError(f"model.rank={self.rank}: HiPPO-LegS has a rank-1 correction; set model.rank=1")
        validation.number("model.dt_min", self.dt_min, 0.001, above=0)
        validation.number("model.dt_max", self.dt_max, 0.1, minimum=self.dt_min)
        validation.choice("model.dt_transform", self.dt_transform, ("softplus", "exp"))
        validation.number("model.ssm_lr", self.ssm_lr, 0.001, minimum=0)
        validation.choice("model.final_act", self.final_act, ("glu", "id"))
        validation.choice("model.kernel_backend", self.kernel_backend, ("auto", "torch", "numba", "triton"))
        validation.flag("model.checkpoint_blocks", self.checkpoint_blocks)

    @property
    def total_pool(self) -> int:
        total = 1
        for stride in self.pool:
            total *= stride
        return total

    def layer_settings(self) -> S4LayerSettings:
        return S4LayerSettings(mode=self.ssm_mode, init=self.ssm_init, d_state=self.d_state, rank=self.rank,
                               dt_min=self.dt_min, dt_max=self.dt_max, dt_transform=self.dt_transform,
                               lr=self.ssm_lr, final_act=self.final_act, dropout=self.dropout,
                               kernel_backend=self.kernel_backend)


MODEL_PRESETS_DIR = Path(__file__).resolve().parent.parent / "experiments" / "model"


def model_preset(name: str) -> ModelConfig:
    """ModelConfig of experiments/model/NAME.yaml: the ModelConfig defaults with that file's overrides.
    Reads the file with PyYAML only (no Hydra), so it works on a bare GPU machine too."""
    import yaml

    path = MODEL_PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        available = sorted(preset.stem for preset in MODEL_PRESETS_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown model preset {name!r}: use one of {available} (files in {MODEL_PRESETS_DIR})")
    values = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(values) - {f.name for f in fields(ModelConfig)})
    if unknown:
        raise ConfigError(f"{path}: unknown model keys {unknown}; the keys are ModelConfig's fields")
    return ModelConfig(**values)


def __getattr__(name: str):
    """`PRESETS`: {name: ModelConfig} of experiments/model/*.yaml, read when asked (the files hold them)."""
    if name == "PRESETS":
        return {preset.stem: model_preset(preset.stem) for preset in sorted(MODEL_PRESETS_DIR.glob("*.yaml"))}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
