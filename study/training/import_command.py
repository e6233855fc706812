"""`study import checkpoint=PATH [out=DIR] [data=youtubemix] [dt_transform=softplus]`: an official SaShiMi
checkpoint as a project run folder (checkpoints/best.pt + run.json), usable by evaluate and generate.

Reads the official file only through study.training.official (no full pickle); never overwrites an
existing imported checkpoint of different weights.
"""

import hashlib
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import MISSING, OmegaConf

from study.command_args import parse_key_values
from study.config import compose_config
from study.errors import CheckpointError
from study.sashimi import parameter_count
from study.training.checkpoint import save_checkpoint
from study.training.official import build_imported, map_official, read_official_state
from study.records import RUN_RECORD_FILE
from study.training.record import git_state, package_versions, read_record, update_record

EXAMPLE = "study import checkpoint=checkpoints/sashimi_youtubemix.pt"


@dataclass
class ImportSettings:
    checkpoint: str = MISSING          # official .pt state dict or Lightning .ckpt
    out: str | None = None             # run folder; default <paths.runs>/imported/<file stem>-<sha256[:12]>
    data: str = "youtubemix"           # data config the weights were trained on (bits, sample_len from the file)
    dt_transform: str = "softplus"     # official V4 configs: softplus; V3 names imply exp
    sample_len: int | None = None      # only for files whose l_kernel buffers are all 0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_checkpoint(settings: ImportSettings, command: str = "") -> Path:
    """Map, check and write the project checkpoint; returns the run folder."""
    source = Path(settings.checkpoint).expanduser()
    state, container = read_official_state(source)
    official = map_official(state, str(source), settings.dt_transform, settings.sample_len)
    model = build_imported(official, str(source))
    config = official.config
    digest = file_sha256(source)
    base = compose_config([f"data={settings.data}"])
    data = OmegaConf.to_container(base.data, resolve=True)
    data.update({"bits": int(math.log2(config.n_classes)), "sample_len": config.l_max})
    run_dir = (Path(settings.out).expanduser() if settings.out
               else Path(str(base.paths.runs)) / "imported" / f"{source.stem}-{digest[:12]}")
    signature = f"imported-{digest[:12]}"
    earlier = read_record(run_dir).get("imported_from", {}).get("sha256")
    if earlier not in (None, digest):
        raise CheckpointError(f"{run_dir} already holds an import of another file (sha256 {earlier[:12]}); "
                              "pass another out=DIR")
    imported_from = {"path": str(source.resolve()), "sha256": digest, "container": container,
                     "layout": official.layout, "tensors": len(state), "notes": official.notes}
    payload = {"model_config": asdict(config), "model_state": model.state_dict(),
               "config": {"name": f"{source.stem} (official)", "data": data, "model": asdict(config)},
               "data_config": data, "signature": signature, "imported_from": imported_from}
    checkpoint = save_checkpoint(run_dir / "checkpoints" / "best.pt", payload)
    update_record(run_dir, status="imported", name=f"{source.stem} (official)", signature=signature,
                  imported_from=imported_from, model_config=asdict(config), data_config=data,
                  parameters=parameter_count(model), git=git_state(Path(__file__).parent),
                  packages=package_versions(), command=command, best_checkpoint=str(checkpoint),
                  finished=time.time())
    return run_dir


def main(argv: list[str]) -> int:
    settings = parse_key_values(ImportSettings, argv, "import", EXAMPLE)
    run_dir = import_checkpoint(settings, command=" ".join(["study", "import", *argv]))
    record = read_record(run_dir)
    model = record["model_config"]
    print(f"imported {record['imported_from']['path']} ({record['imported_from']['layout']} names, "
          f"{record['imported_from']['tensors']} tensors, {record['parameters']:,} parameters)")
    print(f"  architecture  {model['n_layers']} layers, d_model {model['d_model']}, pools {model['pool']}, "
          f"expand {model['expand']}, ff {model['ff']}, {model['final_act']}, N {model['d_state']}, "
          f"{model['ssm_mode']}, dt {model['dt_transform']}, reference length {model['l_max']}")
    for note in record["imported_from"]["notes"]:
        print(f"  note          {note}")
    print(f"run folder: {run_dir}\n  checkpoint: {record['best_checkpoint']}\n  record: {run_dir / RUN_RECORD_FILE}")
    print(f"next: study evaluate checkpoint={record['best_checkpoint']} data={record['data_config']['name']}")
    return 0
