"""`train.init_from`: a checkpoint path, or a run signature under the runs folder, resolved to the
checkpoint whose weights start a run. It never loads the checkpoint or guesses between several runs.
"""

from pathlib import Path

from study.errors import ConfigError
from study.files import checked_name


def resolve_init_from(value: str, runs_root: Path) -> Path:
    """A checkpoint path, or a run signature found under the runs folder (its best.pt)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    checked_name(value, "train.init_from", "pass a checkpoint file that exists, or a run signature")
    matches = sorted(runs_root.glob(f"*/{value}*/checkpoints/best.pt"))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise ConfigError(f"train.init_from={value} matches several runs: {[str(m) for m in matches]}; "
                          "give the full signature or a checkpoint path")
    raise ConfigError(f"train.init_from={value} is neither a checkpoint file nor a run signature under "
                      f"{runs_root}; pass a path to best.pt or last.pt")
