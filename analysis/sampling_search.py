"""`study search-sampling`: an Optuna search over temperature and top-p for a trained checkpoint,
scored by analysis.audio_quality against the real continuations of held-out prompts.

The sampler and its arguments are written out (Optuna 5 changed TPE's defaults); trials live in
SQLite so an interrupted search resumes. It never changes the checkpoint.
"""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from analysis.audio_quality import quality_score
from analysis.results import default_runs_dir
from study import validation
from study.command_args import parse_key_values
from study.errors import CheckpointError, ConfigError, DataError

log = logging.getLogger(__name__)
RESULTS_NAME = "results.csv"


@dataclass
class SearchSettings:
    """Every key of `study search-sampling key=value ...`."""
    checkpoint: str = "study:replicate"     # a best.pt/last.pt path, or study:NAME (its best trial)
    prompts: str = "split:test"             # split:test | split:val | comma-separated audio files
    n_prompts: int = 4                      # held-out prompts continued per trial
    prompt_seconds: float = 1.0             # prompt length fed before sampling
    seconds: float = 1.0                    # generated (and real) continuation per prompt
    trials: int = 12                        # Optuna trials (a rerun adds only the missing ones)
    sampler: str = "tpe"                    # tpe | grid
    temperature_min: float = 0.5            # TPE search range
    temperature_max: float = 1.3
    top_p_min: float = 0.8                  # TPE search range
    top_p_max: float = 1.0
    grid_temperatures: list = field(default_factory=lambda: [0.5, 0.7, 0.8, 0.9, 1.0, 1.1, 1.3])
    grid_top_ps: list = field(default_factory=lambda: [0.8, 0.9, 0.95, 1.0])
    tpe_startup_trials: int = 5             # random trials before TPE models the results
    seed: int = 0                           # sampler and generation seed
    out: str | None = None                  # default: sampling-search in the study folder or the checkpoint's run folder
    runs: str = field(default_factory=lambda: str(default_runs_dir()))  # where study:NAME is looked up

    def __post_init__(self) -> None:
        validation.text("checkpoint", self.checkpoint, "study:replicate")
        validation.text("prompts", self.prompts, "split:test")
        validation.integer("n_prompts", self.n_prompts, 4, minimum=1)
        validation.number("prompt_seconds", self.prompt_seconds, 1.0, above=0)
        validation.number("seconds", self.seconds, 1.0, above=0)
        validation.integer("trials", self.trials, 12, minimum=1)
        validation.choice("sampler", self.sampler, ("tpe", "grid"))
        validation.number("temperature_min", self.temperature_min, 0.5, minimum=0)
        validation.number("temperature_max", self.temperature_max, 1.3, minimum=self.temperature_min)
        validation.number("top_p_min", self.top_p_min, 0.8, above=0, maximum=1)
        validation.number("top_p_max", self.top_p_max, 1.0, minimum=self.top_p_min, maximum=1)
        validation.numbers("grid_temperatures", self.grid_temperatures, "[0.8,1.0]", minimum=0)
        validation.numbers("grid_top_ps", self.grid_top_ps, "[0.9,1.0]", minimum=0)
        if not self.grid_temperatures or not self.grid_top_ps or not all(0 < p <= 1 for p in self.grid_top_ps):
            raise validation.refuse("grid_top_ps" if self.grid_temperatures else "grid_temperatures",
                                    self.grid_top_ps if self.grid_temperatures else self.grid_temperatures,
                                    "a non-empty list (top-p values in (0, 1])", "[0.9,1.0]")
        validation.integer("tpe_startup_trials", self.tpe_startup_trials, 5, minimum=0)
        validation.integer("seed", self.seed, 0, minimum=0)
        validation.text("out", self.out, "runs/replicate/sampling-search", optional=True)
        validation.text("runs", self.runs, "runs")


def make_sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    """The sampler with every argument explicit, so results do not drift with Optuna's defaults.

    Optuna deprecated prior_weight, consider_magic_clip and consider_endpoints in 4.9 (removed in 6),
    so they are not passed: TPE uses prior_weight 1.0 and magic clip, as before, and ignores the
    bounds as kernel neighbours (consider_endpoints=False; searches before this change used True)."""
    if settings.sampler == "grid":
        return optuna.samplers.GridSampler(
            {"temperature": list(settings.grid_temperatures), "top_p": list(settings.grid_top_ps)},
            seed=settings.seed)
    return optuna.samplers.TPESampler(
        seed=settings.seed, n_startup_trials=settings.tpe_startup_trials, n_ei_candidates=24,
        multivariate=True, group=False, constant_liar=False)


def search_space(trial: optuna.Trial, settings: SearchSettings) -> tuple[float, float]:
    if settings.sampler == "grid":
        return (trial.suggest_float("temperature", min(settings.grid_temperatures), max(settings.grid_temperatures)),
                trial.suggest_float("top_p", min(settings.grid_top_ps), max(settings.grid_top_ps)))
    return (trial.suggest_float("temperature", settings.temperature_min, settings.temperature_max),
            trial.suggest_float("top_p", settings.top_p_min, settings.top_p_max))


