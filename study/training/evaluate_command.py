"""`study evaluate checkpoint=PATH [data=NAME] [data.quantizer=...] [splits=[val,test]]`: the workshop's table
(final/{split}/loss, bpb, accuracy, accuracy@3/5/10) of any project checkpoint on any prepared data.

Uses the training loop's evaluation and metrics; writes one JSON file of results (and notes it in the
run record when the checkpoint sits in a run folder). It never changes the checkpoint.
"""

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from omegaconf import MISSING, OmegaConf

from study.command_args import parse_key_values
from study.config import CONFIG_DIR, compose_config
from study.errors import ConfigError
from study.training.metrics import prefixed
from study.records import RUN_RECORD_FILE
from study.training.record import device_description, read_record, update_record, write_json_atomic

EXAMPLE = "study evaluate checkpoint=runs/imported/sashimi_youtubemix-<sha>/checkpoints/best.pt data=youtubemix"
# The checkpoint's data knobs carried over when no data=NAME is given (evaluate on its own data).
CARRIED_DATA_KNOBS = ("sample_rate", "clip_seconds", "split", "sample_len", "bits", "quantization",
                      "normalization", "quantizer", "seed", "toy_clips", "toy_clip_seconds")


@dataclass
class EvaluateSettings:
    checkpoint: str = MISSING
    splits: list[str] = field(default_factory=lambda: ["val", "test"])
    batch_size: int = 1
    max_windows: int | None = None     # first windows of each split only (in the split's fixed order)
    device: str = "auto"               # auto | cpu | cuda
    precision: str = "fp32"            # fp32 | bf16 (CUDA)
    out: str | None = None             # results JSON; default <run>/evaluations/<data>-<fingerprint12>-<quantizer>.json


def split_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """(this command's key=value settings, Hydra overrides such as data=... / data.* / paths.*)."""
    own = {f.name for f in fields(EvaluateSettings)}
    mine = [token for token in argv if token.partition("=")[0] in own]
    return mine, [token for token in argv if token not in mine]


def _override_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_override_value(item) for item in value) + "]"
    return str(value)


def data_overrides(checkpoint_data: dict, overrides: list[str]) -> list[str]:
    """Overrides that select the checkpoint's own data (its config and knobs) unless data=NAME is given."""
    if any(token.startswith("data=") for token in overrides):
        return overrides
    name = checkpoint_data.get("name")  # a smoke-scale stand-in records its own name here
    if not name or not (CONFIG_DIR / "data" / f"{name}.yaml").is_file():
        raise ConfigError("the checkpoint's data config is not a shipped one; pass data=NAME "
                          "(youtubemix, bigband, folder, toy-piano, toy-trio) and its overrides")
    carried = [f"data.{key}={_override_value(checkpoint_data[key])}" for key in CARRIED_DATA_KNOBS
               if key in checkpoint_data]
    if checkpoint_data.get("source") == "folder" and checkpoint_data.get("path"):
        carried.append(f"data.path={checkpoint_data['path']}")
    return [f"data={name}", *carried, *overrides]


def evaluate_checkpoint(settings: EvaluateSettings, overrides: list[str], command: str = "") -> tuple[dict, Path]:
    from study.data.dataset import make_loader
    from study.data.prepare import prepare
    from study.training.checkpoint import load_model
    from study.training.evaluation import evaluate, select_device

    checkpoint = Path(settings.checkpoint).expanduser()
    device = select_device(settings.device)
    model, payload = load_model(checkpoint, map_location=device)
    trained_on = dict(payload.get("data_config") or (payload.get("config") or {}).get("data") or {})
    config = compose_config(data_overrides(trained_on, overrides))
    data = config.data
    if 2 ** int(data.bits) != model.config.n_classes:
        raise ConfigError(f"data.bits={data.bits} gives {2 ** int(data.bits)} tokens, the checkpoint predicts "
                          f"{model.config.n_classes}; set data.bits={model.config.n_classes.bit_length() - 1}")
    if int(data.sample_len) % model.config.total_pool:
        raise ConfigError(f"data.sample_len={data.sample_len} is not a multiple of the model's pooling "
                          f"{model.config.total_pool}; use e.g. data.sample_len=131072")
    unknown = [split for split in settings.splits if split not in ("train", "val", "test")]
    if unknown or not settings.splits:
        raise ConfigError(f"splits={settings.splits} must name some of train, val, test; e.g. splits=[val,test]")
    prepared = prepare(data, config.paths, progress=True)
    metrics, windows, started = {}, {}, time.time()
    for split in settings.splits:
        loader = make_loader(prepared, split, settings.batch_size, shuffle=False, seed=0)
        count = len(loader.dataset) if settings.max_windows is None else min(settings.max_windows, len(loader.dataset))
        print(f"evaluating {split}: {count} windows of {prepared.sample_len} samples ...", flush=True)
        metrics.update(prefixed(evaluate(model, loader, device, settings.precision, settings.max_windows),
                                f"final/{split}"))
        windows[split] = count
    trained_quantizer = trained_on.get("quantizer", "torchaudio")  # checkpoints before data.quantizer: torchaudio
    result = {
        "checkpoint": str(checkpoint.resolve()), "signature": payload.get("signature"),
        "imported_from": payload.get("imported_from"), "data": str(data.name), "data_cache": str(prepared.path),
        "data_fingerprint": prepared.fingerprint, "quantizer": str(data.quantizer),
        "trained_quantizer": trained_quantizer, "quantizer_matches_training": str(data.quantizer) == trained_quantizer,
        "data_config": OmegaConf.to_container(data, resolve=True), "windows": windows, "metrics": metrics,
        "max_windows": settings.max_windows, "device": device_description(device),
        "seconds": round(time.time() - started, 3), "command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    out = (Path(settings.out).expanduser() if settings.out else
           run_dir / "evaluations" / f"{data.name}-{prepared.fingerprint[:12]}-{data.quantizer}.json")
    write_json_atomic(out, result)
    if (run_dir / RUN_RECORD_FILE).is_file():
        evaluations = dict(read_record(run_dir).get("evaluations", {}))
        evaluations[out.stem] = {"file": str(out), "metrics": metrics, "quantizer": result["quantizer"],
                                 "data_fingerprint": prepared.fingerprint}
        update_record(run_dir, evaluations=evaluations)
    return result, out


def main(argv: list[str]) -> int:
    mine, overrides = split_arguments(argv)
    settings = parse_key_values(EvaluateSettings, mine, "evaluate", EXAMPLE)
    result, out = evaluate_checkpoint(settings, overrides, command=" ".join(["study", "evaluate", *argv]))
    print(f"{result['data']} ({result['data_fingerprint'][:12]}), quantizer {result['quantizer']}"
          + ("" if result["quantizer_matches_training"] else
             f" (the checkpoint was trained on {result['trained_quantizer']} tokens: not like for like)"))
    for name, value in sorted(result["metrics"].items()):
        print(f"  {name:<24} {value:.4f}")
    print(f"results: {out}")
    return 0
