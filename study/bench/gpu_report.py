"""The GPU check's report: one JSON record (every field present, None where not measured) and a short
Markdown summary, both rewritten atomically after every case so a run cut short leaves its figures."""

import json
import platform
import sys
from pathlib import Path

import torch

from study.files import write_atomic
from study.training.record import package_versions

REPORT_JSON, REPORT_MARKDOWN = "gpu-report.json", "gpu-report.md"
TRAINING_FIELDS = ("preset", "precision", "backend", "compile", "status", "reason", "length", "steps",
                   "first_step_seconds", "seconds_per_step", "fastest_step_seconds", "tokens_per_second",
                   "peak_memory_gib", "memory_kind", "epoch_seconds_youtubemix", "last_loss")
GENERATION_FIELDS = ("preset", "batch", "status", "reason", "engine", "steps", "samples_per_second_per_stream",
                     "samples_per_second_summed", "real_time_factor_per_stream", "max_abs_logit_difference",
                     "logit_tolerance")
REPORT_FIELDS = ("status", "mode", "started", "elapsed_seconds", "settings", "environment", "phases",
                 "checks", "cuda_tests", "training", "generation", "summary")
PACKAGES = ("torch", "triton", "numba", "numpy", "pyyaml", "pytest")
EPOCH_TARGET_SECONDS = 60.0


def environment(device: torch.device) -> dict:
    versions = package_versions(PACKAGES)
    info = {"device_type": device.type, "device_name": None, "compute_capability": None, "gpu_memory_gib": None,
            "cuda_runtime": torch.version.cuda, "python": platform.python_version(), "platform": platform.platform(),
            "versions": versions, "imported_packages": []}
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info.update(device_name=properties.name, compute_capability=f"{properties.major}.{properties.minor}",
                    gpu_memory_gib=properties.total_memory / 2**30)
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def imported_packages() -> list[str]:
    """Top-level packages imported so far, outside the standard library."""
    names = {name.partition(".")[0] for name in list(sys.modules)}
    return sorted(name for name in names if name not in sys.stdlib_module_names and not name.startswith("_"))


def complete(case: dict, fields: tuple[str, ...]) -> dict:
    """The case with every field of the table present (None where not measured)."""
    return {field: case.get(field) for field in fields}


def summary(report: dict) -> dict:
    ran = [check for check in report["checks"] if check["status"] == "ran"]
    trained = [case for case in report["training"] if case["status"] == "ok"]
    best = {}
    for case in trained:
        if case["preset"] not in best or case["epoch_seconds_youtubemix"] < best[case["preset"]]["epoch_seconds_youtubemix"]:
            best[case["preset"]] = case
    generated = [case for case in report["generation"] if case["status"] == "ok"]
    batch_one = {case["preset"]: case["real_time_factor_per_stream"] for case in generated if case["batch"] == 1}
    return {"checks_run": len(ran), "checks_failed": sum(not check["passed"] for check in ran),
            "cuda_tests_failed": report["cuda_tests"].get("failed"),
            "cases_failed": sum(case["status"] == "error" for case in report["training"] + report["generation"]),
            "epoch_target_seconds": EPOCH_TARGET_SECONDS,
            "best_epoch_seconds": {preset: case["epoch_seconds_youtubemix"] for preset, case in best.items()},
            "best_epoch_case": {preset: f"{case['precision']} {case['backend']} compile={case['compile']}"
                                for preset, case in best.items()},
            "real_time_factor_batch_1": batch_one}


def markdown(report: dict) -> str:
    environment, result = report["environment"], report["summary"]
    lines = [f"# GPU check ({report['mode']}): {report['status']}", "",
             f"{environment['device_name']} ({environment['device_type']}), torch {environment['versions']['torch']}, "
             f"triton {environment['versions']['triton']}, CUDA {environment['cuda_runtime']}, "
             f"Python {environment['python']}; {report['elapsed_seconds']:.0f} s", "",
             "| phase | status | seconds | budget |", "| --- | --- | ---: | ---: |"]
    lines += [f"| {name} | {phase['status']} | {phase['seconds'] or 0:.0f} | {phase['budget_seconds']:.0f} |"
              for name, phase in report["phases"].items()]
    lines += ["", "## Correctness", "", "| check | result | error | tolerance |", "| --- | --- | ---: | ---: |"]
    for check in report["checks"]:
        verdict = "skipped" if check["status"] == "skipped" else ("pass" if check["passed"] else "FAIL")
        error = "" if check["error"] is None else f"{check['error']:.2e}"
        lines.append(f"| {check['name']} | {verdict} | {error} | {check['tolerance']:.0e} |")
    tests = report["cuda_tests"]
    lines += ["", f"CUDA tests (`pytest -m cuda`): {tests.get('status')}, {tests.get('passed')} passed, "
              f"{tests.get('failed')} failed, {tests.get('skipped')} skipped {tests.get('detail') or ''}".rstrip()]
    lines += ["", "## Training step, batch 1", "",
              "| preset | precision | kernels | compile | s/step | tokens/s | peak GiB | epoch s | status |",
              "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for case in report["training"]:
        figures = (["", "", "", ""] if case["status"] != "ok" else
                   [f"{case['seconds_per_step']:.3f}", f"{case['tokens_per_second']:,.0f}",
                    f"{case['peak_memory_gib']:.2f}", f"{case['epoch_seconds_youtubemix']:,.0f}"])
        status = case["status"] + (f": {case['reason']}" if case["reason"] else "")
        lines.append(f"| {case['preset']} | {case['precision']} | {case['backend']} | {case['compile']} | "
                     + " | ".join(figures) + f" | {status} |")
    lines += ["", f"Epoch = 1,484 YouTubeMix windows x s/step; target <= {result['epoch_target_seconds']:.0f} s; "
              f"best: {json.dumps(result['best_epoch_seconds'])}", "",
              "## Generation (CUDA-graph engine)", "",
              "| preset | batch | samples/s per stream | samples/s total | x real time (16 kHz) | max abs logit diff vs step | status |",
              "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for case in report["generation"]:
        ok = case["status"] == "ok"
        figures = ([f"{case['samples_per_second_per_stream']:,.0f}", f"{case['samples_per_second_summed']:,.0f}",
                    f"{case['real_time_factor_per_stream']:.2f}"] if ok else ["", "", ""])
        difference = "" if case["max_abs_logit_difference"] is None else f"{case['max_abs_logit_difference']:.2e}"
        status = case["status"] + (f": {case['reason']}" if case["reason"] else "")
        lines.append(f"| {case['preset']} | {case['batch']} | " + " | ".join(figures) + f" | {difference} | {status} |")
    return "\n".join(lines) + "\n"


def write_report(folder: Path, report: dict) -> None:
    report["summary"] = summary(report)
    write_atomic(folder / REPORT_JSON, json.dumps(report, indent=2, default=str).encode())
    write_atomic(folder / REPORT_MARKDOWN, markdown(report).encode())