def run_search(settings: SearchSettings, continuation_audio, real_audio: list[np.ndarray], sample_rate: int,
               out: Path) -> pd.DataFrame:
    """Optimise quality_score(continuation_audio(temperature, top_p), real_audio) over `settings.trials`
    trials (counting trials already stored in out/search.db) and write results, heatmap and best."""
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # each trial prints its own line below
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / 'search.db').resolve()}")
    study = optuna.create_study(study_name="sampling", storage=storage, direction="minimize",
                                sampler=make_sampler(settings), load_if_exists=True)
    done = len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
    remaining = max(0, settings.trials - done)
    if settings.sampler == "grid":
        remaining = min(remaining, len(settings.grid_temperatures) * len(settings.grid_top_ps) - done)
    print(f"sampling search: {done} trials stored, running {remaining} more ({settings.sampler})", flush=True)

    def objective(trial: optuna.Trial) -> float:
        temperature, top_p = search_space(trial, settings)
        generated = continuation_audio(temperature, top_p)
        score = quality_score(generated, real_audio, sample_rate)
        for name, value in score.as_dict().items():
            trial.set_user_attr(name, value)
        print(f"  trial {trial.number}: temperature {temperature:.3f} top_p {top_p:.3f} -> score {score.score:.4f} "
              f"(FD {score.frechet_distance:.2f}, silent {score.silent_fraction:.2f}, "
              f"noisy {score.noisy_fraction:.2f})", flush=True)
        return score.score

    if remaining:
        study.optimize(objective, n_trials=remaining)
    table = results_table(study)
    table.to_csv(out / RESULTS_NAME, index=False)
    best = table.sort_values("score").iloc[0].to_dict()
    (out / "best.json").write_text(json.dumps({"best": best, "settings": asdict(settings)}, indent=2, default=str))
    draw_heatmap(table, out / "heatmap.png")
    return table


def results_table(study: optuna.Study) -> pd.DataFrame:
    rows = []
    for trial in study.trials:
        if trial.state != optuna.trial.TrialState.COMPLETE:
            continue
        rows.append({"trial": trial.number, "temperature": trial.params["temperature"],
                     "top_p": trial.params["top_p"], **trial.user_attrs})
    return pd.DataFrame(rows)


def draw_heatmap(table: pd.DataFrame, path: Path) -> None:
    from matplotlib.figure import Figure
    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    points = axes.scatter(table.temperature, table.top_p, c=table.score, cmap="viridis_r", s=120)
    best = table.sort_values("score").iloc[0]
    axes.scatter([best.temperature], [best.top_p], marker="*", s=300, c="red", label="best")
    figure.colorbar(points, ax=axes, label="quality score (lower is better)")
    axes.set_xlabel("temperature")
    axes.set_ylabel("top-p")
    axes.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def resolve_checkpoint(value: str, runs: Path) -> Path:
    """A checkpoint path, or study:NAME -> the best finished trial's best.pt of that study."""
    from study.studies import best_checkpoint
    if value.startswith("study:"):
        return best_checkpoint(runs, value.removeprefix("study:"))
    path = Path(value).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint={value} does not exist; pass a best.pt written by `study train`, or "
                         "checkpoint=study:replicate after `make replicate SCALE=smoke`")
    return path


def held_out_prompts(generator, settings: SearchSettings):
    """(prompts, real continuation tokens): test-split windows, or the files named in `prompts`
    (prompt = the first prompt_seconds, real continuation = the `seconds` after it)."""
    if settings.prompts.startswith("split:"):
        split = settings.prompts.removeprefix("split:")
        prompts = generator.prompts_from_split(split, count=settings.n_prompts, seconds=settings.prompt_seconds)
        return prompts, [p.reference for p in prompts]
    prompts, references = [], []
    for path in [p for p in settings.prompts.split(",") if p][: settings.n_prompts]:
        prompts.append(generator.prompt_from_file(path, seconds=settings.prompt_seconds))
        references.append(generator.prompt_from_file(path, seconds=settings.seconds,
                                                     start_seconds=settings.prompt_seconds).tokens)
    return prompts, references


def parse_settings(argv: list[str]) -> SearchSettings:
    return parse_key_values(SearchSettings, argv, "search-sampling", "checkpoint=study:replicate trials=12")


def default_output(value: str, checkpoint: Path, runs: Path) -> Path:
    """study:NAME -> <runs>/NAME/sampling-search (the study folder); a checkpoint in a run folder
    (<run>/checkpoints/best.pt) -> <run>/sampling-search; any other file -> sampling-search beside it."""
    if value.startswith("study:"):
        return runs / value.removeprefix("study:") / "sampling-search"
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / "sampling-search"
    return checkpoint.parent / "sampling-search"


def search(settings: SearchSettings) -> tuple[pd.DataFrame, Path]:
    from study.generation.generator import Generator
    from study.generation.sampling import SamplingSettings

    checkpoint = resolve_checkpoint(settings.checkpoint, Path(settings.runs))
    out = Path(settings.out) if settings.out else default_output(settings.checkpoint, checkpoint, Path(settings.runs))
    generator = Generator(checkpoint)
    prompts, references = held_out_prompts(generator, settings)
    rate = generator.audio.sample_rate
    length = round(settings.seconds * rate)
    real = [generator.audio.decode(np.asarray(r[:length])) for r in references if len(r)]
    if not real:
        raise DataError("the held-out prompts have no real continuation to compare with; lower prompt_seconds "
                         "or use longer prompt files")

    def continuation_audio(temperature: float, top_p: float) -> list[np.ndarray]:
        result = generator.generate(prompts, seconds=settings.seconds, n=1, seed=settings.seed,
                                    sampling=SamplingSettings(temperature=temperature, top_p=top_p))
        return [generator.audio.decode(c.tokens) for c in result.continuations]

    table = run_search(settings, continuation_audio, real, rate, out)
    return table, out


def main(argv: list[str]) -> int:
    table, out = search(parse_settings(argv))
    best = table.sort_values("score").iloc[0]
    print(f"best: temperature {best.temperature:.3f}, top_p {best.top_p:.3f} (score {best.score:.4f})")
    print(f"results: {out / RESULTS_NAME}\nheatmap: {out / 'heatmap.png'}\nbest settings: {out / 'best.json'}\n"
          f"trials database (resumable): {out / 'search.db'}")
    return 0
