"""`study bench train`: tokens/s, peak memory and projected epoch time of the real training step
(the recipe's optimizer groups, `study.training.step.train_step`) at batch 1. Asserts no timings.

`measure_train_step` is the one training-step benchmark; `study bench kernel` and `study bench gpu`
call it too. Its recipe is the TrainSettings defaults (the one place they are written); it imports no Hydra.
"""

import time
from dataclasses import dataclass, field

import torch

from study.bench.timing import run_isolated, time_call
from study.errors import ConfigError
from study.s4.sums.reference import resolve_backend
from study.sashimi import build_model
from study.training.settings import TrainSettings
from study.training.step import build_optimizer, train_step

YOUTUBEMIX_TRAIN_WINDOWS = 1484  # train windows of 131,072 samples per YouTubeMix epoch (88/6/6 split)


def recipe() -> TrainSettings:
    """The train group's defaults: the official recipe (lr, weight_decay, betas, ...)."""
    return TrainSettings()


def measure_train_step(preset: str, length: int, device: str, backend: str = "auto", precision: str = "fp32",
                       compile: bool = False, steps: int = 3, warmup: int = 1, overrides: dict | None = None,
                       budget_seconds: float | None = None, compile_backend: str = "inductor") -> dict:
    """Median seconds of `steps` real training steps on one random (1, length) window after `warmup`
    steps (the first also compiles), with tokens/s, peak memory and the projected YouTubeMix epoch."""
    torch.manual_seed(0)
    device = torch.device(device)
    settings = recipe()
    model = build_model(preset, l_max=length, kernel_backend=backend, **(overrides or {})).to(device)
    optimizer = build_optimizer(model, settings)
    forward = torch.compile(model, backend=compile_backend) if compile else model
    tokens = torch.randint(0, model.config.n_classes, (1, length + 1), device=device)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (1, L) each
    losses = []

    def step():
        losses.append(train_step(model, forward, optimizer, inputs, targets, precision, settings.gradient_clip))

    started = time.perf_counter()
    if warmup:
        step()
    first_seconds = time.perf_counter() - started
    measurement = time_call(step, device, repeats=steps, warmup=max(0, warmup - 1), budget_seconds=budget_seconds)
    return {"preset": preset, "length": length, "device": str(device), "precision": precision,
            "backend": resolve_backend(backend, device), "compile": compile, "steps": measurement.calls,
            "first_step_seconds": first_seconds, "seconds_per_step": measurement.seconds,
            "fastest_step_seconds": measurement.fastest_seconds, "tokens_per_second": length / measurement.seconds,
            "peak_memory_gib": measurement.peak_memory_gib, "memory_kind": measurement.memory_kind,
            "epoch_seconds_youtubemix": YOUTUBEMIX_TRAIN_WINDOWS * measurement.seconds,
            "last_loss": losses[-1]}


@dataclass
class Settings:
    device: str = "auto"                 # auto | cpu | cuda
    backend: str = "auto"                # model.kernel_backend: auto | torch | numba | triton
    scales: list[str] = field(default_factory=lambda: ["smoke", "full"])
    presets: list[str] = field(default_factory=lambda: ["sashimi-2", "sashimi-8"])
    precision: str = "fp32"              # fp32 | bf16 (CUDA)
    compile: bool = False
    steps: int = 3


def scale_shape(scale: str) -> tuple[int, dict]:
    """(window length, model overrides) that `scale=<scale>` applies to the model."""
    from study.config import compose_config

    config = compose_config([f"scale={scale}"])
    return int(config.data.sample_len), {key: config.model[key] for key in ("d_model", "d_state")}


def resolved_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but no CUDA GPU is visible; use device=cpu or auto")
    return name


def main(argv: list[str]) -> int:
    from study.command_args import parse_key_values

    settings = parse_key_values(Settings, argv, "bench train", "scales=[smoke] precision=bf16")
    device = resolved_device(settings.device)
    print(f"training step (the recipe's AdamW groups, study.training.step.train_step), batch 1, {settings.precision}, "
          f"device {device}, kernel backend {settings.backend}, compile {settings.compile}, "
          f"{torch.get_num_threads()} threads; median of {settings.steps} steps after one warm-up")
    print(f"{'scale':<6} {'preset':<10} {'L':>7} {'d_model':>7} {'s/step':>8} {'tokens/s':>10} {'peak GiB':>9} "
          f"{'epoch s':>9}  memory")
    for scale in settings.scales:
        length, overrides = scale_shape(scale)
        for preset in settings.presets:
            result = run_isolated("study.bench.train", "measure_train_step", {
                "preset": preset, "length": length, "device": device, "backend": settings.backend,
                "precision": settings.precision, "compile": settings.compile, "steps": settings.steps,
                "overrides": overrides})
            label = f"{scale:<6} {preset:<10} {length:>7} {overrides['d_model']:>7}"
            if "error" in result:
                print(f"{label} failed: {result['error']}", flush=True)
                continue
            print(f"{label} {result['seconds_per_step']:>8.3f} {result['tokens_per_second']:>10,.0f} "
                  f"{result['peak_memory_gib']:>9.2f} {result['epoch_seconds_youtubemix']:>9,.0f}  "
                  f"{result['memory_kind']}", flush=True)
    print(f"epoch s = {YOUTUBEMIX_TRAIN_WINDOWS:,} YouTubeMix windows x s/step (meaningful at scale full only)")
    return 0
