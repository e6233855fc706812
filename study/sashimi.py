"""SaShiMi: the multi-scale S4 autoregressive waveform model of Goel et al. 2022, as in the official code.

Reads top to bottom: norms, residual blocks, pooling, backbone, token model, building one from a
preset (the config is study/model_config.py).
`forward` (parallel) and `step` (one sample) live together and must give the same logits.
"""

import itertools
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from study.model_config import ModelConfig, model_preset
from study.recurrent_state import RecurrentState
from study.s4.layer import ChannelLinear, S4Block, mark_optim


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
    """Prenorm residual: x + layer(norm(x)). The layer is an S4Block (stateful: its memory is
    RecurrentState.memory[state_index], fixed at construction as mamba's layer_idx) or FeedForward."""

    def __init__(self, layer: nn.Module, norm: nn.Module, state_index: int | None = None):
        super().__init__()
        self.norm, self.layer = norm, layer
        self.stateful = isinstance(layer, S4Block)
        self.state_index = state_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layer(self.norm(x))

    def step(self, x: torch.Tensor, state: RecurrentState) -> torch.Tensor:
        """(B, H) -> (B, H); an S4 layer advances its memory in `state` in place."""
        y = self.norm(x.unsqueeze(-1)).squeeze(-1)
        if self.stateful:
            y = self.layer.step(y, state.memory[self.state_index], state.step_parameters[self.state_index])
        else:
            y = self.layer(y)
        return x + y


