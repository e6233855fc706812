"""Generation backends by name: 'step' (the reference, `SaShiMi.step` from Python), 'numba' (the
fused CPU loop) and 'graph' (the model's step captured in CUDA graphs), all behind `protocol.Engine`.

This module only builds and names them; it never picks a slower one silently.
"""

import torch

from study.generation.engines.cuda_graph import GraphEngine
from study.generation.engines.numba_engine import FastEngine
from study.generation.engines.protocol import Engine
from study.generation.engines.step import StepEngine
from study.sashimi import SaShiMi

BACKENDS = ("auto", "numba", "graph", "step")
# Storage of the linear layers' weights (bf16, int8 and w8a8 with the compact S4 step). 'auto' on 'numba':
# w8a8 when sampling (int8 weights with one scale per output row times activations quantized to 8 bits per
# vector, summed exactly in int32; it moves the likelihood by far less than 0.005 bits/sample,
# tests/generation/test_precision.py), fp32 at temperature 0 (greedy streams stay those of the reference
# step); fp32 on the other backends (numba_engine.SAMPLING_PRECISION).
PRECISIONS = ("auto", "fp32", "bf16", "int8", "w8a8")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device}: CUDA is not available on this machine; use device=cpu")
    return resolved


def resolve_precision(precision: str, backend: str) -> str:
    """The weight storage `precision` means for a resolved `backend` ('auto' stays for numba, else fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is unknown: use one of {PRECISIONS}")
    if precision == "auto":
        return "auto" if backend == "numba" else "fp32"
    if precision != "fp32" and backend != "numba":
        raise ValueError(f"precision={precision} is only for backend=numba; use precision=fp32 with backend={backend}")
    return precision


def make_engine(model: SaShiMi, backend: str = "auto", device: str | torch.device = "cpu",
                threads: int | None = None, precision: str = "auto") -> Engine:
    """The backend named (auto: 'graph' on CUDA, 'numba' on a CPU), with the model moved to `device` and
    the numba engine's linear weights stored in `precision` (`resolve_precision`)."""
    device = torch.device(device)
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is unknown: use one of {BACKENDS}")
    if backend == "auto":
        backend = "graph" if device.type == "cuda" else "numba"
    if backend == "numba" and device.type != "cpu":
        raise ValueError(f"backend=numba runs on a CPU, not {device}; use backend=graph on CUDA")
    precision = resolve_precision(precision, backend)
    model = model.to(device).eval()
    if backend == "numba":
        return FastEngine(model, threads=threads, precision=precision)
    if backend == "graph":
        return GraphEngine(model, device)
    return StepEngine(model, device)
