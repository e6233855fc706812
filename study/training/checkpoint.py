"""Checkpoints: written atomically with a checksum, read only with torch.load(weights_only=True).

A checkpoint stores the model config beside the weights so it can be rebuilt alone. A truncated or
corrupt file is detected and never replaces a good one; nothing here unpickles arbitrary objects.
"""

import hashlib
import io
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch

from study.files import write_atomic
from study.errors import CheckpointError
from study.model_config import ModelConfig
from study.sashimi import SaShiMi

FORMAT = "sashimi-study/checkpoint/1"
MAGIC = b"SASHIMI-STUDY-CKPT1\n"
DIGEST_BYTES = 32
REQUIRED_KEYS = ("model_config", "model_state")


def save_checkpoint(path: Path, payload: dict) -> Path:
    """Write MAGIC + sha256(payload) + payload to a temporary file, fsync, then rename onto `path`.

    Refuses (CheckpointError) a payload whose weights are not all finite: such a file is never written."""
    bad = non_finite_tensors(payload.get("model_state", {}))
    if bad:
        raise CheckpointError(f"refusing to write {path}: the weights are not finite (first: {bad[0]!r}); "
                              "the previous checkpoint is kept. Lower train.lr or set train.gradient_clip")
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    data = buffer.getvalue()
    return write_atomic(path, MAGIC + hashlib.sha256(data).digest() + data)


def non_finite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of `state` that hold a NaN or an infinity."""
    return [name for name, tensor in state.items()
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    """Read and verify a checkpoint written by save_checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: check the path (a run keeps them in <run>/checkpoints/)")
    raw = path.read_bytes()
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a sashimi-study checkpoint (wrong header); "
                              "pass a file written by `study train` (last.pt or best.pt)")
    digest, data = raw[len(MAGIC):len(MAGIC) + DIGEST_BYTES], raw[len(MAGIC) + DIGEST_BYTES:]
    if hashlib.sha256(data).digest() != digest:
        raise CheckpointError(f"{path} is corrupt or truncated (checksum mismatch; the checksum detects "
                              "corruption and truncation, not forgery); use another checkpoint, "
                              "e.g. best.pt instead of last.pt, or rerun the training to rewrite it")
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError or others for foreign pickles
        raise CheckpointError(
            f"{path} passes its checksum but holds more than tensors and plain containers{refused_global(error)}, "
            "so it was not written by `study train` and is refused unread. The checksum detects corruption and "
            "truncation, not forgery: never load such a file with full pickle. Use a last.pt or best.pt that "
            "`study train` wrote") from None
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a sashimi-study checkpoint; "
                              "pass a file written by `study train` (last.pt or best.pt)")
    if payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} has format {payload.get('format')!r}, expected {FORMAT!r}; "
                              "pass a file written by `study train` (last.pt or best.pt)")
    require_keys(payload, REQUIRED_KEYS, path)
    if not isinstance(payload["model_config"], dict) or not isinstance(payload["model_state"], dict):
        raise CheckpointError(f"{path}: 'model_config' and 'model_state' must be dicts; the file was not written "
                              "by `study train`; use a last.pt or best.pt that it wrote")
    return payload


def refused_global(error: Exception) -> str:
    """' (it names NAME)' for torch's 'Unsupported global: GLOBAL NAME', else ''; never torch's advice."""
    match = re.search(r"(?i)unsupported global:? (?:GLOBAL )?([\w.]+)", str(error))
    return f" (it asks to import {match.group(1)})" if match else ""


def require_keys(payload: dict, keys: tuple[str, ...], path: Path, purpose: str = "", fix: str = "") -> None:
    missing = [key for key in keys if key not in payload]
    if missing:
        raise CheckpointError(f"{path} lacks {', '.join(repr(k) for k in missing)}{purpose}; it was not written by "
                              f"this version of `study train`: use a last.pt or best.pt that it wrote{fix}")


def model_config_of(payload: dict) -> ModelConfig:
    known = {f.name for f in fields(ModelConfig)}
    try:
        return ModelConfig(**{k: v for k, v in payload["model_config"].items() if k in known})
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"the checkpoint's model_config cannot build a model ({error}); use a last.pt or "
                              "best.pt that `study train` wrote") from error


def load_model(path: Path, map_location: str | torch.device = "cpu") -> tuple[SaShiMi, dict]:
    """Rebuild the model stored in a checkpoint; returns (model in eval mode, payload)."""
    payload = load_checkpoint(path, map_location)
    config = model_config_of(payload)
    try:
        model = SaShiMi(config)
    except (TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{path}: its model_config cannot build a model ({type(error).__name__}: {error}); "
                              "use a last.pt or best.pt that `study train` wrote") from error
    load_weights(model, payload["model_state"], source=str(path))
    return model.to(map_location).eval(), payload


def load_weights(model: torch.nn.Module, state: dict, source: str) -> None:
    """Copy `state` into `model`, refusing any missing, unexpected or differently shaped tensor."""
    own = model.state_dict()
    for name, tensor in own.items():
        if name in state and not isinstance(state[name], torch.Tensor):
            raise CheckpointError(f"{source}: {name!r} is a {type(state[name]).__name__}, not a tensor; "
                                  "use a checkpoint written by `study train`")
        if name not in state:
            raise CheckpointError(f"{source} comes from another architecture: it has no tensor {name!r}; "
                                  "build the model with the checkpoint's own config")
        if state[name].shape != tensor.shape:
            raise CheckpointError(f"{source} comes from another architecture: tensor {name!r} has shape "
                                  f"{tuple(state[name].shape)}, the model expects {tuple(tensor.shape)}")
    extra = sorted(set(state) - set(own))
    if extra:
        raise CheckpointError(f"{source} comes from another architecture: unexpected tensor {extra[0]!r}")
    model.load_state_dict(state)


def model_payload(model: SaShiMi) -> dict:
    return {"model_config": asdict(model.config), "model_state": model.state_dict()}


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint opened for reading: what `study.load_checkpoint(path)` returns."""
    path: Path
    sha256: str            # of the whole file, as `sha256sum` prints it
    config: dict           # the run's resolved config ({} for a bare model checkpoint)
    step: int              # optimizer steps taken when it was written
    epoch: int             # epochs completed when it was written
    metrics: dict          # the last evaluated epoch's metrics (its own "epoch" and "step" included)
    weights: dict          # the model's state dict: tensor name -> tensor
    model_config: ModelConfig
    payload: dict          # everything stored, optimizer and RNG state included

    def model(self) -> SaShiMi:
        """The network rebuilt from `model_config` with these weights, in eval mode on the CPU."""
        model = SaShiMi(self.model_config)
        load_weights(model, self.weights, source=str(self.path))
        return model.eval()


def open_checkpoint(path: Path | str) -> Checkpoint:
    """Read, verify and unpack a checkpoint on the CPU (through load_checkpoint: never a full unpickle)."""
    path = Path(path).expanduser()
    payload = load_checkpoint(path)
    with path.open("rb") as file:
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    progress = payload.get("progress") or {}
    history = progress.get("history") or []
    return Checkpoint(path=path, sha256=sha256, config=payload.get("config") or {},
                      step=int(progress.get("step", 0)), epoch=int(progress.get("epoch", 0)),
                      metrics=dict(history[-1]) if history else {}, weights=payload["model_state"],
                      model_config=model_config_of(payload), payload=payload)
