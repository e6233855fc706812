"""Next-sample metrics in the workshop table's terms: loss (nats), bpb, accuracy, accuracy@k.

Every predicted sample of a split weighs the same: sums over all samples, divided at the end.
A target is in the top k when fewer than k logits are strictly greater than its logit (ties count
in its favour, so the result never depends on how a sort breaks ties).
"""

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

TOP_K = (3, 5, 10)


@dataclass
class MetricSums:
    """Running sums over a split; `update` with each batch, `result` at the end."""
    loss_nats: float = 0.0
    samples: int = 0
    hits: dict = field(default_factory=lambda: {1: 0, **{k: 0 for k in TOP_K}})

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """logits (..., C), targets (...) int64."""
        logits = logits.reshape(-1, logits.shape[-1]).float()
        targets = targets.reshape(-1)
        self.loss_nats += F.cross_entropy(logits, targets, reduction="sum").item()
        self.samples += targets.numel()
        target_logit = logits.gather(1, targets.unsqueeze(1))
        rank = (logits > target_logit).sum(1)  # logits strictly above the target's
        for k in self.hits:
            self.hits[k] += int((rank < k).sum().item())

    def result(self) -> dict[str, float]:
        if self.samples == 0:
            raise ValueError("no samples were evaluated: the split is empty or max_eval_windows is 0")
        loss = self.loss_nats / self.samples
        metrics = {"loss": loss, "bpb": loss / math.log(2), "accuracy": self.hits[1] / self.samples}
        metrics.update({f"accuracy@{k}": self.hits[k] / self.samples for k in TOP_K})
        return metrics


def prefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """{'loss': x} -> {'val/loss': x} for prefix 'val'."""
    return {f"{prefix}/{name}": value for name, value in metrics.items()}
