"""A model's metrics over data splits: each epoch's val/test evaluation, the final metrics of best.pt, and
`study evaluate`, on the device chosen here. It never updates weights or writes files.
"""

from pathlib import Path

import torch

from study.errors import ConfigError
from study.training.checkpoint import load_checkpoint, load_weights
from study.training.metrics import MetricSums, prefixed
from study.training.step import autocast_for

SPLITS_EVALUATED = ("val", "test")


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA GPU is visible; use train.device=cpu or auto")
    return torch.device(name)


@torch.no_grad()
def evaluate(model, loader, device, precision: str, max_windows: int | None) -> dict[str, float]:
    """Metrics over a split (or its first `max_windows` windows, in the split's fixed order)."""
    model.eval()
    sums, seen = MetricSums(), 0
    for inputs, targets in loader:
        if max_windows is not None and seen >= max_windows:
            break
        if max_windows is not None:
            inputs, targets = inputs[: max_windows - seen], targets[: max_windows - seen]
        with autocast_for(device, precision):
            logits = model(inputs.to(device))
        sums.update(logits.float(), targets.to(device))
        seen += inputs.shape[0]
    model.train()
    return sums.result()


def final_metrics(model, best: Path, loaders: dict, device, precision: str, max_windows: int | None) -> dict:
    """final/<split>/<metric> of the weights in `best` (loaded into `model`) over each split's loader."""
    payload = load_checkpoint(best, map_location=device)
    load_weights(model, payload["model_state"], source=best.name)
    final = {}
    for split, loader in loaders.items():
        final.update(prefixed(evaluate(model, loader, device, precision, max_windows), f"final/{split}"))
    return final
