"""Generation backends behind one interface, and the plain reference path they are tested against.

'step' calls `SaShiMi.step` from a Python loop and samples with `study.sampling.sample`: slow, but it
is the definition. 'numba' (study.generation.engines.numba_engine) and 'graph' (study.generation.engines.cuda_graph) must reproduce it; this
module only builds and names them, it never picks a slower one silently.
"""

import logging
from dataclasses import dataclass

import numpy as np
import torch

from study.generation.engines.numba_engine import FastEngine, StepOutputs
from study.generation.engines.cuda_graph import TensorEngine
from study.generation.sampling import SamplingSettings, log_softmax_at, sample, uniforms
from study.sashimi import RecurrentState, SaShiMi

log = logging.getLogger(__name__)
BACKENDS = ("auto", "numba", "graph", "step")


@dataclass
class StepState:
    recurrent: RecurrentState
    batch_size: int
    position: int = 0


def _select_rows(value, index: torch.Tensor):
    if isinstance(value, torch.Tensor):
        return value.index_select(0, index)
    if isinstance(value, list):
        return [_select_rows(item, index) for item in value]
    if isinstance(value, dict):
        return {key: _select_rows(item, index) for key, item in value.items()}
    raise TypeError(f"unexpected recurrent state entry {type(value).__name__}")


class StepEngine:
    """Backend 'step': `model.step` per sample from Python, `study.sampling.sample` per sample."""

    name = "step"

    def __init__(self, model: SaShiMi, device: str | torch.device = "cpu"):
        self.model = model
        self.device = torch.device(device)

    def new_state(self, batch_size: int) -> StepState:
        return StepState(self.model.init_state(batch_size), batch_size)

    def select(self, state: StepState, rows) -> StepState:
        index = torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.device)
        backbone = dict(state.recurrent.backbone)
        for key in ("down", "up", "memory"):
            backbone[key] = _select_rows(backbone[key], index)
        recurrent = RecurrentState(backbone=backbone, position=state.recurrent.position)
        return StepState(recurrent, len(index), state.position)

    @torch.no_grad()
    def run(self, state: StepState, first_tokens: np.ndarray, forced: np.ndarray, keys: np.ndarray, counter: int,
            sampling: SamplingSettings, keep_logits: bool = False) -> StepOutputs:
        batch, steps = forced.shape
        u_all = torch.from_numpy(uniforms(keys, counter, steps)).to(self.device)
        forced_all = torch.from_numpy(np.ascontiguousarray(forced, dtype=np.int64)).to(self.device)
        token = torch.as_tensor(np.asarray(first_tokens, dtype=np.int64), device=self.device)
        tokens, logp_model, logp_sample, logits_all = [], [], [], []
        for t in range(steps):
            logits, state.recurrent = self.model.step(token, state.recurrent)
            draw = sample(logits, sampling, u_all[:, t])
            token = torch.where(forced_all[:, t] >= 0, forced_all[:, t], draw.tokens)
            tokens.append(token)
            logp_model.append(log_softmax_at(logits, token))
            logp_sample.append(torch.where(forced_all[:, t] >= 0, torch.full_like(draw.logp_sample, float("nan")),
                                           draw.logp_sample))
            if keep_logits:
                logits_all.append(logits.float())
        state.position += steps

        def stacked(values, dtype):
            if not values:
                return np.zeros((batch, 0), dtype)
            return torch.stack(values, 1).cpu().numpy()

        logits = None
        if keep_logits:
            logits = (torch.stack(logits_all, 1).cpu().numpy() if logits_all
                      else np.zeros((batch, 0, self.model.config.n_classes), np.float32))
        return StepOutputs(stacked(tokens, np.int64), stacked(logp_model, np.float64),
                           stacked(logp_sample, np.float64), logits)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device}: CUDA is not available on this machine; use device=cpu")
    return resolved


def make_engine(model: SaShiMi, backend: str = "auto", device: str | torch.device = "cpu",
                threads: int | None = None):
    """The backend named (auto: 'graph' on CUDA, 'numba' on a CPU), with the model moved to `device`."""
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown: use one of {BACKENDS}")
    if backend == "auto":
        backend = "graph" if device.type == "cuda" else "numba"
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"backend=numba runs on a CPU, not {device}; use backend=graph on CUDA")
    model = model.to(device).eval()
    if backend == "numba":
        return FastEngine(model, threads=threads)
    if backend == "graph":
        return TensorEngine(model, device)
    return StepEngine(model, device)


def describe(engine) -> str:
    """One line saying which backend runs where, logged once at the start of a generation."""
    if isinstance(engine, FastEngine):
        threads = engine.threads or "one per core, at most one per stream"
        return f"backend numba: fused CPU loop over all layers and the sampler (threads: {threads})"
    if isinstance(engine, TensorEngine):
        mode = "captured in CUDA graphs, one replay per pooling period" if engine.use_graphs else "eager"
        if engine.capture_error:
            mode += f" (CUDA graph capture failed: {engine.capture_error})"
        return f"backend graph: static-shape tensor step on {engine.device}, {mode}"
    return f"backend step: SaShiMi.step from a Python loop on {engine.device} (the reference path)"
