"""The run record: one JSON file beside a run's checkpoints that says how to reproduce it.

Written atomically; it records facts (config, signature, code version, packages, device, data
fingerprint, metrics, status) and never anything secret such as tokens or environment variables.
"""

import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from study.files import write_atomic
from study.records import RUN_RECORD_FILE

PACKAGES = ("torch", "torchaudio", "triton", "numba", "numpy", "hydra-core", "omegaconf", "datasets",
            "soundfile", "soxr", "ray", "wandb", "optuna", "pandas", "sashimi-study")


def git_state(directory: Path) -> dict:
    """{'commit': sha or None, 'dirty': bool or None} of the repository holding `directory`."""
    def run(*args):
        return subprocess.run(["git", *args], cwd=directory, capture_output=True, text=True, timeout=10)
    try:
        commit = run("rev-parse", "HEAD")
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = run("status", "--porcelain", "--untracked-files=no")
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": None, "dirty": None}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict:
    """{distribution: installed version, or None where it is not installed}."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def device_description(device: torch.device) -> dict:
    info = {"type": device.type, "platform": platform.platform(), "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_json_atomic(path: Path, content: dict) -> None:
    write_atomic(path, json.dumps(content, indent=2, sort_keys=True, default=str).encode())


def read_record(run_dir: Path) -> dict:
    path = Path(run_dir) / RUN_RECORD_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def update_record(run_dir: Path, **fields) -> dict:
    """Merge `fields` into run_dir/run.json (created if missing) and rewrite it atomically."""
    record = read_record(run_dir)
    record.update(fields)
    write_json_atomic(Path(run_dir) / RUN_RECORD_FILE, record)
    return record
