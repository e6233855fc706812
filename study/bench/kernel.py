"""`study bench kernel`: time and peak memory of the S4 kernel sums (Triton vs PyTorch) and of a SaShiMi training step.

Prints tables and asserts nothing about speed; every row names the backend it ran, none is swapped in silently.

usage: study bench kernel [heads=64,128,256] [lengths=16384,131072] [state_half=32] [backends=triton,torch]
                          [parts=kernel,model] [presets=sashimi-8,sashimi-2] [precisions=fp32,bf16]
                          [repeats=10] [warmup=2] [model_repeats=3]
"""

import dataclasses
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from study.s4.sums import reference as kernel_ops

CPU_HEADS, CPU_LENGTH = (16,), (4096,)  # the torch path on CPU, to show the bench runs; not a GPU figure
MODEL_LENGTH = 131072  # one training sequence, batch 1
VOCABULARY = 256


@dataclass
class Settings:
    heads: tuple[int, ...] = (64, 128, 256)
    lengths: tuple[int, ...] = (16384, 131072)
    state_half: int = 32
    backends: tuple[str, ...] = ("triton", "torch")
    parts: tuple[str, ...] = ("kernel", "model")
    presets: tuple[str, ...] = ("sashimi-8", "sashimi-2")
    precisions: tuple[str, ...] = ("fp32", "bf16")
    repeats: int = 10
    warmup: int = 2
    model_repeats: int = 3  # one warm-up step, then this many timed steps


@dataclass
class Timing:
    milliseconds: float  # median over repeats
    peak_mib: float | None  # CUDA only: peak allocated above what was allocated before the step


def parse_settings(argv: list[str]) -> tuple[Settings, set[str]]:
    """Settings from `key=value` tokens, and the keys that were given."""
    settings = Settings()
    fields = {field.name: field for field in dataclasses.fields(Settings)}
    given = set()
    for token in argv:
        key, _, value = token.partition("=")
        if key not in fields or not value:
            raise ValueError(f"unknown setting {token!r}: use key=value with key in {', '.join(fields)}")
        default = getattr(settings, key)
        kind = type(default[0]) if isinstance(default, tuple) else type(default)
        example = ",".join(map(str, default)) if isinstance(default, tuple) else default
        try:
            items = tuple(kind(item) for item in value.split(","))
        except ValueError:
            items = ()
        if not items or (len(items) > 1 and not isinstance(default, tuple)):
            raise ValueError(f"{token!r}: {key} takes {kind.__name__} values, like {key}={example}")
        parsed = items if isinstance(default, tuple) else items[0]
        setattr(settings, key, parsed)
        given.add(key)
    for key, allowed in (("backends", ("triton", "torch")), ("parts", ("kernel", "model")),
                         ("precisions", ("fp32", "bf16"))):
        for item in getattr(settings, key):
            if item not in allowed:
                raise ValueError(f"{key}={item!r} is unknown: use {' and/or '.join(allowed)}")
    return settings, given


def measure(step: Callable[[], None], device: torch.device, repeats: int, warmup: int) -> Timing:
    """Median time of `step` and, on CUDA, its peak memory above the memory allocated before it."""
    for _ in range(warmup):
        step()
    times = []
    if device.type != "cuda":
        for _ in range(repeats):
            start = time.perf_counter()
            step()
            times.append(1e3 * (time.perf_counter() - start))
        return Timing(statistics.median(times), None)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    baseline = torch.cuda.memory_allocated(device)
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    peak = (torch.cuda.max_memory_allocated(device) - baseline) / 2**20
    return Timing(statistics.median(times), peak)


