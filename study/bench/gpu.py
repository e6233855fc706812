"""`study bench gpu` (`make gpu-check`): the GPU path proven in one bounded run: correctness checks
and the `cuda` tests, the real training step of both presets (fp32/bf16, Triton/PyTorch sums, eager
and torch.compile), and CUDA-graph generation at batch 1, 16 and 256, into gpu-report.json + .md.

Needs only torch, triton, numba, numpy and PyYAML (pytest for the test phase): no Hydra, Ray or
wandb, so it runs on a bare GPU machine. `device=cpu` runs the same plan at tiny shapes (`make test`).
Exit status: 0 when every check passed and every case that ran finished, 1 otherwise, 2 for bad arguments.
"""

import os
import signal
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ElementTree
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import torch

from study.bench import gpu_checks
from study.bench.generate import measure as measure_generation
from study.bench.gpu_report import (GENERATION_FIELDS, TRAINING_FIELDS, complete, environment, imported_packages,
                                    write_report)
from study.bench.train import measure_train_step
from study.errors import ConfigError
from study.generation.engines.selection import make_engine
from study.generation.sampling import SamplingSettings
from study.sashimi import build_model

REPOSITORY = Path(__file__).resolve().parents[2]
# Every test file with `cuda` tests; a test keeps this list complete. Only these are collected, so
# test files that import the config or data stack are never imported on a bare GPU machine.
CUDA_TEST_FILES = ("tests/s4/test_sums_triton.py", "tests/generation/test_engines.py", "tests/bench/test_gpu_check.py")
# Wheels `make gpu-wheels` fetches (versions from requirements.lock) for a GPU machine that lacks
# them: distribution -> module. PyYAML reads the recipe; pytest and its needs run the `cuda` tests.
GPU_WHEELS = {"pyyaml": "yaml", "pytest": "pytest", "pluggy": "pluggy", "iniconfig": "iniconfig",
              "packaging": "packaging", "pygments": "pygments"}
PHASES = ("correctness", "training", "generation")
SAMPLE_RATE = 16000


@dataclass
class Settings:
    out: str = field(default_factory=lambda: os.environ.get("STUDY_GPU_CHECK_OUT", "gpu-check"))
    device: str = "cuda"              # cuda: full shapes; cpu: the same plan at tiny shapes
    budget_seconds: float = 420.0     # the whole run after imports (a GPU machine: ~20 s of imports)
    train_steps: int = 24             # timed steps per training case (fewer if its time runs out)
    run_tests: bool = True            # the `pytest -m cuda` phase (CUDA only)

    def __post_init__(self):
        if self.device not in ("cuda", "cpu"):
            raise ConfigError(f"study bench gpu: device={self.device!r} is unknown: use cuda or cpu (tiny shapes)")
        if self.budget_seconds <= 0 or self.train_steps <= 0:
            raise ConfigError("study bench gpu: budget_seconds and train_steps must be positive")


@dataclass(frozen=True)
class Plan:
    """What the check runs; `full` on CUDA, `tiny` on a CPU (the same code at toy sizes)."""
    mode: str
    sums: tuple                      # (sum, heads, state_half, length)
    check_length: int                # forward vs step path
    bf16_length: int
    overrides: dict                  # model overrides (tiny widths)
    train_length: int
    presets: tuple = ("sashimi-8", "sashimi-2")
    precisions: tuple = ("fp32", "bf16")
    backends: tuple = ("triton", "torch")
    compile_backend: str = "inductor"
    generation_l_max: int = 16384
    batches: tuple = (1, 16, 256)
    generation_seconds: float = 3.0
    generation_minimum_steps: int = 256
    logit_steps: int = 48            # three pooling periods: graph replays and the eager tail
    shares: dict = field(default_factory=lambda: {"correctness": 150, "training": 210, "generation": 90})
    estimates: dict = field(default_factory=lambda: {"eager": 20.0, "compile": 90.0, "generation": 15.0})
    train_steps: int | None = None   # a cap on timed steps per case (tiny: a few)
    trained_at_tiny_size: tuple = () # tiny only: the (backend, compile, preset) cases it trains, to stay fast


FULL = Plan("full", sums=(("cauchy", 256, 32, 131072), ("vandermonde", 256, 32, 131072), ("cauchy", 256, 32, 16384)),
            check_length=512, bf16_length=131072, overrides={}, train_length=131072)
