"""Official SaShiMi checkpoints (state-spaces/s4): read one safely, infer its architecture, map its tensors onto ours.

Reads `.pt` state dicts and Lightning `.ckpt` files with torch.load(weights_only=True), or, when the file
also pickles other objects (OmegaConf hyper-parameters), with a restricted unpickler that rebuilds tensors
and replaces every other class by an inert stand-in; it never runs full pickle and never writes anything.

Official layout (src/models/sequence/backbones/sashimi.py, modules/s4block.py, kernels/ssm.py, nn/linear.py;
encoder `embedding`, decoder `sequence` of the SequenceLightningModule):
  encoder.0.weight (V, H)                       decoder.0.output_transform.{weight (V, H), bias (V,)}
  model.d_layers.i.linear.{weight_v, weight_g, bias}     (weight-normed TransposedLinear, DownPool)
  model.c_layers.j.<block>, model.u_layers.k.0.linear.*, model.u_layers.k.m.<block>    model.norm.{weight, bias}
  <block>: norm.norm.{m, s} | norm.norm.ln.{weight, bias};  S4: layer.layer.D (1, H),
           layer.layer.kernel.{inv_dt (H, 1), A_real, A_imag (1, N/2), B (1, 1, N/2, 2), P (R, 1, N/2, 2),
           C (1, H, N/2, 2), l_kernel ()}, layer.output_linear.0.{weight, bias};
           FF: layer.ff.0.0.{weight, bias}, layer.ff.2.{weight, bias}
The older (V3) names the official checkpoints/convert_v3_to_v4.py rewrites are accepted too.
"""

import pickle
import re
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from study.errors import CheckpointError
from study.model_config import ModelConfig

OFFICIAL_DT_TRANSFORMS = ("softplus", "exp")


# -- reading -----------------------------------------------------------------------------------------
class _Inert:
    """Stands in for any class or function the restricted reader does not allow: takes any arguments
    and any state, and does nothing with them."""

    def __new__(cls, *args, **kwargs):
        return super().__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __setitem__(self, key, value):
        pass

    def append(self, value):
        pass

    def extend(self, values):
        pass


@dataclass(frozen=True)
class _StorageKind:
    dtype: torch.dtype


_STORAGE_KINDS = {f"{name}Storage": dtype for name, dtype in [
    ("Float", torch.float32), ("Double", torch.float64), ("Half", torch.float16), ("BFloat16", torch.bfloat16),
    ("Long", torch.int64), ("Int", torch.int32), ("Short", torch.int16), ("Char", torch.int8),
    ("Byte", torch.uint8), ("Bool", torch.bool), ("ComplexFloat", torch.complex64),
    ("ComplexDouble", torch.complex128)]}
_ALLOWED = {("collections", "OrderedDict"): OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
            ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter}


class _TensorsOnlyUnpickler(pickle.Unpickler):
    """Rebuilds tensors from a torch zip archive; every other global becomes `_Inert`."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_KINDS:
            return _StorageKind(_STORAGE_KINDS[name])
        return _Inert

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage" and isinstance(pid[1], _StorageKind)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        raw = bytearray(self.archive.read(f"{self.prefix}/data/{pid[2]}"))
        untyped = torch.frombuffer(raw, dtype=torch.uint8).untyped_storage() if raw else torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=pid[1].dtype, _internal=True)


def _read_tensors_only(path: Path) -> object:
    with zipfile.ZipFile(path) as archive:
        pickles = [name for name in archive.namelist() if name.endswith("/data.pkl")]
        if len(pickles) != 1:
            raise CheckpointError(f"{path} is a zip file but not a torch checkpoint (no single data.pkl); "
                                  "pass an official .pt or .ckpt file")
        prefix = pickles[0][: -len("/data.pkl")]
        with archive.open(pickles[0]) as handle:
            return _TensorsOnlyUnpickler(handle, archive, prefix).load()


def read_official_state(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, container) of an official checkpoint: container is 'state_dict' (.pt) or 'lightning'."""
    from study.training.checkpoint import MAGIC
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no file at {path}: pass checkpoint=PATH of an official .pt or .ckpt file")
    with path.open("rb") as handle:
        head = handle.read(len(MAGIC))
    if head == MAGIC:
        raise CheckpointError(f"{path} is already a sashimi-study checkpoint; use it directly "
                              "(study evaluate checkpoint=... / study generate checkpoint=...)")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is truncated or not a torch checkpoint (no zip archive); "
                              "download it again (official checkpoints are torch.save zip files)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        payload = None  # other pickled objects besides tensors: read the tensors only
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError) as error:
        raise CheckpointError(f"{path} is truncated or corrupt ({str(error).splitlines()[0]}); "
                              "download it again") from error
    if payload is None:
        try:
            payload = _read_tensors_only(path)
        except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, EOFError, RuntimeError, TypeError,
                ValueError, AttributeError, IndexError) as error:
            raise CheckpointError(f"{path} is truncated or corrupt ({str(error).splitlines()[0]}); "
                                  "download it again") from error
    container = "state_dict"
    if isinstance(payload, dict) and isinstance(payload.get("state_dict"), dict):
        payload, container = payload["state_dict"], "lightning"
    if not isinstance(payload, dict) or not payload:
        raise CheckpointError(f"{path} holds no state dict (a {type(payload).__name__}); pass an official "
                              "SaShiMi .pt state dict or Lightning .ckpt")
    for name, tensor in payload.items():
        if not isinstance(tensor, torch.Tensor):
            raise CheckpointError(f"{path}: entry {name!r} of its state dict is a {type(tensor).__name__}, "
                                  "not a tensor; this is not an official SaShiMi checkpoint")
    return dict(payload), container


