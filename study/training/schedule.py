"""The learning-rate schedule of a run (plateau, cosine with warmup, constant) and the names its optimizer
groups' rates are logged under. It never steps the optimizer or the schedule itself.
"""

import math
from typing import Callable

import torch

from study.training.experiment import TrainSettings


def group_lr_names(groups: list[dict], settings: TrainSettings) -> list[str]:
    """A name per optimizer group for its logged lr: lr/default (train.lr with train.weight_decay),
    lr/no_weight_decay (train.lr, no decay), lr/ssm (the S4 kernel parameters' own lr)."""
    names = []
    for group in groups:
        if group["lr"] != settings.lr:
            name = "lr/ssm"
        else:
            name = "lr/default" if group["weight_decay"] == settings.weight_decay else "lr/no_weight_decay"
        names.append(name if name not in names else f"{name}_{names.count(name) + 1}")
    return names


def build_scheduler(optimizer, settings: TrainSettings, steps_per_epoch: int):
    """plateau: ReduceLROnPlateau on val loss per epoch (official); cosine: linear warmup then
    cosine to min_lr per step; constant: none."""
    if settings.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=settings.plateau_factor, patience=settings.plateau_patience)
    if settings.schedule == "cosine":
        total = max(1, settings.max_epochs * steps_per_epoch)
        base_lrs = [group["lr"] for group in optimizer.param_groups]

        def factor_for(group_index: int) -> Callable[[int], float]:
            floor = settings.min_lr / base_lrs[group_index] if base_lrs[group_index] > 0 else 0.0

            def factor(step: int) -> float:
                if step < settings.warmup_steps:
                    return (step + 1) / settings.warmup_steps
                progress = min(1.0, (step - settings.warmup_steps) / max(1, total - settings.warmup_steps))
                return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
            return factor

        return torch.optim.lr_scheduler.LambdaLR(optimizer, [factor_for(i) for i in range(len(base_lrs))])
    return None
