"""`study bench model`: forward+backward seconds, tokens/s and peak memory of both presets at
L = 16384 and 131072, batch 1, on the current device. Each size runs in its own process."""

import argparse
import json
import sys

import torch

from study.bench.timing import run_isolated, time_call
from study.sashimi import build_model

PRESETS = ("sashimi-2", "sashimi-8")
LENGTHS = (16384, 131072)


def measure_one(preset: str, length: int, device: str, backend: str, optimizer_step: bool = False,
                precision: str = "fp32", overrides: dict | None = None) -> dict:
    """Seconds per forward+backward (and AdamW step with optimizer_step) of one batch-1 window."""
    torch.manual_seed(0)
    device = torch.device(device)
    model = build_model(preset, l_max=length, kernel_backend=backend, **(overrides or {})).to(device)
    tokens = torch.randint(0, model.config.n_classes, (1, length), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if optimizer_step else None
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    def train_step():
        model.zero_grad(set_to_none=True)
        with autocast:
            logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), tokens.reshape(-1))
        loss.backward()
        if optimizer is not None:
            optimizer.step()

    measurement = time_call(train_step, device, repeats=2, warmup=1)
    return {"preset": preset, "length": length, "device": str(device), "seconds": measurement.seconds,
            "tokens_per_second": length / measurement.seconds, "peak_memory_gib": measurement.peak_memory_gib,
            "memory_kind": measurement.memory_kind}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="study bench model", description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="auto", help="model.kernel_backend: auto|torch|numba|triton")
    parser.add_argument("--lengths", type=int, nargs="+", default=list(LENGTHS))
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--checkpoint-blocks", action="store_true", help="model.checkpoint_blocks=true")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure_one(**json.loads(args.one))))
        return 0
    overrides = {"checkpoint_blocks": True} if args.checkpoint_blocks else {}
    print(f"forward+backward, batch 1, fp32, device {args.device}, kernel backend {args.backend}, "
          f"{torch.get_num_threads()} threads, block checkpointing {'on' if overrides else 'off'}")
    print(f"{'preset':<10} {'L':>7} {'seconds':>9} {'tokens/s':>10} {'peak GiB':>9}  memory")
    for preset in args.presets:
        for length in args.lengths:
            result = run_isolated("study.bench.model", {"preset": preset, "length": length, "overrides": overrides,
                                                          "device": args.device, "backend": args.backend})
            if "error" in result:
                print(f"{preset:<10} {length:>7} failed: {result['error']}")
                continue
            print(f"{preset:<10} {length:>7} {result['seconds']:>9.2f} {result['tokens_per_second']:>10,.0f} "
                  f"{result['peak_memory_gib']:>9.2f}  {result['memory_kind']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
