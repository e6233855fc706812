"""SaShiMi: the multi-scale S4 autoregressive waveform model of Goel et al. 2022, as in the official code.

Reads top to bottom: config, norms, residual blocks, pooling, backbone, token model, presets.
`forward` (parallel) and `step` (one sample) live together and must give the same logits.
"""

from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from study import validation
from study.errors import ConfigError
from study.s4.layer import ChannelLinear, S4Block, S4LayerSettings, mark_optim


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
        validation.integer("model.ff", self.ff, 2, minimum=1)
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


# -- norms ------------------------------------------------------------------------------------------
class TransposedLN(nn.Module):
    """The official scalar channel norm on (B, H, ...): y = s / std_H(x) * (x - mean_H(x) + m).

    Scalars m, s are learned (no weight decay); std is the biased standard deviation over H.
    """

    def __init__(self):
        super().__init__()
        self.m = mark_optim(nn.Parameter(torch.zeros(1)), weight_decay=0.0)
        self.s = mark_optim(nn.Parameter(torch.ones(1)), weight_decay=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        std, mean = torch.std_mean(x, dim=1, unbiased=False, keepdim=True)
        return (self.s / std) * (x - mean + self.m)


class ChannelLayerNorm(nn.Module):
    """Full LayerNorm over the channel axis of (B, H, ...), with per-channel scale and shift."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        for parameter in self.norm.parameters():
            mark_optim(parameter, weight_decay=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, -1)).transpose(1, -1)


def make_norm(kind: str, channels: int) -> nn.Module:
    return TransposedLN() if kind == "transposed_ln" else ChannelLayerNorm(channels)


# -- residual blocks ---------------------------------------------------------------------------------
class FeedForward(nn.Module):
    """H -> ff*H (GELU) -> dropout -> H, on (B, H, L) or (B, H)."""

    def __init__(self, channels: int, expand: int, dropout: float):
        super().__init__()
        self.linear_in = ChannelLinear(channels, expand * channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.linear_out = ChannelLinear(expand * channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_out(self.dropout(F.gelu(self.linear_in(x))))


class ResidualBlock(nn.Module):
    """Prenorm residual: x + layer(norm(x)). The layer is an S4Block (stateful) or FeedForward."""

    def __init__(self, layer: nn.Module, norm: nn.Module):
        super().__init__()
        self.norm, self.layer = norm, layer
        self.stateful = isinstance(layer, S4Block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer(self.norm(x))

    def step(self, x: torch.Tensor, memory, params):
        y = self.norm(x.unsqueeze(-1)).squeeze(-1)
        if self.stateful:
            y, memory = self.layer.step(y, memory, params)
        else:
            y = self.layer(y)
        return x + y, memory


# -- pooling -----------------------------------------------------------------------------------------
class DownPool(nn.Module):
    """(B, H, L*s) -> regroup (B, H*s, L) -> weight-normed linear -> (B, H_out, L).

    Step mode buffers `stride` inputs and emits one output when the group is full.
    """

    def __init__(self, channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.linear = ChannelLinear(channels * stride, out_channels, weight_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        x = x.view(batch, channels, length // self.stride, self.stride).transpose(2, 3)
        return self.linear(x.reshape(batch, channels * self.stride, length // self.stride))

    def step(self, x: torch.Tensor, buffer: list) -> tuple[torch.Tensor | None, list]:
        buffer = buffer + [x]
        if len(buffer) < self.stride:
            return None, buffer
        grouped = torch.stack(buffer, dim=-1).flatten(1)  # (B, H*s), h major
        return self.linear(grouped), []


class UpPool(nn.Module):
    """(B, H_in, L) -> linear to H_out*s -> shift right one pooled step (causal) -> (B, H_out, L*s).

    Step mode emits the buffered outputs of the previous group, one per sample, and refills the
    buffer from the coarse input when it runs out.
    """

    def __init__(self, channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride, self.out_channels = stride, out_channels
        self.linear = ChannelLinear(channels, out_channels * stride, weight_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear(x)
        x = F.pad(x[..., :-1], (1, 0))
        batch, _, length = x.shape
        x = x.view(batch, self.out_channels, self.stride, length).transpose(2, 3)
        return x.reshape(batch, self.out_channels, length * self.stride)

    def initial_buffer(self, batch_size: int, device) -> list:
        return [torch.zeros(batch_size, self.out_channels, device=device) for _ in range(self.stride)]

    def step(self, x: torch.Tensor | None, buffer: list) -> tuple[torch.Tensor, list]:
        y, buffer = buffer[0], buffer[1:]
        if not buffer:
            expanded = self.linear(x).view(-1, self.out_channels, self.stride)
            buffer = list(expanded.unbind(-1))
        return y, buffer


# -- backbone ----------------------------------------------------------------------------------------
class SaShiMiBackbone(nn.Module):
    """Down pools, centre stage, up stages with skip connections, as the official Sashimi backbone."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        settings = config.layer_settings()
        channels, length = config.d_model, config.l_max

        def stage(width: int, stage_length: int) -> list[nn.Module]:
            blocks = []
            for _ in range(config.n_layers):
                blocks.append(ResidualBlock(S4Block(width, stage_length, settings), make_norm(config.norm, width)))
                if config.ff > 0:
                    blocks.append(ResidualBlock(FeedForward(width, config.ff, config.dropout),
                                                make_norm(config.norm, width)))
            return blocks

        self.down_pools = nn.ModuleList()
        for stride in config.pool:
            self.down_pools.append(DownPool(channels, channels * config.expand, stride))
            channels, length = channels * config.expand, length // stride
        self.centre = nn.ModuleList(stage(channels, length))
        self.up_stages = nn.ModuleList()
        for stride in reversed(config.pool):
            channels, length = channels // config.expand, length * stride
            up_pool = UpPool(channels * config.expand, channels, stride)
            self.up_stages.append(nn.ModuleList([up_pool] + stage(channels, length)))
        self.final_norm = nn.LayerNorm(config.d_model)
        for parameter in self.final_norm.parameters():
            mark_optim(parameter, weight_decay=0.0)
        self.checkpoint_blocks = config.checkpoint_blocks

    def _block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.checkpoint_blocks and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
        return block(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, L) -> (B, L, H)."""
        skips = [x]
        for pool in self.down_pools:
            x = pool(x)
            skips.append(x)
        for block in self.centre:
            x = self._block(block, x)
        x = x + skips.pop()
        for up_stage in self.up_stages:
            x = up_stage[0](x) + skips.pop()
            skips.append(x)
            for block in up_stage[1:]:
                x = self._block(block, x)
            x = x + skips.pop()
        return self.final_norm(x.transpose(1, 2))

    def stateful_blocks(self) -> list[ResidualBlock]:
        blocks = list(self.centre) + [b for stage in self.up_stages for b in stage[1:]]
        return [b for b in blocks if b.stateful]

    def initial_state(self, batch_size: int, device) -> dict:
        return {
            "down": [[] for _ in self.down_pools],
            "up": [stage[0].initial_buffer(batch_size, device) for stage in self.up_stages],
            "memory": {id(b): b.layer.initial_memory(batch_size) for b in self.stateful_blocks()},
            "params": {id(b): b.layer.step_parameters() for b in self.stateful_blocks()},
        }

    def _run_blocks(self, blocks, x, state):
        for block in blocks:
            key = id(block)
            if block.stateful:
                x, state["memory"][key] = block.step(x, state["memory"][key], state["params"][key])
            else:
                x, _ = block.step(x, None, None)
        return x

    def step(self, x: torch.Tensor, state: dict) -> torch.Tensor:
        """(B, H) -> (B, H); updates `state` (pool buffers and SSM memories) in place."""
        skips = []
        for level, pool in enumerate(self.down_pools):
            skips.append(x)
            x, state["down"][level] = pool.step(x, state["down"][level])
            if x is None:
                break
        if x is not None:
            skips.append(x)
            x = self._run_blocks(self.centre, x, state) + skips.pop()
        # Stages whose coarse input has not changed this sample are skipped (their pools still emit).
        first_stage = len(self.down_pools) - len(skips) if x is None else 0
        for index in range(first_stage, len(self.up_stages)):
            up_stage = self.up_stages[index]
            y, state["up"][index] = up_stage[0].step(x, state["up"][index])
            x = y + skips.pop()
            skips.append(x)
            x = self._run_blocks(up_stage[1:], x, state) + skips.pop()
        return self.final_norm(x)


@dataclass
class RecurrentState:
    """Everything `SaShiMi.step` needs between samples. `init_state` snapshots the discretised step
    matrices of the current weights: make a new state after changing the weights."""
    backbone: dict
    position: int = 0


class SaShiMi(nn.Module):
    """Tokens -> embedding -> SaShiMi backbone -> linear decoder -> logits over n_classes."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.encoder = nn.Embedding(config.n_classes, config.d_model)
        self.backbone = SaShiMiBackbone(config)
        self.decoder = nn.Linear(config.d_model, config.n_classes)  # decayed like the official decoder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, L) int64 -> logits (B, L, n_classes)."""
        x = self.encoder(tokens).transpose(1, 2)  # (B, H, L)
        return self.decoder(self.backbone(x))

    @torch.no_grad()
    def init_state(self, batch_size: int) -> RecurrentState:
        device = self.decoder.weight.device
        return RecurrentState(backbone=self.backbone.initial_state(batch_size, device))

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: RecurrentState) -> tuple[torch.Tensor, RecurrentState]:
        """token (B,) int64 -> logits (B, n_classes), the state advanced by one sample."""
        x = self.backbone.step(self.encoder(token), state.backbone)
        state.position += 1
        return self.decoder(x), state


