"""Checks that the installed Python environment is exactly the committed lock, then imports every
runtime dependency. Never installs or changes anything: it only reads metadata and imports."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import re
import sys
import sysconfig
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
PYPROJECT = ROOT / "pyproject.toml"

# Distributions whose import name is not their distribution name.
IMPORT_NAMES = {
    "hydra-core": "hydra",
    "huggingface-hub": "huggingface_hub",
    "ray": "ray.tune",
    "python-multipart": "multipart",
    "ipython": "IPython",
    "pyyaml": "yaml",
}


def locked_versions(lock: Path = LOCK) -> dict[str, str]:
    """`{canonical name: version}` for every lock entry whose marker holds on this interpreter."""
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$", line)
        if not match:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate():
            continue
        pins[canonicalize_name(name)] = version
    return pins


def installed_versions() -> dict[str, str]:
    """What this interpreter's own site-packages holds (not what other entries of sys.path add, such as
    the packages Ray vendors in ray/thirdparty_files once it is imported)."""
    folders = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions(path=folders)}


def lock_differences(lock: Path = LOCK) -> list[str]:
    """Every difference between the lock and the installed tree, one line each (empty: identical)."""
    wanted, have = locked_versions(lock), installed_versions()
    problems = []
    for name, version in sorted(wanted.items()):
        if name not in have:
            problems.append(f"{name}=={version} is locked but not installed")
        elif have[name] != version:
            problems.append(f"{name} is {have[name]}, the lock says {version}")
    allowed_extra = {"sashimi-study", "pip", "setuptools", "wheel", "uv"}
    for name in sorted(set(have) - set(wanted) - allowed_extra):
        problems.append(f"{name}=={have[name]} is installed but not in the lock")
    return problems


def runtime_modules(pyproject: Path = PYPROJECT) -> list[str]:
    """The import name of every direct dependency in pyproject.toml (runtime and test extras)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    modules = []
    for text in requirements:
        name = canonicalize_name(Requirement(text).name)
        modules.append(IMPORT_NAMES.get(name, name.replace("-", "_")))
    return modules


def import_failures(modules: list[str]) -> list[str]:
    failures = []
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - every failure is reported, none is fatal here
            failures.append(f"import {module}: {type(error).__name__}: {error}")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lock", type=Path, default=LOCK)
    args = parser.parse_args(argv)
    problems = lock_differences(args.lock)
    modules = runtime_modules()
    problems += import_failures(modules)
    if problems:
        print(f"the environment does not match {args.lock.name}:", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        print("fix: `make install` (reinstalls exactly the lock)", file=sys.stderr)
        return 1
    print(f"environment matches {args.lock.name} ({len(locked_versions(args.lock))} packages); "
          f"{len(modules)} dependencies import")
    return 0


if __name__ == "__main__":
    sys.exit(main())
