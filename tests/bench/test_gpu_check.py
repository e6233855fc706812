"""`study bench gpu`: its plan end to end on CPU at tiny shapes, its report's fields, its exit status,
its wheel list and its imports; and, marked `cuda`, the checks it runs at full size on a GPU."""

import dataclasses
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from study import cli
from study.bench import gpu, gpu_checks
from study.bench.gpu_report import GENERATION_FIELDS, REPORT_FIELDS, TRAINING_FIELDS
from study.sashimi import build_model

REPOSITORY = Path(__file__).resolve().parents[2]
ABSENT_ON_THE_GPU_MACHINE = ("ray", "hydra", "omegaconf", "soundfile", "soxr", "optuna", "wandb", "datasets")
RUN_TINY_PLAN = ("import sys; from study.bench.gpu import Check, Settings; "
                 "sys.exit(Check(Settings(device='cpu', out=sys.argv[1], budget_seconds=900)).run())")


@pytest.mark.slow
def test_tiny_plan_runs_end_to_end_on_cpu_and_reports_every_field(tmp_path):
    environment = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(REPOSITORY)}
    completed = subprocess.run([sys.executable, "-c", RUN_TINY_PLAN, str(tmp_path)], capture_output=True, text=True,
                               env=environment, cwd=REPOSITORY, timeout=900)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = json.loads((tmp_path / "gpu-report.json").read_text())
    assert set(REPORT_FIELDS) <= set(report) and report["status"] == "passed" and report["mode"] == "tiny"
    assert all(phase["status"] == "finished" for phase in report["phases"].values()), report["phases"]
    # every case of the matrix is reported with every field; the tiny plan trains three of them
    assert [tuple(case) for case in report["training"]] == [TRAINING_FIELDS] * 16
    combinations = {(c["preset"], c["precision"], c["backend"], c["compile"]) for c in report["training"]}
    assert len(combinations) == 16
    trained = {(c["backend"], c["compile"], c["preset"]) for c in report["training"] if c["status"] == "ok"}
    assert trained == set(gpu.TINY.trained_at_tiny_size)
    for case in report["training"]:
        if case["status"] == "ok":
            assert case["tokens_per_second"] > 0 and case["epoch_seconds_youtubemix"] > 0 and case["steps"] >= 1
        else:
            assert case["status"] == "skipped" and case["reason"]
    assert [tuple(case) for case in report["generation"]] == [GENERATION_FIELDS] * 4
    assert all(case["status"] == "ok" and case["max_abs_logit_difference"] <= gpu_checks.LOGIT_TOLERANCE
               for case in report["generation"])
    ran = [check for check in report["checks"] if check["status"] == "ran"]
    assert len(ran) == 8 and all(check["passed"] for check in ran)  # 2 sums, 2 forward vs step, 4 graph vs step
    assert report["summary"]["checks_failed"] == 0 and set(report["summary"]["best_epoch_seconds"]) == {"sashimi-8", "sashimi-2"}
    # what it imported is all on the bare GPU machine
    assert not set(ABSENT_ON_THE_GPU_MACHINE) & set(report["environment"]["imported_packages"])
    markdown = (tmp_path / "gpu-report.md").read_text()
    assert "# GPU check (tiny): passed" in markdown and markdown.count("| sashimi-2 |") == 8 + 2
    assert "phase generation" in (tmp_path / "progress.log").read_text()


BLOCKING_ABSENT = ("import sys, importlib.abc\n"
                   "class Absent(importlib.abc.MetaPathFinder):\n"
                   "    def find_spec(self, name, path=None, target=None):\n"
                   "        if name.partition('.')[0] in sys.argv[1].split(','):\n"
                   "            raise ImportError(f'{name} is not on the GPU machine')\n"
                   "sys.meta_path.insert(0, Absent())\n"
                   "from study.cli import main\n"
                   "sys.exit(main(['bench', 'gpu']))\n")


def test_the_command_line_route_imports_nothing_absent_on_the_gpu_machine():
    """`python3 -m study.cli bench gpu` with those packages unimportable gets as far as asking for a GPU."""
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "CUDA_VISIBLE_DEVICES": ""}
    completed = subprocess.run([sys.executable, "-c", BLOCKING_ABSENT, ",".join(ABSENT_ON_THE_GPU_MACHINE)],
                               capture_output=True, text=True, env=environment, cwd=REPOSITORY, timeout=300)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "study bench gpu: needs a CUDA GPU" in completed.stderr


def phases_replaced(monkeypatch, **phases):
    for name in gpu.PHASES:
        monkeypatch.setattr(gpu.Check, name, phases.get(name, lambda self: None))


def test_a_failed_check_makes_the_exit_status_1(tmp_path, monkeypatch):
    def correctness(self):
        self.report["checks"].append(gpu_checks.CheckResult("planted", False, 1.0, 0.1).as_dict())

    phases_replaced(monkeypatch, correctness=correctness)
    assert gpu.Check(gpu.Settings(device="cpu", out=str(tmp_path))).run() == 1
    report = json.loads((tmp_path / "gpu-report.json").read_text())
    assert report["status"] == "failed" and report["summary"]["checks_failed"] == 1
    assert "| planted | FAIL | 1.00e+00 | 1e-01 |" in (tmp_path / "gpu-report.md").read_text()


