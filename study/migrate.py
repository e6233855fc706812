"""Run folders named by an earlier signature scheme, found and renamed to the signature their recorded
config has today (`study migrate-runs`, and on demand when a run or study looks for its folder).

Only folders holding a run.json are moved; a folder is never merged into or overwrites another.
"""

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from study.command_args import parse_key_values
from study.errors import ConfigError
from study.records import RESULTS_FILE, RUN_RECORD_FILE
from study.signature import signature
from study.training.record import read_record, update_record


@dataclass
class Move:
    source: Path        # <runs>/<group>/<old signature>
    target: Path        # <runs>/<group>/<signature of its recorded config>


@dataclass
class MigrateSettings:
    """`study migrate-runs key=value ...`."""
    runs: str = ""      # the runs folder (default: $STUDY_RUNS, else runs)
    dry_run: bool = False


def recorded_signature(run_dir: Path) -> str | None:
    """Today's signature of the config recorded in run_dir/run.json, or None when it has none or the
    recorded config no longer fits the schema."""
    config = read_record(run_dir).get("config")
    if not isinstance(config, dict):
        return None
    try:
        return signature(config)
    except ConfigError:
        return None


def planned_moves(runs_root: Path) -> list[Move]:
    """Every run folder under runs_root/<group>/ whose name is not its recorded config's signature."""
    moves = []
    for record in sorted(Path(runs_root).glob(f"*/*/{RUN_RECORD_FILE}")):
        folder = record.parent
        current = recorded_signature(folder)
        if current is not None and current != folder.name:
            moves.append(Move(folder, folder.parent / current))
    return moves


def apply_move(move: Move) -> bool:
    """Rename one folder and note its former name in run.json; False when the target already exists."""
    if move.target.exists():
        return False
    os.rename(move.source, move.target)
    record = read_record(move.target)
    previous = [name for name in record.get("previous_signatures", []) if name != move.target.name]
    update_record(move.target, signature=move.target.name, previous_signatures=previous + [move.source.name])
    return True


def update_results(study_folder: Path, renamed: dict[str, Path]) -> None:
    """Point results.parquet's signature and run_dir columns at renamed folders (old name -> new folder)."""
    path = study_folder / RESULTS_FILE
    if not renamed or not path.is_file():
        return
    table = pd.read_parquet(path)
    if "signature" not in table:
        return
    for old, folder in renamed.items():
        rows = table["signature"].astype(str) == old
        table.loc[rows, "signature"] = folder.name
        if "run_dir" in table:
            table.loc[rows, "run_dir"] = str(folder)
        if "checkpoint" in table:
            table.loc[rows & table["checkpoint"].notna(), "checkpoint"] = str(folder / "checkpoints" / "best.pt")
    temporary = study_folder / f".{RESULTS_FILE}.tmp"
    table.to_parquet(temporary, index=False)
    os.replace(temporary, path)


def adopt_moved_run(run_dir: Path) -> Path | None:
    """If run_dir does not exist but a sibling folder holds a run of the same config under an earlier
    signature, rename that folder to run_dir (and fix its study's results) and return its old path."""
    run_dir = Path(run_dir)
    if run_dir.exists() or not run_dir.parent.is_dir():
        return None
    for record in sorted(run_dir.parent.glob(f"*/{RUN_RECORD_FILE}")):
        folder = record.parent
        if folder.name != run_dir.name and recorded_signature(folder) == run_dir.name:
            if apply_move(Move(folder, run_dir)):
                update_results(run_dir.parent, {folder.name: run_dir})
                print(f"run folder {folder.name} renamed to {run_dir.name} (today's signature of its config)")
                return folder
    return None


def migrate_runs(runs_root: Path, dry_run: bool = False) -> tuple[list[Move], list[Move]]:
    """(moved, refused): rename every folder whose name is an earlier signature of its config."""
    moved, refused = [], []
    by_group: dict[Path, dict[str, Path]] = {}
    for move in planned_moves(runs_root):
        if dry_run:
            moved.append(move)
        elif apply_move(move):
            moved.append(move)
            by_group.setdefault(move.source.parent, {})[move.source.name] = move.target
        else:
            refused.append(move)
    for group, renamed in by_group.items():
        update_results(group, renamed)
    return moved, refused


def main(argv: list[str]) -> int:
    settings = parse_key_values(MigrateSettings, argv, "migrate-runs", "runs=runs dry_run=true")
    runs_root = Path(settings.runs or os.environ.get("STUDY_RUNS", "runs")).expanduser()
    if not runs_root.is_dir():
        raise ConfigError(f"runs={runs_root} is not a folder; pass the folder that holds your runs, e.g. runs=runs")
    moved, refused = migrate_runs(runs_root, settings.dry_run)
    verb = "would rename" if settings.dry_run else "renamed"
    for move in moved:
        print(f"{verb} {move.source} -> {move.target.name}")
    for move in refused:
        print(f"kept {move.source}: {move.target} already exists (compare the two and remove one)", file=sys.stderr)
    print(json.dumps({"runs": str(runs_root), verb.replace(" ", "_"): len(moved), "kept": len(refused)}))
    return 1 if refused else 0