# -- names -------------------------------------------------------------------------------------------
def from_v3_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The renames of the official convert_v3_to_v4.py: log_dt -> inv_dt (H) -> (H, 1), w -> A (A_imag
    negated), kernel.kernel -> kernel (L -> l_kernel), FFTConv one level deeper (layer.kernel, layer.D)."""
    renamed = {}
    for name, tensor in state.items():
        if "log_dt" in name:
            tensor = tensor.unsqueeze(-1)
        name = name.replace("log_dt", "inv_dt")
        for old, new in (("inv_w_real", "A_real"), ("log_w_real", "A_real"), ("w_imag", "A_imag")):
            name = name.replace(old, new)
        if name.endswith("A_imag"):
            tensor = -tensor
        name = name.replace("kernel.kernel.L", "kernel.kernel.l_kernel").replace("kernel.kernel", "kernel")
        name = name.replace("layer.kernel", "layer.layer.kernel").replace("layer.D", "layer.layer.D")
        renamed[name] = tensor
    return renamed


def _squeeze_channel(tensor: torch.Tensor) -> torch.Tensor:
    """The official leading axis of size `channels` (1 for SaShiMi): (1, ...) -> (...)."""
    return tensor[0] if tensor.dim() > 0 and tensor.shape[0] == 1 else tensor


_BLOCK = {  # official name inside a residual block -> (our name, layout change)
    "norm.norm.m": ("norm.m", None), "norm.norm.s": ("norm.s", None),
    "norm.norm.ln.weight": ("norm.norm.weight", None), "norm.norm.ln.bias": ("norm.norm.bias", None),
    "layer.layer.D": ("layer.D", _squeeze_channel),                       # (1, H) -> (H,)
    "layer.layer.kernel.inv_dt": ("layer.kernel.inv_dt", None),           # (H, 1)
    "layer.layer.kernel.A_real": ("layer.kernel.A_real", None),           # (1, N/2)
    "layer.layer.kernel.A_imag": ("layer.kernel.A_imag", None),
    "layer.layer.kernel.B": ("layer.kernel.B", _squeeze_channel),         # (1, 1, N/2, 2) -> (1, N/2, 2)
    "layer.layer.kernel.P": ("layer.kernel.P", None),                     # (R, 1, N/2, 2)
    "layer.layer.kernel.C": ("layer.kernel.C", _squeeze_channel),         # (1, H, N/2, 2) -> (H, N/2, 2)
    "layer.output_linear.0.weight": ("layer.output_linear.weight_raw", None),
    "layer.output_linear.0.bias": ("layer.output_linear.bias", None),
    "layer.ff.0.0.weight": ("layer.linear_in.weight_raw", None), "layer.ff.0.0.bias": ("layer.linear_in.bias", None),
    "layer.ff.2.weight": ("layer.linear_out.weight_raw", None), "layer.ff.2.bias": ("layer.linear_out.bias", None),
}
_POOL = {f"linear.{leaf}": (f"linear.{leaf}", None) for leaf in ("weight_v", "weight_g", "bias")}
_TOP = {"encoder.0.weight": ("encoder.weight", None), "decoder.0.output_transform.weight": ("decoder.weight", None),
        "decoder.0.output_transform.bias": ("decoder.bias", None), "model.norm.weight": ("backbone.final_norm.weight", None),
        "model.norm.bias": ("backbone.final_norm.bias", None)}
_PATTERNS = [
    (re.compile(r"model\.d_layers\.(\d+)\.(.+)"), lambda m: (f"backbone.down_pools.{m[1]}", m[2], _POOL)),
    (re.compile(r"model\.c_layers\.(\d+)\.(.+)"), lambda m: (f"backbone.centre.{m[1]}", m[2], _BLOCK)),
    (re.compile(r"model\.u_layers\.(\d+)\.0\.(.+)"), lambda m: (f"backbone.up_stages.{m[1]}.0", m[2], _POOL)),
    (re.compile(r"model\.u_layers\.(\d+)\.(\d+)\.(.+)"),
     lambda m: (f"backbone.up_stages.{m[1]}.{m[2]}", m[3], _BLOCK)),
]
L_KERNEL = "layer.layer.kernel.l_kernel"


def _our_name(official: str) -> tuple[str, object] | None:
    if official in _TOP:
        return _TOP[official]
    for pattern, split in _PATTERNS:
        match = pattern.fullmatch(official)
        if match:
            prefix, rest, table = split(match)
            if rest in table:
                ours, change = table[rest]
                return f"{prefix}.{ours}", change
            return None
    return None


# -- architecture ------------------------------------------------------------------------------------
@dataclass
class OfficialModel:
    """An official checkpoint in our terms: the inferred config, our state dict, and what was found."""
    config: ModelConfig
    state: dict[str, torch.Tensor]
    official_names: dict[str, str]                 # our name -> official name
    kernel_lengths: dict[str, int]                 # our S4 block prefix -> official l_kernel (0: C not yet C~)
    layout: str                                    # v4 | v3
    notes: list[str] = field(default_factory=list)


def _shape(state: dict, name: str, source: str) -> tuple[int, ...]:
    if name not in state:
        raise CheckpointError(f"{source} has no tensor {name!r}, which every official SaShiMi checkpoint has; "
                              "this is not a SaShiMi checkpoint (or it is truncated)")
    return tuple(state[name].shape)


def _indices(state: dict, pattern: str) -> list[int]:
    return sorted({int(m[1]) for name in state if (m := re.fullmatch(pattern, name))})


def infer_config(state: dict[str, torch.Tensor], source: str, dt_transform: str,
                 sample_len: int | None) -> tuple[ModelConfig, dict[str, int]]:
    """The ModelConfig the tensors imply (depth, width, pools, expand, ff, GLU, norm, state size, S4/S4D,
    reference length from the l_kernel buffers) and the l_kernel of each S4 block (by official prefix)."""
    n_classes, d_model = _shape(state, "encoder.0.weight", source)
    downs = _indices(state, r"model\.d_layers\.(\d+)\..+")
    pools, channels, expand = [], d_model, None
    for index in downs:
        out_channels, grouped = _shape(state, f"model.d_layers.{index}.linear.weight_v", source)
        stride, ratio = grouped // channels, out_channels // channels
        if stride * channels != grouped or ratio * channels != out_channels or (expand or ratio) != ratio:
            raise CheckpointError(f"{source}: model.d_layers.{index}.linear.weight_v has shape "
                                  f"{(out_channels, grouped)}, not (expand * {channels}, stride * {channels}) "
                                  "with one expand for every pool; this SaShiMi variant cannot be mapped")
        pools.append(stride)
        expand, channels = ratio, out_channels
    centre = _indices(state, r"model\.c_layers\.(\d+)\..+")
    if not centre:
        raise CheckpointError(f"{source} has no model.c_layers.* tensors; this is not a SaShiMi checkpoint")
    has_ff = any(name.startswith("model.c_layers.1.layer.ff.") for name in state)
    n_layers = len(centre) // 2 if has_ff else len(centre)
    ff = _shape(state, "model.c_layers.1.layer.ff.0.0.weight", source)[0] // channels if has_ff else 0
    first = "model.c_layers.0"
    half_state = _shape(state, f"{first}.layer.layer.kernel.C", source)[-2]
    glu = _shape(state, f"{first}.layer.output_linear.0.weight", source)[0] == 2 * channels
    norm = "transposed_ln" if f"{first}.norm.norm.m" in state else "layer_norm"
    mode = "nplr" if f"{first}.layer.layer.kernel.P" in state else "diag"
    rank = _shape(state, f"{first}.layer.layer.kernel.P", source)[0] if mode == "nplr" else 1
    # S4 blocks by depth: the centre at len(pools), up stage k at len(pools) - 1 - k.
    lengths, blocks = {}, []
    for index in range(0, len(centre), 2 if has_ff else 1):
        blocks.append((f"model.c_layers.{index}", len(pools)))
    for stage in _indices(state, r"model\.u_layers\.(\d+)\..+"):
        for index in range(1, 1 + len(centre), 2 if has_ff else 1):
            blocks.append((f"model.u_layers.{stage}.{index}", len(pools) - 1 - stage))
    l_max = None
    for prefix, depth in blocks:
        name = f"{prefix}.{L_KERNEL}"
        value = int(state[name].item()) if name in state else 0
        lengths[prefix] = value
        if value and l_max is None:
            l_max = value * _product(pools[:depth])
    if mode == "nplr":
        for prefix, depth in blocks:
            expected = (l_max or 0) // _product(pools[:depth])
            if lengths[prefix] not in (0, expected):
                raise CheckpointError(f"{source}: {prefix}.{L_KERNEL} = {lengths[prefix]} disagrees with the other "
                                      f"S4 layers (expected {expected} at this pooling depth); C~ cannot be mapped")
    if l_max is None:
        if sample_len is None:
            raise CheckpointError(f"{source} has no l_kernel lengths (C was never turned into C~); "
                                  "pass sample_len=131072 (the training window) to import it")
        l_max = sample_len
    try:  # ModelConfig checks every value as it is built
        config = ModelConfig(name="official", n_layers=n_layers, d_model=d_model, pool=pools, expand=expand or 1,
                             ff=ff, norm=norm, n_classes=n_classes, l_max=l_max, ssm_mode=mode,
                             ssm_init="legs" if mode == "nplr" else "diag-lin", d_state=2 * half_state, rank=rank,
                             dt_transform=dt_transform, final_act="glu" if glu else "id")
    except ValueError as error:
        raise CheckpointError(f"{source}: the inferred architecture is invalid: {error}") from error
    return config, lengths


def _product(values: list[int]) -> int:
    result = 1
    for value in values:
        result *= value
    return result


def map_official(state: dict[str, torch.Tensor], source: str, dt_transform: str = "softplus",
                 sample_len: int | None = None) -> OfficialModel:
    """Our config and state dict for an official state dict; refuses at the first tensor it cannot place."""
    if dt_transform not in OFFICIAL_DT_TRANSFORMS:
        raise CheckpointError(f"dt_transform={dt_transform!r} is not one of {OFFICIAL_DT_TRANSFORMS}; the official "
                              "V4 configs use softplus, V3 checkpoints exp")
    layout, notes = "v4", []
    if any(".kernel.kernel." in name or "log_dt" in name for name in state):
        state, layout, dt_transform = from_v3_names(state), "v3", "exp"
        notes.append("V3 tensor names (log_dt, kernel.kernel.*) renamed as the official convert_v3_to_v4.py; "
                     "dt = exp(inv_dt)")
    for official in state:  # every name first, so that a foreign file is refused at its first tensor
        if not official.endswith(L_KERNEL) and _our_name(official) is None:
            raise CheckpointError(f"{source}: tensor {official!r} has no counterpart in this project's SaShiMi "
                                  "(not an official SaShiMi checkpoint, or a variant this import does not know)")
    config, lengths = infer_config(state, source, dt_transform, sample_len)
    ours, names, kernel_lengths = {}, {}, {}
    for official, tensor in state.items():
        if official.endswith(L_KERNEL):
            prefix = official[: -len(L_KERNEL) - 1]
            mapped = _our_name(f"{prefix}.layer.layer.kernel.C")
            if mapped is None:
                raise CheckpointError(f"{source}: tensor {official!r} has no counterpart in this project's SaShiMi")
            kernel_lengths[mapped[0][: -len(".layer.kernel.C")]] = lengths.get(prefix, int(tensor.item()))
            continue
        name, change = _our_name(official)
        ours[name] = (change(tensor) if change else tensor).detach().clone().float() \
            if tensor.is_floating_point() else tensor.clone()
        names[name] = official
    return OfficialModel(config=config, state=ours, official_names=names, kernel_lengths=kernel_lengths,
                         layout=layout, notes=notes)


def build_imported(official: OfficialModel, source: str):
    """Our SaShiMi holding the official weights: every tensor placed, shapes checked (official names in
    errors); S4 layers whose l_kernel was 0 get C~ computed from their C at the reference length."""
    from study.sashimi import SaShiMi
    model = SaShiMi(official.config)
    own = model.state_dict()
    for name, tensor in own.items():
        where = official.official_names.get(name, name)
        if name not in official.state:
            raise CheckpointError(f"{source} lacks the tensor for {name!r} of the inferred architecture "
                                  f"({official.config.n_layers} layers, pools {official.config.pool}); "
                                  "the checkpoint is incomplete or of another design")
        if official.state[name].shape != tensor.shape:
            raise CheckpointError(f"{source}: tensor {where!r} has shape {tuple(official.state[name].shape)}, "
                                  f"the inferred architecture needs {tuple(tensor.shape)} for {name!r}")
    model.load_state_dict(official.state)
    with torch.no_grad():
        for prefix, length in official.kernel_lengths.items():
            if length == 0 and official.config.ssm_mode == "nplr":
                kernel = model.get_submodule(f"{prefix}.layer.kernel")
                C = torch.view_as_complex(kernel.C.detach().clone())
                kernel.C.copy_(torch.view_as_real(kernel._c_tilde_from_c(C)))
                official.notes.append(f"{official.official_names[prefix + '.layer.kernel.C']}: C turned into C~ "
                                      f"at length {kernel.reference_length} (its l_kernel was 0)")
    return model.eval()
