"""`study bench train`: training tokens/s and peak memory (forward, backward, AdamW step) of both
presets at the smoke and full shapes of the scale profiles, on the current device."""

import argparse
import sys

import torch

from study.config import compose_config
from study.bench.timing import run_isolated

PRESETS = ("sashimi-2", "sashimi-8")


def scale_shape(scale: str) -> tuple[int, dict]:
    """(window length, model overrides) that `scale=<scale>` applies to the model."""
    config = compose_config([f"scale={scale}"])
    overrides = {key: config.model[key] for key in ("d_model", "d_state")}
    return int(config.data.sample_len), overrides


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="study bench train", description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--scales", nargs="+", default=["smoke", "full"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = parser.parse_args(argv)
    print(f"training step (forward, backward, AdamW), batch 1, {args.precision}, device {args.device}, "
          f"kernel backend {args.backend}, {torch.get_num_threads()} threads")
    print(f"{'scale':<6} {'preset':<10} {'L':>7} {'d_model':>7} {'seconds':>9} {'tokens/s':>10} {'peak GiB':>9}  memory")
    for scale in args.scales:
        length, overrides = scale_shape(scale)
        for preset in PRESETS:
            result = run_isolated("study.bench.model", {
                "preset": preset, "length": length, "device": args.device, "backend": args.backend,
                "optimizer_step": True, "precision": args.precision, "overrides": overrides})
            label = f"{scale:<6} {preset:<10} {length:>7} {overrides['d_model']:>7}"
            if "error" in result:
                print(f"{label} failed: {result['error']}", flush=True)
                continue
            print(f"{label} {result['seconds']:>9.3f} {result['tokens_per_second']:>10,.0f} "
                  f"{result['peak_memory_gib']:>9.2f}  {result['memory_kind']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