# Tiny: one layer per stage at width 8; torch.compile traces with the eager backend (no C++ build);
# Triton interpreted trains ~100x slower than compiled, so its sums are checked and not trained.
TINY = Plan("tiny", sums=(("cauchy", 4, 4, 64), ("vandermonde", 4, 4, 64)), check_length=32, bf16_length=64,
            overrides={"d_model": 8, "d_state": 4, "n_layers": 1}, train_length=64, compile_backend="eager",
            generation_l_max=64, batches=(1, 2), generation_seconds=0.2, generation_minimum_steps=16, logit_steps=16,
            estimates={"eager": 0.0, "compile": 0.0, "generation": 0.0}, train_steps=2,
            trained_at_tiny_size=(("torch", False, "sashimi-8"), ("torch", False, "sashimi-2"), ("torch", True, "sashimi-2")))


class Clock:
    """The run's deadline, split into phase shares; time a phase leaves unused passes to the next."""

    def __init__(self, budget_seconds: float, shares: dict):
        self.started = time.perf_counter()
        scale = budget_seconds / sum(shares.values())
        self.shares = {phase: share * scale for phase, share in shares.items()}
        self.deadline = self.started + budget_seconds

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self, phase: str) -> float:
        """Seconds this phase may still use: up to the deadline less the shares of the phases after it."""
        later = sum(self.shares[name] for name in PHASES[PHASES.index(phase) + 1:])
        return self.deadline - later - time.perf_counter()


