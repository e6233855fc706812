"""`study bench model`: forward+backward seconds, tokens/s and peak memory of both presets at batch 1,
on the current device, each size in its own process. No optimizer step: `study bench train` times that."""

from dataclasses import dataclass, field

import torch

from study.bench.timing import run_isolated, time_call
from study.bench.train import resolved_device
from study.sashimi import build_model


def measure_one(preset: str, length: int, device: str, backend: str, overrides: dict | None = None) -> dict:
    """Median seconds of forward + cross-entropy + backward of one batch-1 window."""
    torch.manual_seed(0)
    device = torch.device(device)
    model = build_model(preset, l_max=length, kernel_backend=backend, **(overrides or {})).to(device)
    tokens = torch.randint(0, model.config.n_classes, (1, length), device=device)

    def forward_backward():
        model.zero_grad(set_to_none=True)
        logits = model(tokens)  # (1, L, n_classes)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens.reshape(-1))
        loss.backward()

    measurement = time_call(forward_backward, device, repeats=2, warmup=1)
    return {"preset": preset, "length": length, "device": str(device), "seconds": measurement.seconds,
            "tokens_per_second": length / measurement.seconds, "peak_memory_gib": measurement.peak_memory_gib,
            "memory_kind": measurement.memory_kind}


@dataclass
class Settings:
    device: str = "auto"                 # auto | cpu | cuda
    backend: str = "auto"                # model.kernel_backend: auto | torch | numba | triton
    lengths: list[int] = field(default_factory=lambda: [16384, 131072])
    presets: list[str] = field(default_factory=lambda: ["sashimi-2", "sashimi-8"])
    checkpoint_blocks: bool = False      # model.checkpoint_blocks


def main(argv: list[str]) -> int:
    from study.command_args import parse_key_values

    settings = parse_key_values(Settings, argv, "bench model", "presets=[sashimi-2] lengths=[16384]")
    device = resolved_device(settings.device)
    overrides = {"checkpoint_blocks": True} if settings.checkpoint_blocks else {}
    print(f"forward+backward, batch 1, fp32, device {device}, kernel backend {settings.backend}, "
          f"{torch.get_num_threads()} threads, block checkpointing {'on' if overrides else 'off'}")
    print(f"{'preset':<10} {'L':>7} {'seconds':>9} {'tokens/s':>10} {'peak GiB':>9}  memory")
    for preset in settings.presets:
        for length in settings.lengths:
            result = run_isolated("study.bench.model", "measure_one", {
                "preset": preset, "length": length, "overrides": overrides, "device": device,
                "backend": settings.backend})
            if "error" in result:
                print(f"{preset:<10} {length:>7} failed: {result['error']}")
                continue
            print(f"{preset:<10} {length:>7} {result['seconds']:>9.2f} {result['tokens_per_second']:>10,.0f} "
                  f"{result['peak_memory_gib']:>9.2f}  {result['memory_kind']}", flush=True)
    return 0
