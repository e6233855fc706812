"""Generation backend 'graph': `SaShiMi.step` itself, with the sampler, captured in CUDA graphs.

The model's step runs on preallocated state tensors and the same operations for every sample of a
phase, so one replay of a captured graph advances the batch by one pooling period (prod(pool)
samples), as mamba's utils/generation.py captures its model's step. On a CPU the same step runs
eagerly (that is what the tests compare with the reference). It never changes the model.
"""

import logging
from dataclasses import dataclass

import numpy as np
import torch

from study.generation.engines.protocol import EngineState, StepOutputs, check_batch
from study.generation.engines.step import RecurrentStateStreams, step_and_choose
from study.generation.sampling import SamplingSettings, uniforms
from study.sashimi import RecurrentState, SaShiMi

log = logging.getLogger(__name__)


@dataclass
class _Static:
    """The tensors a captured graph reads and writes; their storage never moves."""
    recurrent: RecurrentState
    token_in: torch.Tensor    # (B,) int64
    forced: torch.Tensor      # (B, period) int64
    u: torch.Tensor           # (B, period) float64
    tokens: torch.Tensor      # (B, period) int64
    logp_model: torch.Tensor  # (B, period) float64
    logp_sample: torch.Tensor
    logits: torch.Tensor      # (B, period, C) float32
    graph: object = None


class GraphEngine(RecurrentStateStreams):
    """`model.step` + sampler on static tensors: one CUDA graph per (batch size, sampling settings),
    replayed once per pooling period; eager on a CPU or when capture fails (said once, loudly)."""

    name = "graph"

    def __init__(self, model: SaShiMi, device: str | torch.device = "cpu", use_graphs: bool | None = None):
        self.device = torch.device(device)
        self.use_graphs = self.device.type == "cuda" if use_graphs is None else use_graphs
        if self.use_graphs and self.device.type != "cuda":
            raise ValueError("CUDA graphs need a CUDA device; use device=cuda or backend=numba on a CPU")
        self.model = model
        self.total_pool = model.config.total_pool
        self._static: dict[tuple, _Static] = {}
        self.capture_error: str | None = None
        self._fresh = model.allocate_inference_cache(1)  # its step matrices are computed once, here

    # -- one sample and one period on the static tensors -----------------------------------------------
    def _one(self, static: _Static, column: int, sampling: SamplingSettings) -> None:
        token, logp_model, logp_sample, logits = step_and_choose(
            self.model, static.token_in, static.recurrent, static.forced[:, column], static.u[:, column], sampling)
        static.tokens[:, column] = token
        static.logp_model[:, column] = logp_model
        static.logp_sample[:, column] = logp_sample
        static.logits[:, column] = logits
        static.token_in.copy_(token)

    def _period(self, static: _Static, sampling: SamplingSettings) -> None:
        """total_pool samples from phase 0 (static.recurrent.position is a multiple of total_pool)."""
        for column in range(self.total_pool):
            self._one(static, column, sampling)

    def _statics(self, batch: int, sampling: SamplingSettings) -> _Static:
        key = (batch, sampling)
        if key not in self._static:
            period, device = self.total_pool, self.device
            self._static[key] = _Static(
                recurrent=self._fresh.select([0] * batch),
                token_in=torch.zeros(batch, dtype=torch.int64, device=device),
                forced=torch.full((batch, period), -1, dtype=torch.int64, device=device),
                u=torch.zeros(batch, period, dtype=torch.float64, device=device),
                tokens=torch.zeros(batch, period, dtype=torch.int64, device=device),
                logp_model=torch.zeros(batch, period, dtype=torch.float64, device=device),
                logp_sample=torch.zeros(batch, period, dtype=torch.float64, device=device),
                logits=torch.zeros(batch, period, self.model.config.n_classes, device=device))
        return self._static[key]

    def _capture(self, static: _Static, sampling: SamplingSettings) -> None:
        """Warm up on a side stream, then record one period of `model.step` + sampler. Both run on the
        static tensors, whose contents the caller sets afterwards."""
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

    def _ensure_graph(self, static: _Static, sampling: SamplingSettings) -> None:
        if not self.use_graphs or static.graph is not None:
            return
        try:
            self._capture(static, sampling)
        except RuntimeError as error:  # said loudly, once: the same step then runs eagerly
            self.use_graphs = False
            self.capture_error = str(error).strip().splitlines()[0][:300]
            log.warning("CUDA graph capture failed (%s); the model's step runs eagerly on %s, much slower",
                        self.capture_error, self.device)

    # -- running ------------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, state: EngineState, first_tokens: np.ndarray, forced: np.ndarray, keys: np.ndarray, counter: int,
            sampling: SamplingSettings, keep_logits: bool = False) -> StepOutputs:
        """T = forced.shape[1] samples; whole aligned periods replay the CUDA graph, the unaligned head
        and tail (at most total_pool - 1 samples each) run the same step eagerly."""
        check_batch(state, first_tokens, forced, keys)
        batch, steps = forced.shape
        period, device = self.total_pool, self.device
        static = self._statics(batch, sampling)
        self._ensure_graph(static, sampling)
        u_all = torch.from_numpy(uniforms(keys, counter, steps)).to(device)
        forced_all = torch.from_numpy(np.ascontiguousarray(forced, dtype=np.int64)).to(device)
        tokens = torch.empty(batch, steps, dtype=torch.int64, device=device)
        logp_model = torch.empty(batch, steps, dtype=torch.float64, device=device)
        logp_sample = torch.empty(batch, steps, dtype=torch.float64, device=device)
        logits = torch.empty(batch, steps if keep_logits else 0, self.model.config.n_classes, device=device)
        state.memory.position = state.position
        static.recurrent.copy_(state.memory)
        static.token_in.copy_(torch.as_tensor(np.asarray(first_tokens, dtype=np.int64), device=device))
        t = 0
        while t < steps:
            whole = self.use_graphs and static.recurrent.position % period == 0 and steps - t >= period
            width = period if whole else 1
            static.forced[:, :width].copy_(forced_all[:, t:t + width])
            static.u[:, :width].copy_(u_all[:, t:t + width])
            if whole:
                static.graph.replay()
                static.recurrent.position += period  # the replay ran `period` steps without Python
            else:
                self._one(static, 0, sampling)
            tokens[:, t:t + width] = static.tokens[:, :width]
            logp_model[:, t:t + width] = static.logp_model[:, :width]
            logp_sample[:, t:t + width] = static.logp_sample[:, :width]
            if keep_logits:
                logits[:, t:t + width] = static.logits[:, :width]
            t += width
        state.memory.copy_(static.recurrent)
        state.position += steps
        return StepOutputs(tokens.cpu().numpy(), logp_model.cpu().numpy(), logp_sample.cpu().numpy(),
                           logits.cpu().numpy() if keep_logits else None)

    def describe(self) -> str:
        mode = "captured in CUDA graphs, one replay per pooling period" if self.use_graphs else "eager"
        if self.capture_error:
            mode += f" (CUDA graph capture failed: {self.capture_error})"
        return f"backend graph: SaShiMi.step and the sampler on {self.device}, {mode}"
