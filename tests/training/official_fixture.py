"""Official-layout SaShiMi state dicts built from one of our models, for the import tests.

The names and shapes are written out here from the official modules (state-spaces/s4 @ e757cef), not
taken from study.training.official, so the tests check the import's table against an independent one:
  SequenceLightningModule: encoder = PassthroughSequential(task.encoder=None, nn.Embedding) -> encoder.0
                           decoder = PassthroughSequential(SequenceDecoder, task.decoder=None) -> decoder.0
                           SequenceDecoder.output_transform = nn.Linear(d_model, n_classes)
  Sashimi: d_layers (DownPool: weight-normed TransposedLinear `linear`), c_layers, u_layers (UpPool first),
           norm = nn.LayerNorm(H)
  SequenceResidualBlock: norm = Normalization(_name_='layer', transposed=True).norm = TransposedLN(m, s);
           layer = S4Block (layer = FFTConv: D (channels, H), kernel = SSMKernelDPLR; output_linear =
           Sequential(nn.Linear(H, 2H), GLU)) or FFN (ff = Sequential(Sequential(TransposedLinear, GELU),
           dropout, TransposedLinear))
  SSMKernelDPLR (n_ssm=1, channels=1): inv_dt (H, 1), A_real, A_imag (1, N/2), B (1, 1, N/2, 2),
           P (R, 1, N/2, 2), C (1, H, N/2, 2), l_kernel buffer (the length C~ is attuned to).
"""

import torch

from study.sashimi import SaShiMi


def _block(ours: dict, our_prefix: str, official_prefix: str, out: dict, l_kernel: int) -> None:
    def put(official: str, ours_name: str, transform=lambda t: t):
        out[f"{official_prefix}.{official}"] = transform(ours[f"{our_prefix}.{ours_name}"].clone())

    put("norm.norm.m", "norm.m")
    put("norm.norm.s", "norm.s")
    if f"{our_prefix}.layer.D" in ours:  # S4 block
        put("layer.layer.D", "layer.D", lambda t: t.unsqueeze(0))
        for leaf in ("inv_dt", "A_real", "A_imag", "P"):
            put(f"layer.layer.kernel.{leaf}", f"layer.kernel.{leaf}")
        put("layer.layer.kernel.B", "layer.kernel.B", lambda t: t.unsqueeze(0))
        put("layer.layer.kernel.C", "layer.kernel.C", lambda t: t.unsqueeze(0))
        out[f"{official_prefix}.layer.layer.kernel.l_kernel"] = torch.tensor(l_kernel)
        put("layer.output_linear.0.weight", "layer.output_linear.weight_raw")
        put("layer.output_linear.0.bias", "layer.output_linear.bias")
    else:  # feed-forward block
        put("layer.ff.0.0.weight", "layer.linear_in.weight_raw")
        put("layer.ff.0.0.bias", "layer.linear_in.bias")
        put("layer.ff.2.weight", "layer.linear_out.weight_raw")
        put("layer.ff.2.bias", "layer.linear_out.bias")


def _pool(ours: dict, our_prefix: str, official_prefix: str, out: dict) -> None:
    for leaf in ("weight_g", "weight_v", "bias"):
        out[f"{official_prefix}.linear.{leaf}"] = ours[f"{our_prefix}.linear.{leaf}"].clone()


def official_state(model: SaShiMi) -> dict[str, torch.Tensor]:
    """The state dict the official SequenceLightningModule would hold for the same weights, in its order."""
    ours = model.state_dict()
    config = model.config
    out = {"encoder.0.weight": ours["encoder.weight"].clone()}
    lengths = [config.l_max]
    for stride in config.pool:
        lengths.append(lengths[-1] // stride)
    for index in range(len(config.pool)):
        _pool(ours, f"backbone.down_pools.{index}", f"model.d_layers.{index}", out)
    for index in range(len(model.backbone.centre)):
        _block(ours, f"backbone.centre.{index}", f"model.c_layers.{index}", out, lengths[-1])
    for stage in range(len(model.backbone.up_stages)):
        _pool(ours, f"backbone.up_stages.{stage}.0", f"model.u_layers.{stage}.0", out)
        for index in range(1, len(model.backbone.up_stages[stage])):
            _block(ours, f"backbone.up_stages.{stage}.{index}", f"model.u_layers.{stage}.{index}", out,
                   lengths[len(config.pool) - 1 - stage])
    out["model.norm.weight"] = ours["backbone.final_norm.weight"].clone()
    out["model.norm.bias"] = ours["backbone.final_norm.bias"].clone()
    out["decoder.0.output_transform.weight"] = ours["decoder.weight"].clone()
    out["decoder.0.output_transform.bias"] = ours["decoder.bias"].clone()
    return out


def to_v3_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The V3 layout that the official convert_v3_to_v4.py turns into the one above."""
    old = {}
    for name, tensor in state.items():
        name = name.replace("layer.layer.kernel.", "layer.kernel.kernel.").replace("layer.layer.D", "layer.D")
        name = name.replace("kernel.kernel.l_kernel", "kernel.kernel.L")
        if name.endswith("inv_dt"):
            name, tensor = name.replace("inv_dt", "log_dt"), tensor.squeeze(-1)
        if name.endswith("A_real"):
            name = name.replace("A_real", "log_w_real")
        if name.endswith("A_imag"):
            name, tensor = name.replace("A_imag", "w_imag"), -tensor
        old[name] = tensor
    return old