def kernel_steps(sum_name: str, backend: str, heads: int, state_half: int, length: int, device: torch.device):
    """(forward, forward + backward) closures for one sum at the sizes of one S4 layer."""
    generator = torch.Generator().manual_seed(0)
    dt = torch.exp(torch.empty(heads, 1).uniform_(math.log(1e-3), math.log(1e-1), generator=generator))
    n = torch.arange(state_half)
    diagonal = (dt * torch.complex(-0.5 * torch.ones(heads, state_half), math.pi * n.float())).to(device)
    if sum_name == "cauchy":  # DPLR: 2x2 Woodbury combos, L//2 + 1 bilinear nodes
        omega = torch.exp(-2j * math.pi * torch.arange(length // 2 + 1, dtype=torch.float64) / length)
        z = (2 * (1 - omega) / (1 + omega)).to(torch.complex64).to(device)
        v = torch.randn(2, 2, heads, state_half, dtype=torch.complex64, generator=generator).to(device)
        grad = torch.randn(2, 2, heads, z.shape[0], dtype=torch.complex64, generator=generator).to(device)
        inputs, run = (v, diagonal), lambda v, w: kernel_ops.cauchy_conj(v, z, w, backend)
    else:  # S4D: one channel of C B, real output of length L
        c = torch.randn(1, heads, state_half, dtype=torch.complex64, generator=generator).to(device)
        grad = torch.randn(1, heads, length, generator=generator).to(device)
        inputs, run = (c, diagonal), lambda c, x: kernel_ops.vandermonde_conj(c, x, length, backend)
    leaves = [t.requires_grad_() for t in inputs]

    def forward():
        with torch.no_grad():
            run(*leaves)

    def forward_backward():
        torch.autograd.grad(run(*leaves), leaves, grad)

    return forward, forward_backward


def kernel_table(settings: Settings, device: torch.device) -> list[str]:
    header = f"{'sum':<12} {'H':>5} {'L':>7} {'backend':<7} {'forward ms':>11} {'fwd+bwd ms':>11} {'peak MiB':>9} {'torch/triton':>12}"
    lines = [header, "-" * len(header)]
    for sum_name in ("cauchy", "vandermonde"):
        for heads in settings.heads:
            for length in settings.lengths:
                totals = {}
                for backend in settings.backends:
                    try:
                        forward, forward_backward = kernel_steps(sum_name, backend, heads, settings.state_half, length, device)
                        forward_time = measure(forward, device, settings.repeats, settings.warmup)
                        total = measure(forward_backward, device, settings.repeats, settings.warmup)
                    except torch.cuda.OutOfMemoryError:
                        lines.append(f"{sum_name:<12} {heads:>5} {length:>7} {backend:<7} {'out of memory':>11}")
                        torch.cuda.empty_cache()
                        continue
                    totals[backend] = total.milliseconds
                    peak = "n/a" if total.peak_mib is None else f"{total.peak_mib:.0f}"
                    ratio = f"{totals['torch'] / totals['triton']:.1f}x" if len(totals) == 2 else ""
                    lines.append(f"{sum_name:<12} {heads:>5} {length:>7} {backend:<7} {forward_time.milliseconds:>11.2f} "
                                 f"{total.milliseconds:>11.2f} {peak:>9} {ratio:>12}")
    return lines


def with_backend(preset, backend: str):
    """A copy of a model preset (dataclass or mapping) with kernel_backend set."""
    if dataclasses.is_dataclass(preset):
        return dataclasses.replace(preset, kernel_backend=backend)
    if isinstance(preset, Mapping):
        return {**preset, "kernel_backend": backend}
    raise TypeError(f"model preset of type {type(preset).__name__} is neither a dataclass nor a mapping")


def model_table(settings: Settings, device: torch.device, presets: Mapping, build_model: Callable,
                length: int = MODEL_LENGTH) -> list[str]:
    """Training step (forward, cross-entropy, backward, AdamW) of each preset at batch 1.

    `presets` and `build_model` are study.sashimi's PRESETS and build_model (passed in so this module
    imports without the model); build_model(config) returns a module mapping (B, L) tokens to (B, L, 256) logits.
    """
    header = f"{'preset':<10} {'precision':<9} {'backend':<7} {'step ms':>9} {'peak GiB':>9}"
    lines = [header, "-" * len(header)]
    tokens = torch.randint(0, VOCABULARY, (1, length + 1), device=device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    for name in settings.presets:
        if name not in presets:
            raise ValueError(f"presets={name!r} is unknown: study.sashimi.PRESETS has {', '.join(presets)}")
        for precision in settings.precisions:
            for backend in settings.backends:
                model = build_model(with_backend(presets[name], backend)).to(device)
                optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

                def step():
                    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                        logits = model(inputs)  # (1, L, 256)
                    loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCABULARY), targets.reshape(-1))
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)

                try:
                    timing = measure(step, device, settings.model_repeats, warmup=1)
                except torch.cuda.OutOfMemoryError:
                    lines.append(f"{name:<10} {precision:<9} {backend:<7} {'out of memory':>19}")
                else:
                    peak = f"{torch.cuda.max_memory_allocated(device) / 2**30:.2f}" if device.type == "cuda" else "n/a"
                    lines.append(f"{name:<10} {precision:<9} {backend:<7} {timing.milliseconds:>9.1f} {peak:>9}")
                del model, optimizer
                if device.type == "cuda":
                    torch.cuda.empty_cache()
    return lines


def main(argv: list[str]) -> int:
    try:
        settings, given = parse_settings(argv)
    except ValueError as error:
        print(f"study bench kernel: {error}\nusage: {__doc__.split('usage:')[1].strip()}", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    status = 0
    if device.type == "cpu":
        print("No CUDA device: timing the PyTorch path on CPU at a small size only; "
              "the Triton and GPU figures need a GPU (make gpu-check).")
        settings.backends = ("torch",)
        settings.heads = settings.heads if "heads" in given else CPU_HEADS
        settings.lengths = settings.lengths if "lengths" in given else CPU_LENGTH
        settings.repeats = settings.repeats if "repeats" in given else 3
    else:
        print(f"Device: {torch.cuda.get_device_name(device)}")
        if "triton" in settings.backends:
            kernel_ops.resolve_backend("triton", device)  # raises, naming the cause, if Triton cannot run
    if "kernel" in settings.parts:
        print(f"\nKernel sums, N = {settings.state_half}: forward, forward + backward (median of {settings.repeats})")
        print("\n".join(kernel_table(settings, device)))
    if "model" in settings.parts:
        print(f"\nTraining step at L = {MODEL_LENGTH}, batch 1 (forward, loss, backward, AdamW; median of {settings.model_repeats})")
        if device.type == "cpu":
            print("skipped: needs a GPU")
        else:
            try:
                from study.sashimi import PRESETS, build_model
            except ImportError as error:
                print(f"not run: the model is not importable ({error}); it runs once study.sashimi exists",
                      file=sys.stderr)
                status = 1
            else:
                print("\n".join(model_table(settings, device, PRESETS, build_model)))
    return status
