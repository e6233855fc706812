"""Next-sample selection: temperature, top-k and nucleus (top-p) sampling, and counter-based random numbers.

The reference definition every generation backend must reproduce token for token; it never touches
global random state (each stream's numbers are a pure function of seed, stream and sample index).

The sampler, for logits l (one stream, C classes) and one uniform number u in [0, 1):
  temperature 0   greedy: the first index of max l (u is unused).
  candidates      all classes in index order when top_k = 0 and top_p = 1; otherwise classes sorted by
                  l descending (ties: lower index first), cut to the first top_k (top_k > 0) and to
                  those whose cumulative model probability *before* them is < top_p, where the model
                  probability is softmax(l) at temperature 1 over all classes. The class that crosses
                  top_p is kept, so at least one class always survives. (As in the official S4
                  generate script: the nucleus is chosen at temperature 1, then the temperature
                  reshapes the distribution over the survivors.)
  weights         w_i = exp((l_i - max l) / temperature) over the candidates, in float64.
  draw            the first candidate whose running sum of w exceeds u * sum(w).
Reported per sample: log p_model = log softmax(l)[token] (temperature 1, no truncation) and
log p_sample = log(w_token / sum w) under the distribution actually sampled (0 for greedy).
"""

from dataclasses import dataclass

import numpy as np
import torch

GOLDEN = 0x9E3779B97F4A7C15
MASK64 = (1 << 64) - 1


@dataclass(frozen=True)
class SamplingSettings:
    temperature: float = 1.0   # 0: greedy
    top_k: int = 0             # 0: no top-k cut
    top_p: float = 1.0         # 1: no nucleus cut

    def validate(self) -> "SamplingSettings":
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise ValueError(f"temperature={self.temperature} must be >= 0 (0 is greedy, 1 samples the model as is)")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            raise ValueError(f"top_k={self.top_k} must be an integer >= 0 (0 keeps every class)")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1] (1 keeps every class; official SaShiMi samples use 1)")
        return self

    @property
    def filtered(self) -> bool:
        return self.top_k > 0 or self.top_p < 1


# -- counter-based random numbers (SplitMix64 finaliser) ---------------------------------------------
def _mix64(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 output function on uint64 arrays (wrapping arithmetic)."""
    z = np.asarray(z, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stream_keys(seed: int, streams: np.ndarray | list[int]) -> np.ndarray:
    """Key of each stream: mix64(mix64(seed) + GOLDEN * (stream + 1)), uint64 (streams are global indices)."""
    if not 0 <= int(seed) < 1 << 63:
        raise ValueError(f"seed={seed} must be an integer in [0, 2^63)")
    base = _mix64(np.array([int(seed)], dtype=np.uint64))[0]
    index = np.asarray(streams, dtype=np.uint64) + np.uint64(1)
    with np.errstate(over="ignore"):
        return _mix64(base + np.uint64(GOLDEN) * index)


def uniforms(keys: np.ndarray, start: int, count: int) -> np.ndarray:
    """u[b, j] = (mix64(key_b + GOLDEN * (start + j + 1)) >> 11) * 2^-53, float64 in [0, 1), shape (B, count).

    Sample j of a stream always gets the same number, however the generation is batched or chunked.
    """
    counters = np.arange(start + 1, start + count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.asarray(keys, dtype=np.uint64)[:, None] + np.uint64(GOLDEN) * counters[None, :]
    return (_mix64(z) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


# -- the reference sampler ----------------------------------------------------------------------------
@dataclass
class Draw:
    tokens: torch.Tensor        # (B,) int64
    logp_model: torch.Tensor    # (B,) float64, temperature 1, no truncation
    logp_sample: torch.Tensor   # (B,) float64, under the distribution sampled


def log_softmax_at(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token] in float64, (B, C), (B,) -> (B,)."""
    return torch.log_softmax(logits.double(), dim=-1).gather(-1, tokens[:, None]).squeeze(-1)


def sample(logits: torch.Tensor, settings: SamplingSettings, u: torch.Tensor) -> Draw:
    """Tokens for logits (B, C) and uniforms u (B,) in [0, 1), as defined in the module docstring.

    Static shapes and no host synchronisation, so it can run inside a captured CUDA graph.
    """
    logits = logits.double()
    batch, classes = logits.shape
    logp_all = torch.log_softmax(logits, dim=-1)
    if settings.temperature == 0:
        tokens = torch.argmax(logits, dim=-1)
        return Draw(tokens, logp_all.gather(-1, tokens[:, None]).squeeze(-1),
                    torch.zeros(batch, dtype=torch.float64, device=logits.device))
    if settings.filtered:
        ordered, order = torch.sort(logits, dim=-1, descending=True, stable=True)
        rank = torch.arange(classes, device=logits.device).expand(batch, classes)
        keep = torch.ones_like(ordered, dtype=torch.bool)
        if settings.top_k > 0:
            keep &= rank < settings.top_k
        if settings.top_p < 1:
            probabilities = torch.exp(ordered - ordered[:, :1])
            probabilities = probabilities / probabilities.sum(-1, keepdim=True)
            before = torch.cumsum(probabilities, dim=-1) - probabilities
            keep &= before < settings.top_p
    else:
        ordered, order = logits, None
        keep = torch.ones_like(ordered, dtype=torch.bool)
    top = ordered.max(dim=-1, keepdim=True).values
    weights = torch.where(keep, torch.exp((ordered - top) / settings.temperature), torch.zeros_like(ordered))
    running = torch.cumsum(weights, dim=-1)
    total = running[:, -1:]
    target = u.to(logits.device, torch.float64)[:, None] * total
    position = torch.searchsorted(running, target, right=True).clamp(max=classes - 1)
    # Rounding may put the target past the last candidate: take the last class with weight > 0 instead.
    last = (keep.long() * (weights > 0).long() * torch.arange(1, classes + 1, device=logits.device)).argmax(-1, keepdim=True)
    position = torch.minimum(position, last)
    chosen_weight = weights.gather(-1, position)
    tokens = (order.gather(-1, position) if order is not None else position).squeeze(-1)
    logp_sample = (torch.log(chosen_weight) - torch.log(total)).squeeze(-1)
    return Draw(tokens, logp_all.gather(-1, tokens[:, None]).squeeze(-1), logp_sample)