# -- pooling -----------------------------------------------------------------------------------------
class DownPool(nn.Module):
    """(B, H, L*s) -> regroup (B, H*s, L) -> weight-normed linear -> (B, H_out, L).
    Step: each sample fills one slot of a (B, H, s) buffer; the full group emits one output."""

    def __init__(self, channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.linear = ChannelLinear(channels * stride, out_channels, weight_norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, length = x.shape
        x = x.view(batch, channels, length // self.stride, self.stride).transpose(2, 3)
        return self.linear(x.reshape(batch, channels * self.stride, length // self.stride))

    def allocate_inference_cache(self, batch_size: int, device) -> torch.Tensor:
        """The inputs of the group being filled: (B, H, stride)."""
        return torch.zeros(batch_size, self.linear.weight.shape[1] // self.stride, self.stride, device=device)

    def step(self, x: torch.Tensor, buffer: torch.Tensor, slot: int) -> torch.Tensor | None:
        """x (B, H) into `slot` of buffer (B, H, s); at the group's last slot (B, H_out), else None."""
        buffer[:, :, slot] = x
        if slot < self.stride - 1:
            return None
        return self.linear(buffer.flatten(1))  # (B, H*s), h major as in forward


class UpPool(nn.Module):
    """(B, H_in, L) -> linear to H_out*s -> shift right one pooled step (causal) -> (B, H_out, L*s).
    Step: emits the previous group's outputs from a (B, H_out, s) buffer, one slot per sample."""

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

    def allocate_inference_cache(self, batch_size: int, device) -> torch.Tensor:
        """The outputs of the previous group, zero before the first: (B, H_out, stride)."""
        return torch.zeros(batch_size, self.out_channels, self.stride, device=device)

    def step(self, x: torch.Tensor | None, buffer: torch.Tensor, slot: int) -> torch.Tensor:
        """The previous group's output for `slot`, (B, H_out); at the group's last slot the coarse
        input x (B, H_in) of this sample refills the buffer for the next group."""
        y = buffer[:, :, slot].clone()
        if slot == self.stride - 1:
            buffer.copy_(self.linear(x).view(-1, self.out_channels, self.stride))  # (B, H_out, s)
        return y


# -- backbone ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepOp:
    """One operation of `SaShiMiBackbone.step_program`: kind 'down' (level l's input into its down pool's
    slot; at a completed group the pool emits level l + 1's input), 'up' (level l's up pool output for
    the slot plus level l's skip; at a completed group the pool first refills from the coarse output)
    or 'stage' (level l's residual blocks plus the stage's skip)."""
    kind: str
    level: int
    slot: int = -1           # the pool slot of this phase ('down', 'up')
    completes: bool = False  # the pool's group is complete at this phase ('down', 'up')


class SaShiMiBackbone(nn.Module):
    """Down pools, centre stage, up stages with skip connections, as the official Sashimi backbone."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        settings = config.layer_settings()
        channels, length = config.d_model, config.l_max

        state_indices = itertools.count()  # S4 block i keeps RecurrentState.memory[i]

        def stage(width: int, stage_length: int) -> list[nn.Module]:
            blocks = []
            for _ in range(config.n_layers):
                blocks.append(ResidualBlock(S4Block(width, stage_length, settings), make_norm(config.norm, width),
                                            state_index=next(state_indices)))
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
            x = pool(x)                            # (B, H_l, L_l) -> (B, H_l * expand, L_l / stride)
            skips.append(x)
        for block in self.centre:
            x = self._block(block, x)              # (B, H_D, L_D)
        x = x + skips.pop()
        for up_stage in self.up_stages:
            x = up_stage[0](x) + skips.pop()       # (B, H_l, L_l) -> (B, H_l / expand, L_l * stride)
            skips.append(x)
            for block in up_stage[1:]:
                x = self._block(block, x)
            x = x + skips.pop()
        return self.final_norm(x.transpose(1, 2))  # (B, L, H)

    # -- recurrent face ------------------------------------------------------------------------------
    def stateful_blocks(self) -> list[ResidualBlock]:
        """The S4 blocks in network order (centre, then the up stages): block i keeps memory[i]."""
        blocks = list(self.centre) + [b for stage in self.up_stages for b in stage[1:]]
        return sorted((b for b in blocks if b.stateful), key=lambda b: b.state_index)

    def stage_blocks(self, level: int) -> list[ResidualBlock]:
        """The blocks of pooling level `level` (0: the outermost up stage, len(pool): the centre)."""
        depth = len(self.down_pools)
        return list(self.centre) if level == depth else list(self.up_stages[depth - 1 - level])[1:]

    def up_pool(self, level: int) -> UpPool:
        return self.up_stages[len(self.down_pools) - 1 - level][0]

    def pool_slot(self, level: int, phase: int) -> int:
        """Which slot of level `level`'s pool groups sample `phase` (= position mod total_pool) fills."""
        period = math.prod(pool.stride for pool in self.down_pools[:level])
        return (phase // period) % self.down_pools[level].stride

    def completed_pools(self, phase: int) -> int:
        """How many pools, outermost first, complete a group at sample `phase`: the stages inside them
        run at this sample, the deeper ones wait (their up pools keep emitting the previous group)."""
        full = [self.pool_slot(level, phase) == pool.stride - 1 for level, pool in enumerate(self.down_pools)]
        return full.index(False) if False in full else len(full)

    def allocate_inference_cache(self, batch_size: int, device) -> RecurrentState:
        """Zero state for `batch_size` streams and a snapshot of the S4 step matrices of the weights."""
        blocks = self.stateful_blocks()
        return RecurrentState(
            down=[pool.allocate_inference_cache(batch_size, device) for pool in self.down_pools],
            up=[self.up_pool(level).allocate_inference_cache(batch_size, device)
                for level in range(len(self.down_pools))],
            memory=[block.layer.allocate_inference_cache(batch_size) for block in blocks],
            step_parameters=[block.layer.step_parameters() for block in blocks])

    def step_program(self, phase: int) -> list[StepOp]:
        """The recurrent step at sample `phase` (= position mod total_pool) as its operations, in order:
        the one definition of the network's recurrence, which `step` and every fast engine execute.

        The input of level 0 fills its down pool's slot; each completed pool emits the next level's input
        (which fills that level's slot). When every pool completed, the centre runs. Then, innermost
        first, each level that received a sample takes its up pool's output for the slot plus its skip
        and runs its stage; at a completed group the up pool refills from the coarse output first."""
        depth, reached = len(self.down_pools), self.completed_pools(phase)
        program = [StepOp("down", level, self.pool_slot(level, phase), level < reached)
                   for level in range(min(reached + 1, depth))]
        if reached == depth:
            program.append(StepOp("stage", depth))
        for level in reversed(range(min(reached, depth - 1) + 1)):
            program += [StepOp("up", level, self.pool_slot(level, phase), level < reached), StepOp("stage", level)]
        return program

    def step(self, x: torch.Tensor, state: RecurrentState, phase: int) -> torch.Tensor:
        """(B, H) -> (B, H) for sample `phase` (= position mod total_pool); `state` changes in place.

        The same sequence of tensor operations for every sample of the same phase, whatever the data,
        so one pooling period of it can be captured in a CUDA graph."""
        skips = [x]                                                  # level l input: (B, H_l)
        for op in self.step_program(phase):
            if op.kind == "down":                                    # x: (B, H_l) into the pool's slot
                pooled = self.down_pools[op.level].step(x, state.down[op.level], op.slot)
                if op.completes:
                    x = pooled                                       # (B, H_{l+1})
                    skips.append(x)
            elif op.kind == "up":                                    # x: the level below's output (B, H_{l+1})
                x = self.up_pool(op.level).step(x, state.up[op.level], op.slot) + skips[op.level]   # (B, H_l)
            else:
                x = self._stage_step(op.level, x, state)             # (B, H_l)
        return self.final_norm(x)

    def _stage_step(self, level: int, x: torch.Tensor, state: RecurrentState) -> torch.Tensor:
        """The residual blocks of one stage, plus the stage's own skip: (B, H_l) -> (B, H_l)."""
        y = x
        for block in self.stage_blocks(level):
            y = block.step(y, state)
        return y + x


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
    def allocate_inference_cache(self, batch_size: int) -> RecurrentState:
        """The recurrent state of `batch_size` fresh streams, on the model's device."""
        return self.backbone.allocate_inference_cache(batch_size, self.decoder.weight.device)

    @torch.no_grad()
    def step(self, token: torch.Tensor, state: RecurrentState) -> torch.Tensor:
        """token (B,) int64 -> logits (B, n_classes); `state` advances one sample in place."""
        phase = state.position % self.config.total_pool
        x = self.backbone.step(self.encoder(token), state, phase)     # (B, d_model)
        state.position += 1
        return self.decoder(x)


def build_model(preset_or_config: str | ModelConfig, **overrides) -> SaShiMi:
    """A SaShiMi model from a preset (a name in experiments/model/, e.g. 'sashimi-2') or a ModelConfig,
    with overrides."""
    if isinstance(preset_or_config, str):
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
