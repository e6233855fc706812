"""Generation backend 'graph': the SaShiMi step as static-shape tensor ops, captured in CUDA graphs.

One replay of a captured graph advances the batch by one pooling period (prod(pool) samples,
sampler included), so the host launches one graph per period instead of hundreds of kernels per
sample. On a CPU the same tensor step runs eagerly (that is what the tests compare with `forward`).
It reads the weights exported by `fast_step.export_plan` and never changes the model.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from study.generation.engines import numba_engine as fs
from study.generation.sampling import SamplingSettings, log_softmax_at, sample, uniforms

log = logging.getLogger(__name__)

@dataclass
class _Block:
    kind: int
    channels: int
    norm: int
    norm_params: tuple
    eps: float
    tensors: dict


@dataclass
class _Level:
    channels: int
    period: int
    stride: int
    down: tuple | None
    up: tuple | None
    down_buffer: int
    up_buffer: int
    blocks: list


@dataclass
class TensorState:
    memory: torch.Tensor   # (B, state_size) float32 on the engine's device
    batch_size: int
    position: int = 0


@dataclass
class _Static:
    """The tensors a captured graph reads and writes; their storage never moves."""
    memory: torch.Tensor
    token_in: torch.Tensor    # (B,) int64
    forced: torch.Tensor      # (B, period) int64
    u: torch.Tensor           # (B, period) float64
    tokens: torch.Tensor      # (B, period) int64
    logp_model: torch.Tensor  # (B, period) float64
    logp_sample: torch.Tensor
    logits: torch.Tensor      # (B, period, C) float32
    graph: object = None
    pool: object = None
    extra: dict = field(default_factory=dict)


class TensorEngine:
    """The step of `SaShiMiBackbone.step` with a state tensor updated in place and shapes that never
    change, so a whole pooling period can be captured in one CUDA graph."""

    name = "graph"

    def __init__(self, model, device: str | torch.device = "cpu", use_graphs: bool | None = None):
        self.device = torch.device(device)
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else use_graphs
        if self.use_graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device; use device=cuda or backend=numba on a CPU")
        plan = fs.export_plan(model)
        self.plan = plan
        P = torch.from_numpy(plan.params).to(self.device)
        head, levels, blocks = plan.head, plan.levels, plan.blocks
        self.n_classes, self.d0, self.total_pool = int(head[fs.H_CLASSES]), int(head[fs.H_D0]), plan.total_pool

        def view(offset, *shape):
            count = int(np.prod(shape))
            return P[int(offset):int(offset) + count].view(*shape)

        self.embedding = view(head[fs.H_EMBED], self.n_classes, self.d0)
        self.final = (view(head[fs.H_FINAL_W], self.d0), view(head[fs.H_FINAL_B], self.d0), float(plan.norm_eps[-1]))
        self.decoder = (view(head[fs.H_DEC_W], self.n_classes, self.d0), view(head[fs.H_DEC_B], self.n_classes))

        def block(index: int) -> _Block:
            row = blocks[index]
            channels = int(row[fs.B_H])
            if row[fs.B_NORM] == fs.NORM_TRANSPOSED:
                norm_params = (view(row[fs.B_NORM_OFF], 2),)
            else:
                norm_params = (view(row[fs.B_NORM_OFF], channels), view(row[fs.B_NORM_OFF] + channels, channels))
            if row[fs.B_KIND] == fs.KIND_S4:
                half = int(row[fs.B_N2])
                tensors = dict(m=view(row[fs.B_SSM], half, 10, channels).transpose(0, 1), rank1=bool(row[fs.B_RANK1]),
                               D=view(row[fs.B_DSKIP], channels),
                               w1=view(row[fs.B_W1], int(row[fs.B_OUT1]), channels),
                               b1=view(row[fs.B_B1], int(row[fs.B_OUT1])), glu=bool(row[fs.B_GLU]),
                               memory=int(row[fs.B_MEM]), half=half)
            else:
                hidden = int(row[fs.B_OUT1])
                tensors = dict(w1=view(row[fs.B_W1], hidden, channels), b1=view(row[fs.B_B1], hidden),
                               w2=view(row[fs.B_W2], channels, hidden), b2=view(row[fs.B_B2], channels))
            return _Block(int(row[fs.B_KIND]), channels, int(row[fs.B_NORM]), norm_params,
                          float(plan.norm_eps[index]), tensors)

        self.levels = []
        for level in range(len(levels)):
            row = levels[level]
            channels, stride = int(row[fs.L_H]), int(row[fs.L_STRIDE])
            down = up = None
            if level < len(levels) - 1:
                inner = int(levels[level + 1, fs.L_H])
                down = (view(row[fs.L_DOWN_W], inner, channels * stride), view(row[fs.L_DOWN_B], inner))
                up = (view(row[fs.L_UP_W], channels * stride, inner), view(row[fs.L_UP_B], channels * stride))
            self.levels.append(_Level(channels, int(row[fs.L_PERIOD]), stride, down, up, int(row[fs.L_DOWN_BUF]),
                                      int(row[fs.L_UP_BUF]),
                                      [block(i) for i in range(int(row[fs.L_FIRST]), int(row[fs.L_END]))]))
        self._static: dict[tuple, _Static] = {}
        self.capture_error: str | None = None

    # -- state --------------------------------------------------------------------------------------
    def new_state(self, batch_size: int) -> TensorState:
        return TensorState(torch.zeros(batch_size, self.plan.state_size, device=self.device), batch_size)

    def select(self, state: TensorState, rows) -> TensorState:
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.device)
        return TensorState(state.memory.index_select(0, index).contiguous(), len(index), state.position)

    # -- the step -----------------------------------------------------------------------------------
    def _norm(self, block: _Block, x: torch.Tensor) -> torch.Tensor:
        if block.norm == fs.NORM_TRANSPOSED:
            std, mean = torch.std_mean(x, dim=-1, unbiased=False, keepdim=True)
            m_s = block.norm_params[0]
            return (m_s[1] / std) * (x - mean + m_s[0])
        return F.layer_norm(x, (block.channels,), block.norm_params[0], block.norm_params[1], block.eps)

    def _blocks(self, blocks: list[_Block], x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        for block in blocks:
            z = self._norm(block, x)
            t = block.tensors
            if block.kind == fs.KIND_S4:
                half, channels, start = t["half"], block.channels, t["memory"]
                size = half * channels
                xr = memory[:, start:start + size].view(batch, half, channels)
                xi = memory[:, start + size:start + 2 * size].view(batch, half, channels)
                m = t["m"]
                u = z.unsqueeze(1)
                if t["rank1"]:
                    s = (m[0] * xr - m[1] * xi).sum(1, keepdim=True)
                    new_r = m[2] * xr - m[3] * xi - m[6] * s + m[4] * u
                    new_i = m[2] * xi + m[3] * xr - m[7] * s + m[5] * u
                else:
                    new_r = m[2] * xr - m[3] * xi + m[4] * u
                    new_i = m[2] * xi + m[3] * xr + m[5] * u
                xr.copy_(new_r)
                xi.copy_(new_i)
                y = (m[8] * new_r - m[9] * new_i).sum(1) + t["D"] * z
                y = F.linear(F.gelu(y), t["w1"], t["b1"])
                y = F.glu(y, dim=-1) if t["glu"] else y
            else:
                y = F.linear(F.gelu(F.linear(z, t["w1"], t["b1"])), t["w2"], t["b2"])
            x = x + y
        return x

    def _step(self, memory: torch.Tensor, phase: int, token_in: torch.Tensor) -> torch.Tensor:
        """One sample at position = phase (mod total_pool): token_in (B,) -> logits (B, C)."""
        batch = memory.shape[0]
        depth = len(self.levels) - 1
        skips = [F.embedding(token_in, self.embedding)]
        top = 0
        for index in range(depth):
            level = self.levels[index]
            slot = (phase // level.period) % level.stride
            size = level.channels * level.stride
            buffer = memory[:, level.down_buffer:level.down_buffer + size].view(batch, level.stride, level.channels)
            buffer[:, slot] = skips[index]  # slot-major, like the exported pool weights
            if slot != level.stride - 1:
                break
            skips.append(F.linear(buffer.reshape(batch, size), *level.down))
            top = index + 1
        coarse = None
        if top == depth:
            coarse = self._blocks(self.levels[depth].blocks, skips[depth], memory) + skips[depth]
        for index in range(min(top, depth - 1), -1, -1):
            level = self.levels[index]
            slot = (phase // level.period) % level.stride
            size = level.channels * level.stride
            buffer = memory[:, level.up_buffer:level.up_buffer + size].view(batch, level.stride, level.channels)
            x = buffer[:, slot] + skips[index]
            if slot == level.stride - 1:
                buffer.copy_(F.linear(coarse, *level.up).view(batch, level.stride, level.channels))
            coarse = self._blocks(level.blocks, x, memory) + x
        x = F.layer_norm(coarse, (self.d0,), *self.final)
        return F.linear(x, *self.decoder)

    def _one(self, static: _Static, phase: int, column: int, sampling: SamplingSettings) -> None:
        """Step, sample or take the forced token, record, feed back: all on static tensors."""
        logits = self._step(static.memory, phase, static.token_in)
        forced = static.forced[:, column]
        draw = sample(logits, sampling, static.u[:, column])
        token = torch.where(forced >= 0, forced, draw.tokens)
        static.tokens[:, column] = token
        static.logp_model[:, column] = log_softmax_at(logits, token)
        static.logp_sample[:, column] = torch.where(forced >= 0, torch.full_like(draw.logp_sample, float("nan")),
                                                    draw.logp_sample)
        static.logits[:, column] = logits
        static.token_in.copy_(token)

    def _period(self, static: _Static, sampling: SamplingSettings) -> None:
        for phase in range(self.total_pool):
            self._one(static, phase, phase, sampling)

    def _statics(self, batch: int, sampling: SamplingSettings) -> _Static:
        key = (batch, sampling)
        if key not in self._static:
            period, device = self.total_pool, self.device
            self._static[key] = _Static(
                memory=torch.zeros(batch, self.plan.state_size, device=device),
                token_in=torch.zeros(batch, dtype=torch.int64, device=device),
                forced=torch.full((batch, period), -1, dtype=torch.int64, device=device),
                u=torch.zeros(batch, period, dtype=torch.float64, device=device),
                tokens=torch.zeros(batch, period, dtype=torch.int64, device=device),
                logp_model=torch.zeros(batch, period, dtype=torch.float64, device=device),
                logp_sample=torch.zeros(batch, period, dtype=torch.float64, device=device),
                logits=torch.zeros(batch, period, self.n_classes, device=device))
        return self._static[key]

    def _capture(self, static: _Static, sampling: SamplingSettings) -> None:
        """Warm up on a side stream, then record one period. Both run on the static tensors, whose
        contents the caller sets afterwards."""
        side = torch.cuda.Stream(device=self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._period(static, sampling)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._period(static, sampling)
        static.graph = graph

    # -- running ------------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, state: TensorState, first_tokens: np.ndarray, forced: np.ndarray, keys: np.ndarray, counter: int,
            sampling: SamplingSettings, keep_logits: bool = False) -> fs.StepOutputs:
        """As FastEngine.run: T = forced.shape[1] samples; whole aligned periods replay the CUDA graph,
        the unaligned head and tail (at most total_pool - 1 samples each) run the same step eagerly."""
        batch, steps = forced.shape
        period = self.total_pool
        static = self._statics(batch, sampling)
        if self.use_graphs and static.graph is None:
            try:
                self._capture(static, sampling)
            except RuntimeError as error:  # said loudly, once: the same step then runs eagerly
                self.use_graphs = False
                self.capture_error = str(error).strip().splitlines()[0][:300]
                log.warning("CUDA graph capture failed (%s); the tensor step runs eagerly on %s, much slower",
                            self.capture_error, self.device)
        device = self.device
        u_all = torch.from_numpy(uniforms(keys, counter, steps)).to(device)
        forced_all = torch.from_numpy(np.ascontiguousarray(forced, dtype=np.int64)).to(device)
        tokens = torch.empty(batch, steps, dtype=torch.int64, device=device)
        logp_model = torch.empty(batch, steps, dtype=torch.float64, device=device)
        logp_sample = torch.empty(batch, steps, dtype=torch.float64, device=device)
        logits = torch.empty(batch, steps if keep_logits else 0, self.n_classes, device=device)
        static.memory.copy_(state.memory)
        static.token_in.copy_(torch.as_tensor(np.asarray(first_tokens, dtype=np.int64), device=device))
        t = 0
        while t < steps:
            phase = (state.position + t) % period
            whole = self.use_graphs and phase == 0 and steps - t >= period
            width = period if whole else 1
            static.forced[:, :width].copy_(forced_all[:, t:t + width])
            static.u[:, :width].copy_(u_all[:, t:t + width])
            if whole:
                static.graph.replay()
            else:
                self._one(static, phase, 0, sampling)
            tokens[:, t:t + width] = static.tokens[:, :width]
            logp_model[:, t:t + width] = static.logp_model[:, :width]
            logp_sample[:, t:t + width] = static.logp_sample[:, :width]
            if keep_logits:
                logits[:, t:t + width] = static.logits[:, :width]
            t += width
        state.memory.copy_(static.memory)
        state.position += steps
        return fs.StepOutputs(tokens.cpu().numpy(), logp_model.cpu().numpy(), logp_sample.cpu().numpy(),
                              logits.cpu().numpy() if keep_logits else None)