class Check:
    """One run of the plan: phases in order, the report rewritten after every case."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = torch.device(settings.device)
        self.plan = FULL if self.device.type == "cuda" else TINY
        self.folder = Path(settings.out)
        self.clock = Clock(settings.budget_seconds, self.plan.shares)
        self.triton_runs = self.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
        self.report = {
            "status": "running", "mode": self.plan.mode, "started": datetime.now(timezone.utc).isoformat(),
            "elapsed_seconds": 0.0, "settings": asdict(settings), "environment": environment(self.device),
            "phases": {phase: {"status": "pending", "seconds": None, "budget_seconds": self.clock.shares[phase],
                               "error": None} for phase in PHASES},
            "checks": [], "cuda_tests": {"status": "pending", "passed": None, "failed": None, "skipped": None,
                                         "detail": None, "log": None},
            "training": [], "generation": [], "summary": {}}

    def say(self, message: str) -> None:
        line = f"[{self.clock.elapsed():5.0f} s] {message}"
        print(line, flush=True)
        with open(self.folder / "progress.log", "a") as log:
            log.write(line + "\n")

    def save(self) -> None:
        self.report["elapsed_seconds"] = self.clock.elapsed()
        self.report["environment"]["imported_packages"] = imported_packages()
        write_report(self.folder, self.report)

    def model(self, preset: str, length: int, **overrides):
        torch.manual_seed(0)
        return build_model(preset, l_max=length, **{**self.plan.overrides, **overrides})

    # -- phases ---------------------------------------------------------------------------------------
    def correctness(self) -> None:
        plan = self.plan
        for sum_name, heads, state_half, length in plan.sums:
            name = f"{sum_name} triton vs torch, H={heads} N={state_half} L={length}"
            if not self.triton_runs:
                self.record(gpu_checks.CheckResult(name, True, None, gpu_checks.SUM_TOLERANCE, "skipped",
                                                   "Triton on a CPU needs TRITON_INTERPRET=1"))
                continue
            self.checked(name, gpu_checks.SUM_TOLERANCE,
                         lambda: gpu_checks.check_sum(sum_name, heads, state_half, length, self.device))
        for preset in plan.presets:
            model = self.model(preset, max(plan.check_length, plan.bf16_length))
            self.checked(f"{preset} forward vs step", gpu_checks.LOGIT_TOLERANCE,
                         lambda: gpu_checks.check_forward_vs_step(model, plan.check_length, self.device))
            self.checked(f"{preset} bf16 autocast loss vs fp32", gpu_checks.BF16_LOSS_TOLERANCE,
                         lambda: gpu_checks.check_bf16_loss(model, plan.bf16_length, self.device))
            del model
            self.release()
        self.cuda_tests()

    def checked(self, name: str, tolerance: float, check) -> None:
        """Run one check; one that raises is recorded as failed and the others still run."""
        try:
            result = check()
        except Exception as error:
            result = gpu_checks.CheckResult(name, False, None, tolerance,
                                            detail=f"{type(error).__name__}: {str(error).strip()[:300]}")
        self.record(result)

    def record(self, result: "gpu_checks.CheckResult") -> None:
        self.report["checks"].append(result.as_dict())
        self.said(self.report["checks"][-1])

    def said(self, check: dict) -> None:
        verdict = "skipped" if check["status"] == "skipped" else ("pass" if check["passed"] else "FAIL")
        self.say(f"check {check['name']}: {verdict} (error {check['error']}, tolerance {check['tolerance']})")
        self.save()

    def cuda_tests(self) -> None:
        tests = self.report["cuda_tests"]
        if self.device.type != "cuda" or not self.settings.run_tests:
            tests.update(status="skipped", detail="needs CUDA" if self.device.type != "cuda" else "run_tests=false")
            return
        timeout = self.clock.left("correctness")
        if timeout < 30:
            tests.update(status="skipped", detail=f"out of time ({timeout:.0f} s left in the phase)")
            return
        xml_path, log_path = self.folder / "cuda-tests.xml", self.folder / "cuda-tests.log"
        command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rfE", "-p", "no:cacheprovider",
                   "-o", "addopts=", f"--junitxml={xml_path}", *CUDA_TEST_FILES]
        environment = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
                       "PYTHONPATH": os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))}
        self.say(f"cuda tests: {' '.join(command[1:])} (timeout {timeout:.0f} s)")
        with open(log_path, "w") as log:
            try:
                completed = subprocess.run(command, cwd=REPOSITORY, stdout=log, stderr=subprocess.STDOUT,
                                           env=environment, timeout=timeout)
            except subprocess.TimeoutExpired:
                tests.update(status="out_of_time", detail=f"killed after {timeout:.0f} s", log=log_path.name)
                return
        tests["log"] = log_path.name
        if not xml_path.exists():
            tests.update(status="failed", failed=1, detail=f"pytest exit {completed.returncode}, no results (see log)")
            return
        suite = ElementTree.parse(xml_path).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        count = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
        failed = count["failures"] + count["errors"]
        tests.update(status="passed" if failed == 0 and completed.returncode == 0 else "failed", failed=failed,
                     passed=count["tests"] - failed - count["skipped"], skipped=count["skipped"],
                     detail=f"pytest exit {completed.returncode}")
        self.say(f"cuda tests: {tests['status']}, {tests['passed']} passed, {failed} failed, {count['skipped']} skipped")

    def training_cases(self) -> list[dict]:
        plan = self.plan
        eager = [dict(preset=p, precision=q, backend=b, compile=False)
                 for p in plan.presets for q in plan.precisions for b in plan.backends]
        compiled = [dict(preset=p, precision=q, backend=b, compile=True)
                    for b in plan.backends for p in plan.presets for q in reversed(plan.precisions)]
        return eager + compiled

    def training(self) -> None:
        plan = self.plan
        for case in self.training_cases():
            case["length"] = plan.train_length
            self.report["training"].append(complete(case, TRAINING_FIELDS))
            left = self.clock.left("training")
            estimate = plan.estimates["compile" if case["compile"] else "eager"]
            label = f"train {case['preset']} {case['precision']} {case['backend']} compile={case['compile']}"
            if case["precision"] == "bf16" and self.device.type != "cuda":
                case.update(status="skipped", reason="bf16 autocast trains on CUDA only")
            elif case["backend"] == "triton" and not self.triton_runs:
                case.update(status="skipped", reason="Triton on a CPU needs TRITON_INTERPRET=1")
            elif plan.mode == "tiny" and (case["backend"], case["compile"], case["preset"]) not in plan.trained_at_tiny_size:
                case.update(status="skipped", reason="not trained at tiny size (see Plan.trained_at_tiny_size)")
            elif left < estimate:
                case.update(status="skipped", reason=f"out of time ({left:.0f} s left, needs ~{estimate:.0f} s)")
            else:
                self.say(f"{label}: running ({left:.0f} s left in the phase)")
                try:
                    result = measure_train_step(
                        case["preset"], plan.train_length, str(self.device), case["backend"], case["precision"],
                        case["compile"], steps=min(self.settings.train_steps, plan.train_steps or self.settings.train_steps), warmup=2, overrides=plan.overrides,
                        budget_seconds=max(1.0, min(15.0, left / 3)), compile_backend=plan.compile_backend)
                    case.update(result, status="ok", reason=None)
                except Exception as error:  # reported per case; the other cases still run
                    case.update(status="error", reason=f"{type(error).__name__}: {str(error).strip()[:300]}")
                self.release(compiled=case["compile"])
            self.report["training"][-1] = complete(case, TRAINING_FIELDS)
            figures = (f"{case['seconds_per_step']:.3f} s/step, {case['tokens_per_second']:,.0f} tokens/s, "
                       f"peak {case['peak_memory_gib']:.2f} GiB, epoch {case['epoch_seconds_youtubemix']:,.0f} s"
                       if case["status"] == "ok" else case["reason"])
            self.say(f"{label}: {case['status']} ({figures})")
            self.save()

    def generation(self) -> None:
        plan = self.plan
        for preset in plan.presets:
            model = self.model(preset, plan.generation_l_max).eval()
            for batch in plan.batches:
                case = {"preset": preset, "batch": batch, "logit_tolerance": gpu_checks.LOGIT_TOLERANCE}
                self.report["generation"].append(complete(case, GENERATION_FIELDS))
                left = self.clock.left("generation")
                if left < plan.estimates["generation"]:
                    case.update(status="skipped", reason=f"out of time ({left:.0f} s left)")
                else:
                    try:
                        engine = make_engine(model, "graph", self.device)
                        result = measure_generation(engine, batch, plan.generation_seconds, plan.generation_minimum_steps,
                                                    SamplingSettings())
                        difference = gpu_checks.graph_vs_step_difference(model, batch, plan.logit_steps, self.device)
                        case.update(status="ok", reason=None, engine=engine.describe(), steps=result["steps"],
                                    samples_per_second_per_stream=result["samples_per_second_per_stream"],
                                    samples_per_second_summed=result["samples_per_second_summed"],
                                    real_time_factor_per_stream=result["samples_per_second_per_stream"] / SAMPLE_RATE,
                                    max_abs_logit_difference=difference)
                        check = gpu_checks.CheckResult(f"{preset} graph engine vs step logits, batch {batch}",
                                                       difference <= gpu_checks.LOGIT_TOLERANCE, difference,
                                                       gpu_checks.LOGIT_TOLERANCE)
                        self.report["checks"].append(check.as_dict())
                    except Exception as error:
                        case.update(status="error", reason=f"{type(error).__name__}: {str(error).strip()[:300]}")
                    self.release()
                self.report["generation"][-1] = complete(case, GENERATION_FIELDS)
                figures = (f"{case['samples_per_second_per_stream']:,.0f} samples/s per stream, "
                           f"{case['samples_per_second_summed']:,.0f} total, max |logit diff| "
                           f"{case['max_abs_logit_difference']:.2e}" if case["status"] == "ok" else case["reason"])
                self.say(f"generate {preset} batch {batch}: {case['status']} ({figures})")
                self.save()
            del model

    def release(self, compiled: bool = False) -> None:
        if compiled:
            torch._dynamo.reset()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- the run --------------------------------------------------------------------------------------
    def run(self) -> int:
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "progress.log").write_text("")
        environment = self.report["environment"]
        self.say(f"GPU check, {self.plan.mode} plan on {environment['device_name']} ({self.device.type}), "
                 f"torch {environment['versions']['torch']}, budget {self.settings.budget_seconds:.0f} s, "
                 f"report in {self.folder}")
        self.save()
        try:
            for phase in PHASES:
                record = self.report["phases"][phase]
                record["status"], started = "running", time.perf_counter()
                self.say(f"phase {phase}: {self.clock.left(phase):.0f} s available")
                try:
                    getattr(self, phase)()
                    record["status"] = "finished" if self.clock.left(phase) >= 0 else "out_of_time"
                except Exception as error:  # the phase is reported failed; the next phases still run
                    record.update(status="failed", error="".join(traceback.format_exception_only(error)).strip()[:2000])
                    self.say(f"phase {phase} failed: {record['error']}")
                    traceback.print_exc()
                record["seconds"] = time.perf_counter() - started
                self.save()
            result = self.report["summary"]
            failed = (result["checks_failed"] or result["cases_failed"] or (result["cuda_tests_failed"] or 0)
                      or any(record["status"] == "failed" for record in self.report["phases"].values()))
            self.report["status"] = "failed" if failed else "passed"
        except KeyboardInterrupt:
            self.report["status"] = "interrupted"
        finally:
            self.save()
        self.say(f"{self.report['status']}: {self.folder / 'gpu-report.md'} and gpu-report.json")
        return 0 if self.report["status"] == "passed" else 1


def wheel_requirements(lock: Path = REPOSITORY / "requirements.lock") -> list[str]:
    """`name==version` of each GPU_WHEELS distribution, at the version requirements.lock pins."""
    pinned = {}
    for line in lock.read_text().splitlines():
        name, equals, version = line.strip().partition("==")
        if equals and not line.startswith((" ", "#")):
            pinned[name.lower()] = version.split()[0].rstrip("\\").strip()
    missing = [name for name in GPU_WHEELS if name not in pinned]
    if missing:
        raise ConfigError(f"{', '.join(missing)} not pinned in {lock.name}: pin it there or drop it from GPU_WHEELS")
    return [f"{name}=={pinned[name]}" for name in GPU_WHEELS]


def parse_settings(argv: list[str]) -> Settings:
    """Settings from key=value arguments; with none, no config library is imported (a bare GPU machine)."""
    if not argv:
        return Settings()
    from study.command_args import parse_key_values

    return parse_key_values(Settings, argv, "bench gpu", "device=cpu out=/tmp/gpu-check budget_seconds=120")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    settings = parse_settings(argv)
    if settings.device == "cuda" and not torch.cuda.is_available():
        print("study bench gpu: needs a CUDA GPU (torch.cuda.is_available() is False on this machine); "
              "device=cpu runs the same plan at tiny shapes", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)  # a killed run still writes its report
    return Check(settings).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
