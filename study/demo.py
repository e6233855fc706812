"""`study demo [key=value ...]` (`make demo`): the whole study at smoke scale on embedded data, offline,
ending with a report: replicate, ablation, one grid, a short sampling search, continuations of a
prompt file, the report. Every step reuses what an earlier demo finished; nothing needs a GPU.
"""

import contextlib
import time
from dataclasses import dataclass, fields
from pathlib import Path

import soundfile

from analysis.results import default_runs_dir
from study.command_args import parse_key_values
from study.errors import ConfigError

DEFAULT_RUNS = default_runs_dir()  # $STUDY_RUNS or ./runs: where `study report` and `study search-sampling` look
STUDIES = ("replicate", "ablation", "grid-dropout")
STEPS = len(STUDIES) + 3  # the studies, the sampling search, the continuations, the report


def write_prompt_file(path: Path, seconds: float = 2.0) -> Path:
    """A prompt file the models never saw: a toy-trio clip from a seed outside the training sets."""
    from study.data.toy import generate_clip
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(path, generate_clip("trio", seed=12345, clip_index=0, seconds=seconds), 16000)
    return path


class Steps:
    """Numbered steps with their elapsed time: '[2/6] study ablation ...', then 'done in 41 s'."""

    def __init__(self, total: int):
        self.total, self.number, self.timings = total, 0, {}
        self.started = time.perf_counter()

    @contextlib.contextmanager
    def step(self, key: str, title: str):
        self.number += 1
        print(f"\n[{self.number}/{self.total}] {title}", flush=True)
        begin = time.perf_counter()
        yield
        self.timings[key] = time.perf_counter() - begin
        print(f"[{self.number}/{self.total}] {key} done in {duration(self.timings[key])} "
              f"(total {duration(time.perf_counter() - self.started)})", flush=True)


def duration(seconds: float) -> str:
    """'41 s', or '8 min 05 s' from 90 s on."""
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{int(round(seconds))} s" if seconds < 90 else f"{minutes} min {rest:02d} s"


def next_commands(runs: Path, checkpoint: Path, prompt: Path, overrides: list[str]) -> list[str]:
    """What to run after the demo; they read the demo's runs folder with their default arguments."""
    prefix = "" if runs == DEFAULT_RUNS.resolve() else f"STUDY_RUNS={runs} "
    commands = [f"{prefix}make report    # rebuild the report from {runs}",
                f"{prefix}make search    # the sampling search of study:replicate at its default settings",
                f"study generate checkpoint={checkpoint} prompt={prompt} seconds=4 n=2"]
    if not overrides:
        commands.append(f"{prefix}make replicate SCALE=smoke    # finds the demo's trial finished")
    return commands


def run_demo(runs: Path, overrides: list[str], search_trials: int, prompt_seconds: float,
             continuation_seconds: float, report_out: Path) -> dict:
    from analysis.report import build_report, summary_markdown
    from analysis.sampling_search import SearchSettings, resolve_checkpoint, search
    from study.generation.generator import Generator
    from study.generation.sampling import SamplingSettings
    from study.harness import run_study

    runs = runs.resolve()
    # paths.runs only when it is not the default, so `make replicate SCALE=smoke` is the same study
    common = ["scale=smoke", *([] if runs == DEFAULT_RUNS.resolve() else [f"paths.runs={runs}"]), *overrides]
    steps = Steps(STEPS)
    for name in STUDIES:
        with steps.step(name, f"study {name} (smoke scale, {runs / name})"):
            run_study(name, common)

    with steps.step("search", "sampling search over temperature and top-p"):
        settings = SearchSettings(checkpoint="study:replicate", runs=str(runs), trials=search_trials, n_prompts=2,
                                  prompt_seconds=prompt_seconds, seconds=continuation_seconds,
                                  tpe_startup_trials=3)
        table, search_folder = search(settings)
        best = table.sort_values("score").iloc[0]

    checkpoint = resolve_checkpoint("study:replicate", runs)
    prompt_file = write_prompt_file(runs / "prompt.wav")
    with steps.step("generate", "continuations of a prompt file"):
        examples = runs / "replicate" / "examples"
        if not examples.exists():
            generator = Generator(checkpoint)
            prompt = generator.prompt_from_file(prompt_file, seconds=1.0)
            result = generator.generate([prompt], seconds=2.0, n=2, progress=True,
                                        sampling=SamplingSettings(temperature=float(best.temperature),
                                                                  top_p=float(best.top_p)))
            generator.save(result, examples)
        print(f"examples: {examples}")

    with steps.step("report", "report"):
        paths = build_report(runs, name="demo", out_root=report_out)
    timings = {**steps.timings, "total": time.perf_counter() - steps.started}
    print("\n" + summary_markdown(runs))
    print(f"sampling search: best temperature {best.temperature:.3f}, top_p {best.top_p:.3f} ({search_folder})")
    print("step times: " + ", ".join(f"{key} {duration(value)}" for key, value in timings.items()))
    print(f"\nreport: {paths.html.resolve()}\nnotebook: {paths.notebook.resolve()}\nruns: {runs}")
    print("\nnext:\n" + "\n".join(f"  {command}" for command in next_commands(runs, checkpoint, prompt_file, overrides)))
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
