"""Correctness checks of the GPU path at any size, each returning a `CheckResult`: Triton sums against
the PyTorch reference (values and gradients), forward against the step path, bf16 autocast loss
against fp32, CUDA-graph engine logits against the step path. They measure; they never fix or retry.

`study bench gpu` runs them at full size, the `cuda` tests and the CPU tests at their sizes.
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from study.bench.kernel import sum_inputs
from study.generation.engines.selection import make_engine
from study.generation.sampling import SamplingSettings, stream_keys
from study.sashimi import SaShiMi
from study.training.step import autocast_for

SUM_TOLERANCE = 1e-4          # relative, values and gradients, fp32
LOGIT_TOLERANCE = 1e-3        # max |logit| difference between two fp32 paths (reduction order)
BF16_LOSS_TOLERANCE = 1e-2    # relative difference of the bf16 autocast loss from the fp32 loss


@dataclass
class CheckResult:
    name: str
    passed: bool
    error: float | None       # the measured difference (None when not run)
    tolerance: float
    status: str = "ran"       # ran | skipped
    detail: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|."""
    return ((actual - expected).abs().max() / expected.abs().max().clamp_min(1e-30)).item()


def check_sum(sum_name: str, heads: int, state_half: int, length: int, device: torch.device,
              tolerance: float = SUM_TOLERANCE) -> CheckResult:
    """The Triton sum against the PyTorch reference on the same inputs: value and every gradient."""
    leaves, run, grad = sum_inputs(sum_name, heads, state_half, length, device)
    results = {}
    for backend in ("triton", "torch"):
        value = run(backend, *leaves)
        results[backend] = (value.detach(), *torch.autograd.grad(value, leaves, grad))
    errors = [relative_error(a, b) for a, b in zip(results["triton"], results["torch"])]
    parts = ", ".join(f"{name} {error:.1e}" for name, error in zip(("value", "grad 1", "grad 2"), errors))
    return CheckResult(f"{sum_name} triton vs torch, H={heads} N={state_half} L={length}",
                       max(errors) <= tolerance, max(errors), tolerance, detail=parts)


def teacher_forced_logits(engine, tokens: np.ndarray) -> np.ndarray:
    """(B, T, n_classes) logits an engine gives when fed tokens[:, t] at step t, as forward sees them."""
    batch = tokens.shape[0]
    forced = np.roll(tokens, -1, axis=1)  # output t is forced to the next input; the last is unused
    out = engine.run(engine.new_state(batch), tokens[:, 0], forced, stream_keys(0, range(batch)), 0,
                     SamplingSettings(), keep_logits=True)
    return out.logits


def check_forward_vs_step(model: SaShiMi, length: int, device: torch.device,
                          tolerance: float = LOGIT_TOLERANCE) -> CheckResult:
    """Parallel forward logits against the plain recurrent step path over `length` samples."""
    model = model.to(device).eval()
    tokens = torch.randint(0, model.config.n_classes, (1, length))
    with torch.no_grad():
        expected = model(tokens.to(device)).float().cpu().numpy()  # (1, L, n_classes)
    actual = teacher_forced_logits(make_engine(model, "step", device), tokens.numpy())
    error = float(np.abs(actual - expected).max())
    return CheckResult(f"{model.config.name} forward vs step, L={length}, {device.type}",
                       error <= tolerance, error, tolerance)


def check_bf16_loss(model: SaShiMi, length: int, device: torch.device,
                    tolerance: float = BF16_LOSS_TOLERANCE) -> CheckResult:
    """The training loss under bf16 autocast (as train.precision=bf16 runs it) against fp32."""
    name = f"{model.config.name} bf16 autocast loss vs fp32, L={length}"
    if device.type != "cuda":
        return CheckResult(name, True, None, tolerance, "skipped", "bf16 autocast trains on CUDA only")
    model = model.to(device).eval()
    tokens = torch.randint(0, model.config.n_classes, (1, length + 1), device=device)
    losses = {}
    with torch.no_grad():
        for precision in ("fp32", "bf16"):
            with autocast_for(device, precision):
                logits = model(tokens[:, :-1])
            losses[precision] = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]),
                                                tokens[:, 1:].reshape(-1)).item()
    error = abs(losses["bf16"] - losses["fp32"]) / abs(losses["fp32"])
    return CheckResult(name, error <= tolerance, error, tolerance,
                       detail=f"fp32 {losses['fp32']:.5f}, bf16 {losses['bf16']:.5f}")


def graph_vs_step_difference(model: SaShiMi, batch: int, steps: int, device: torch.device) -> float:
    """Max |logit| difference between the CUDA-graph engine and the plain step path, teacher forced."""
    tokens = np.random.default_rng(0).integers(0, model.config.n_classes, (batch, steps))
    graph = teacher_forced_logits(make_engine(model, "graph", device), tokens)
    step = teacher_forced_logits(make_engine(model, "step", device), tokens)
    return float(np.abs(graph - step).max())
