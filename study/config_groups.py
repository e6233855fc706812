"""Where the Hydra configs live and which options each config group offers, read from the folder alone.

Imports nothing heavy (no Hydra, no torch), so `study COMMAND --help` can list the groups quickly.
"""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent / "experiments"


def config_groups() -> dict[str, list[str]]:
    """Available options for every config group, e.g. {'model': ['sashimi-2', 'sashimi-8'], ...}."""
    groups = {}
    for folder in sorted(p for p in CONFIG_DIR.iterdir() if p.is_dir()):
        groups[folder.name] = sorted(f.stem for f in folder.glob("*.yaml"))
    return groups
