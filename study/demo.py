"""`study demo [overrides]` (`make demo`): the whole study at smoke scale on embedded data, offline,
ending with a report: replicate, ablation, one grid, a short sampling search, continuations of a
prompt file, the report. Every step reuses what an earlier demo finished; nothing needs a GPU.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import soundfile

DEFAULT_RUNS = Path("runs/demo")
STUDIES = ("replicate", "ablation", "grid-dropout")


def write_prompt_file(path: Path, seconds: float = 2.0) -> Path:
    """A prompt file the models never saw: a toy-trio clip from a seed outside the training sets."""
    from study.data.toy import generate_clip
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, generate_clip("trio", seed=12345, clip_index=0, seconds=seconds), 16000)
    return path


def step(title: str) -> float:
    print(f"\n=== {title} ===", flush=True)
    return time.perf_counter()


def run_demo(runs: Path, overrides: list[str], search_trials: int, prompt_seconds: float,
             continuation_seconds: float, report_out: Path) -> dict:
    from analysis.report import build_report, summary_markdown
    from analysis.sampling_search import SearchSettings, search
    from study.generation.generator import Generator
    from study.harness import run_study
    from study.generation.sampling import SamplingSettings

    runs = runs.resolve()
    common = ["scale=smoke", f"paths.runs={runs}", *overrides]
    timings, started = {}, time.perf_counter()
    for name in STUDIES:
        begin = step(f"study {name} (smoke scale)")
        run_study(name, common)
        timings[name] = time.perf_counter() - begin

    begin = step("sampling search over temperature and top-p")
    settings = SearchSettings(checkpoint="study:replicate", runs=str(runs), trials=search_trials, n_prompts=2,
                              prompt_seconds=prompt_seconds, seconds=continuation_seconds, tpe_startup_trials=3)
    table, search_folder = search(settings)
    best = table.sort_values("score").iloc[0]
    timings["search"] = time.perf_counter() - begin

    begin = step("continuations of a prompt file")
    from analysis.sampling_search import resolve_checkpoint
    checkpoint = resolve_checkpoint("study:replicate", runs)
    examples = runs / "replicate" / "examples"
    if not examples.exists():
        generator = Generator(checkpoint)
        prompt = generator.prompt_from_file(write_prompt_file(runs / "prompt.wav"), seconds=1.0)
        result = generator.generate([prompt], seconds=2.0, n=2, progress=True,
                                    sampling=SamplingSettings(temperature=float(best.temperature),
                                                              top_p=float(best.top_p)))
        generator.save(result, examples)
    print(f"examples: {examples}")
    timings["generate"] = time.perf_counter() - begin

    begin = step("report")
    paths = build_report(runs, name="demo", out_root=report_out)
    timings["report"] = time.perf_counter() - begin
    timings["total"] = time.perf_counter() - started
    print("\n" + summary_markdown(runs))
    print(f"sampling search: best temperature {best.temperature:.3f}, top_p {best.top_p:.3f} ({search_folder})")
    print("step seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    print(f"\nreport: {paths.html.resolve()}\nnotebook: {paths.notebook.resolve()}\nruns: {runs}")
    return {"report": paths, "timings": timings}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="study demo", description=__doc__)
    parser.add_argument("--runs", type=Path, default=DEFAULT_RUNS)
    parser.add_argument("--search-trials", type=int, default=6)
    parser.add_argument("--prompt-seconds", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=0.15, help="real and generated continuation per prompt")
    parser.add_argument("--report-out", type=Path, default=Path("reports/out"))
    parser.add_argument("overrides", nargs="*", help="config overrides applied to every study")
    args = parser.parse_args(argv)
    from study.config import ConfigError
    from study.data import DataError
    from study.errors import StudyError
    try:
        run_demo(args.runs, args.overrides, args.search_trials, args.prompt_seconds, args.seconds, args.report_out)
    except (StudyError, ConfigError, DataError, ValueError) as error:
        print(f"study demo: {error}", file=sys.stderr)
        return 2
    return 0