def test_a_failing_phase_is_reported_and_the_next_phases_still_run(tmp_path, monkeypatch):
    ran = []

    def training(self):
        raise RuntimeError("planted failure")

    phases_replaced(monkeypatch, training=training, generation=lambda self: ran.append("generation"))
    assert gpu.Check(gpu.Settings(device="cpu", out=str(tmp_path))).run() == 1
    phases = json.loads((tmp_path / "gpu-report.json").read_text())["phases"]
    assert phases["training"]["status"] == "failed" and "planted failure" in phases["training"]["error"]
    assert phases["generation"]["status"] == "finished" and ran == ["generation"]


def test_a_check_that_raises_is_a_failed_check_and_the_others_still_run(tmp_path, monkeypatch):
    def broken(sum_name, *arguments):
        raise RuntimeError(f"planted {sum_name} failure")

    monkeypatch.setattr(gpu_checks, "check_sum", broken)
    monkeypatch.setattr(gpu, "TINY", dataclasses.replace(gpu.TINY, presets=()))
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    phases_replaced(monkeypatch, correctness=gpu.Check.correctness)
    assert gpu.Check(gpu.Settings(device="cpu", out=str(tmp_path))).run() == 1
    checks = json.loads((tmp_path / "gpu-report.json").read_text())["checks"]
    assert [(check["passed"], check["detail"]) for check in checks] == [
        (False, "RuntimeError: planted cauchy failure"), (False, "RuntimeError: planted vandermonde failure")]


def test_all_passing_phases_exit_0(tmp_path, monkeypatch):
    phases_replaced(monkeypatch)
    assert gpu.Check(gpu.Settings(device="cpu", out=str(tmp_path))).run() == 0


def test_clock_reserves_the_later_phases_and_passes_unused_time_on():
    clock = gpu.Clock(100.0, {"correctness": 2, "training": 1, "generation": 1})
    assert clock.shares == {"correctness": 50.0, "training": 25.0, "generation": 25.0}
    assert 49.0 < clock.left("correctness") <= 50.0
    assert 74.0 < clock.left("training") <= 75.0   # what correctness did not use passes on
    assert 99.0 < clock.left("generation") <= 100.0
    clock.started -= 60.0
    clock.deadline -= 60.0
    assert clock.left("correctness") < 0 < clock.left("training")


@pytest.mark.parametrize("argv, message", [(["device=tpu"], "device='tpu' is unknown"),
                                           (["budget_seconds=0"], "must be positive"),
                                           (["--device", "cpu"], "not key=value"),
                                           ([], "needs a CUDA GPU")])
def test_bad_arguments_and_a_missing_gpu_exit_2(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "gpu", *argv]) == 2
    assert message in capsys.readouterr().err


def test_the_wheel_list_imports_and_is_pinned_by_the_lock():
    requirements = gpu.wheel_requirements()
    assert [requirement.partition("==")[0] for requirement in requirements] == list(gpu.GPU_WHEELS)
    for distribution, module in gpu.GPU_WHEELS.items():
        importlib.import_module(module)
        from importlib import metadata
        assert f"{distribution}=={metadata.version(distribution)}" in requirements


def test_the_cuda_test_list_names_every_file_with_cuda_tests():
    with_cuda_tests = sorted(str(path.relative_to(REPOSITORY)) for path in (REPOSITORY / "tests").rglob("test_*.py")
                             if "@pytest.mark.cuda" in path.read_text())
    assert with_cuda_tests == sorted(gpu.CUDA_TEST_FILES)


def test_sum_check_fails_when_the_backends_differ_beyond_tolerance():
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("Triton on a CPU needs TRITON_INTERPRET=1 (make test sets it)")
    strict = gpu_checks.check_sum("vandermonde", 2, 4, 16, torch.device("cpu"), tolerance=0.0)
    loose = gpu_checks.check_sum("vandermonde", 2, 4, 16, torch.device("cpu"))
    assert loose.passed and 0 < loose.error <= gpu_checks.SUM_TOLERANCE
    assert not strict.passed and strict.error == loose.error


# ---- on a GPU, at full size (`make gpu-check`) ------------------------------------------------------

@pytest.fixture
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: run `make gpu-check` on a GPU machine")
    return torch.device("cuda")


@pytest.mark.cuda
@pytest.mark.parametrize("preset", ["sashimi-2", "sashimi-8"])
def test_cuda_forward_equals_step(cuda, preset):
    result = gpu_checks.check_forward_vs_step(build_model(preset, l_max=1024), 512, cuda)
    assert result.passed, result


@pytest.mark.cuda
@pytest.mark.parametrize("preset", ["sashimi-2", "sashimi-8"])
def test_cuda_bf16_autocast_loss_is_close_to_fp32_at_full_length(cuda, preset):
    result = gpu_checks.check_bf16_loss(build_model(preset), 131072, cuda)
    assert result.status == "ran" and result.passed, result


@pytest.mark.cuda
def test_cuda_triton_training_step_matches_torch(cuda):
    """One real training step at full length with either backend gives the same loss."""
    from study.bench.train import measure_train_step

    losses = [measure_train_step("sashimi-2", 131072, "cuda", backend, steps=1, warmup=1)["last_loss"]
              for backend in ("triton", "torch")]
    assert abs(losses[0] - losses[1]) <= 1e-3 * abs(losses[1])
