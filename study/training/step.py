"""One optimizer step of the training recipe (forward, loss, finite check, backward, clip, update),
shared by `study train` and the training benchmarks; it reads no config files and imports no Hydra."""

import torch
import torch.nn.functional as F

from study.errors import ConfigError
from study.sashimi import SaShiMi, parameter_groups


class NonFiniteLoss(RuntimeError):
    """The loss of a step was NaN or infinite; nothing was updated."""


def build_optimizer(model: SaShiMi, settings) -> torch.optim.Optimizer:
    """AdamW over the model's parameter groups (each parameter's `_optim` over settings.lr and
    settings.weight_decay); `settings` is any object with lr, weight_decay and betas (TrainSettings),
    and optionally exempt_decoder_bias (the deviation from the official groups, off by default)."""
    groups = parameter_groups(model, settings.lr, settings.weight_decay,
                              getattr(settings, "exempt_decoder_bias", False))
    return torch.optim.AdamW(groups, lr=settings.lr, betas=tuple(settings.betas), weight_decay=settings.weight_decay)


def autocast_for(device: torch.device, precision: str):
    if precision == "bf16":
        if device.type != "cuda":
            raise ConfigError("train.precision=bf16 needs CUDA; use train.precision=fp32 on CPU")
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast(device.type, enabled=False)


def train_step(model: SaShiMi, forward, optimizer: torch.optim.Optimizer, inputs: torch.Tensor,
               targets: torch.Tensor, precision: str, gradient_clip: float | None) -> float:
    """One step on a (B, L) batch already on the model's device; `forward` is the model or its
    torch.compile wrapper. Returns the loss; raises NonFiniteLoss before any update if it is not finite."""
    with autocast_for(inputs.device, precision):
        logits = forward(inputs)  # (B, L, n_classes)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
    if not torch.isfinite(loss):
        raise NonFiniteLoss(f"the training loss became {loss.item()}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if gradient_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), gradient_clip)
    optimizer.step()
    return loss.item()
