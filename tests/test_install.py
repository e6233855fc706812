"""The installed tree is exactly the committed lock, and the lock pins torch/torchaudio exactly."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("check_install", ROOT / "tools" / "check_install.py")
check_install = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_install)


def test_installed_versions_equal_the_lock():
    assert check_install.lock_differences() == []


def test_torch_and_torchaudio_are_pinned_to_the_gpu_machines_versions():
    pins = check_install.locked_versions()
    assert pins["torch"] == "2.11.0"
    assert pins["torchaudio"] == "2.11.0"


def test_no_loose_pins_in_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    assert ".*\"" not in text


def test_a_changed_version_is_reported(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text((ROOT / "requirements.lock").read_text().replace("numpy==2.4.6", "numpy==1.0.0"))
    assert "numpy is 2.4.6, the lock says 1.0.0" in check_install.lock_differences(lock)


def test_every_direct_dependency_has_an_import_name():
    modules = check_install.runtime_modules()
    assert "hydra" in modules and "ray.tune" in modules and "torchaudio" in modules


def test_packages_ray_vendors_on_sys_path_are_not_counted():
    import ray  # noqa: F401 - puts ray/thirdparty_files (colorama, psutil, ...) on sys.path
    assert check_install.lock_differences() == []


def test_make_lock_runs_the_command_the_lock_records():
    """`make lock` regenerates the lock with exactly the resolution the committed lock says made it."""
    import re
    recipe = next(line for line in (ROOT / "Makefile").read_text().splitlines() if "uv pip compile" in line)
    made_by = (ROOT / "requirements.lock").read_text().splitlines()[1].removeprefix("#").strip()
    command = re.sub(r"\s+", " ", recipe.replace("$(BIN)/", "").replace(" --quiet", "")
                     .replace("$(LOCK)", "requirements.lock")).strip()
    assert command == made_by
