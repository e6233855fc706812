"""`study info [overrides]`: the model's architecture summary and parameter count; no side effects."""

import sys

from study.config import ConfigError, compose_config, settings_from
from study.sashimi import SaShiMi, parameter_count


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


def main(argv: list[str]) -> int:
    try:
        config = compose_config(argv)
        model_config = settings_from(config).model
    except ConfigError as error:
        print(f"study info: {error}", file=sys.stderr)
        return 2
    print(architecture_summary(SaShiMi(model_config)))
    return 0
