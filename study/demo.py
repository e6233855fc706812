"""`study demo [key=value ...]` (`make demo`): the whole study at smoke scale on embedded data, offline,
ending with a report: replicate, ablation, one grid, a short sampling search, continuations of a
prompt file, the report. Every step reuses what an earlier demo finished; nothing needs a GPU.
"""

import time
from dataclasses import dataclass, fields
from pathlib import Path

import soundfile

from study.command_args import parse_key_values
from study.errors import ConfigError

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


@dataclass
class DemoSettings:
    """The demo's own keys of `study demo key=value ...`; any other key=value overrides every study's config."""
    runs: str = str(DEFAULT_RUNS)           # where the demo's studies go
    search_trials: int = 6                  # sampling-search trials
    prompt_seconds: float = 0.1             # sampling search: prompt per held-out window
    seconds: float = 0.15                   # sampling search: real and generated continuation per prompt
    report_out: str = "reports/out"         # the report lands in <report_out>/demo/

    def __post_init__(self):
        for name in ("search_trials", "prompt_seconds", "seconds"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"study demo: {name}={getattr(self, name)} must be positive")


def parse_arguments(argv: list[str]) -> tuple[DemoSettings, list[str]]:
    """(the demo's settings, the config overrides for every study) from `key=value` arguments."""
    own = {field.name for field in fields(DemoSettings)}

    def is_setting(token: str) -> bool:  # a demo key, or no key=value at all (the parser then says so)
        key, equals, _ = token.partition("=")
        return not equals or key in own or key.startswith("-")

    settings = parse_key_values(DemoSettings, [token for token in argv if is_setting(token)], "demo",
                                "study demo search_trials=2 model.d_model=8")
    return settings, [token for token in argv if not is_setting(token)]


def main(argv: list[str]) -> int:
    settings, overrides = parse_arguments(argv)
    run_demo(Path(settings.runs), overrides, settings.search_trials, settings.prompt_seconds, settings.seconds,
             Path(settings.report_out))
    return 0
