"""`study info [overrides]`: the model's architecture summary and parameter count, or with
`checkpoint=PATH` a checkpoint's config, step, metrics and sha256. Reads only; writes nothing.
"""

from omegaconf import OmegaConf

from study.config import ConfigError, compose_config, settings_from
from study.sashimi import SaShiMi, parameter_count
from study.training.checkpoint import Checkpoint, open_checkpoint


def architecture_summary(model: SaShiMi) -> str:
    config = model.config
    lines = [f"model {config.name}: SaShiMi, {config.n_layers} S4+FF block pairs per stage, "
             f"d_model {config.d_model}, pool {list(config.pool)}, expand {config.expand}, ff {config.ff}",
             f"  S4: mode {config.ssm_mode}, init {config.ssm_init}, d_state {config.d_state}, rank {config.rank}, "
             f"dt in [{config.dt_min}, {config.dt_max}] ({config.dt_transform}), final_act {config.final_act}, "
             f"norm {config.norm}, dropout {config.dropout}, kernel backend {config.kernel_backend}",
             f"  classes {config.n_classes}, window {config.l_max} samples"]
    width, length = config.d_model, config.l_max
    rows = [("encoder (embedding)", model.encoder)]
    for index, pool in enumerate(model.backbone.down_pools):
        rows.append((f"down pool {index} ({width} -> {width * config.expand}, /{pool.stride})", pool))
        width, length = width * config.expand, length // pool.stride
    rows.append((f"centre stage (H={width}, L={length})", model.backbone.centre))
    for index, stage in enumerate(model.backbone.up_stages):
        stride = stage[0].stride
        width, length = width // config.expand, length * stride
        rows.append((f"up stage {index} (H={width}, L={length}, x{stride})", stage))
    rows += [("final norm", model.backbone.final_norm), ("decoder (linear)", model.decoder)]
    for name, module in rows:
        lines.append(f"  {name:<40} {parameter_count(module):>12,}")
    lines.append(f"  {'total parameters':<40} {parameter_count(model):>12,}")
    return "\n".join(lines)


def checkpoint_summary(checkpoint: Checkpoint) -> str:
    """Where the checkpoint stands (step, epoch, metrics of its last evaluated epoch), its hash and config."""
    payload = checkpoint.payload
    lines = [f"checkpoint {checkpoint.path}",
             f"  sha256      {checkpoint.sha256}",
             f"  format      {payload.get('format')}",
             f"  signature   {payload.get('signature', '-')}",
             f"  model       {checkpoint.model_config.name}, {parameter_count(checkpoint.model()):,} parameters",
             f"  step        {checkpoint.step} (epoch {checkpoint.epoch})"]
    metrics = {name: value for name, value in checkpoint.metrics.items() if name not in ("epoch", "step")}
    if metrics:
        lines.append(f"  metrics of epoch {checkpoint.metrics.get('epoch', '?')} "
                     f"(step {checkpoint.metrics.get('step', '?')}):")
        lines += [f"    {name:<24} {value:.6g}" for name, value in sorted(metrics.items())]
    else:
        lines.append("  metrics     none (written before the first evaluation)")
    lines.append("config:")
    config = OmegaConf.to_yaml(OmegaConf.create(checkpoint.config)) if checkpoint.config else "{}\n"
    lines += [f"  {line}" for line in config.rstrip("\n").splitlines()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    checkpoints = [token.partition("=")[2] for token in argv if token.startswith("checkpoint=")]
    if checkpoints:
        if len(argv) > 1:
            raise ConfigError("study info checkpoint=PATH takes no other argument; "
                              "e.g. study info checkpoint=runs/replicate/SIGNATURE/checkpoints/best.pt")
        print(checkpoint_summary(open_checkpoint(checkpoints[0])))
        return 0
    config = compose_config(argv)
    model_config = settings_from(config).model
    print(architecture_summary(SaShiMi(model_config)))
    return 0