def __getattr__(name: str):
    """`PRESETS`: {name: ModelConfig} of experiments/model/*.yaml, read when asked (the files hold them)."""
    if name == "PRESETS":
        from study.config import config_groups, model_preset
        return {preset: model_preset(preset) for preset in config_groups()["model"]}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(preset_or_config: str | ModelConfig, **overrides) -> SaShiMi:
    """A SaShiMi model from a preset (a name in experiments/model/, e.g. 'sashimi-2') or a ModelConfig,
    with overrides."""
    if isinstance(preset_or_config, str):
        from study.config import model_preset
        base = model_preset(preset_or_config)
    else:
        base = preset_or_config
    values = asdict(base)
    values.update(overrides)
    return SaShiMi(ModelConfig(**values))


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_groups(model: nn.Module, lr: float, weight_decay: float,
                     exempt_decoder_bias: bool = False) -> list[dict]:
    """Optimizer groups as the official code builds them: each parameter's `_optim` settings (set where
    it was created) over the global lr / weight decay. SSM dt, A, B, P: lr 0.001, no decay; in the
    backbone, biases and norms take no decay (the official add_optimizer_hooks on the backbone only),
    so the encoder and the decoder's weight and bias are decayed. `exempt_decoder_bias` (a deviation,
    train.exempt_decoder_bias) also exempts the decoder bias. Groups come sorted by (lr, weight decay).
    """
    exempt = {id(model.decoder.bias)} if exempt_decoder_bias else set()
    groups: dict[tuple, list] = {}
    for parameter in model.parameters():
        settings = {"lr": lr, "weight_decay": weight_decay}
        settings.update(getattr(parameter, "_optim", {}))
        if id(parameter) in exempt:
            settings["weight_decay"] = 0.0
        key = (settings["lr"], settings["weight_decay"])
        groups.setdefault(key, []).append(parameter)
    return [{"params": params, "lr": key[0], "weight_decay": key[1]} for key, params in sorted(groups.items())]


def describe_parameter_groups(model: nn.Module, groups: list[dict]) -> list[dict]:
    """For the run record: each group's lr, weight decay and the names of its tensors."""
    name_of = {id(parameter): name for name, parameter in model.named_parameters()}
    return [{"lr": group["lr"], "weight_decay": group["weight_decay"],
             "parameters": sum(p.numel() for p in group["params"]),
             "tensors": [name_of[id(p)] for p in group["params"]]} for group in groups]
