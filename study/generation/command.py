"""`study generate key=value ...`: its settings, their checks, and the run from prompts to saved outputs.

Every setting is checked before anything is loaded or written; it never writes outside `output=`.
"""

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

from study.command_args import parse_key_values
from study.errors import GenerationError
from study.generation.engines.selection import BACKENDS, PRECISIONS
from study.generation.generator import Generator, check_request
from study.generation.outputs import staging_folder
from study.generation.prompts import DEFAULT_PROMPT_SECONDS, parse_split_prompt
from study.generation.sampling import SamplingSettings


@dataclass
class GenerateConfig:
    """Every key of `study generate key=value ...`; values are range-checked when it is made."""
    checkpoint: str = "???"                    # a checkpoint written by `study train` (best.pt, last.pt)
    prompt: Optional[str] = None               # audio file | split:<train|val|test>[:<window>] | none
    prompt_seconds: Optional[float] = None     # default: the whole prompt, at most 8 s
    prompt_start_seconds: float = 0.0          # where the excerpt starts in the file or window
    prompt_windows: int = 1                    # split prompts: this many windows, evenly spaced
    seconds: float = 4.0                       # audio to generate per continuation
    n: int = 1                                 # continuations per prompt
    batch_size: int = 16                       # streams stepped together
    temperature: float = 1.0                   # 0: greedy
    top_p: float = 1.0                         # nucleus sampling; 1: off
    top_k: int = 0                             # 0: off
    seed: int = 0
    output: Optional[str] = None               # default: samples/<run>-<time>
    backend: str = "auto"                      # auto | numba | graph | step
    device: str = "auto"                       # auto | cpu | cuda
    threads: int = 0                           # numba threads; 0: one per core, at most one per stream
    precision: str = "auto"                    # numba linear weights: auto (w8a8; fp32 greedy) | fp32 | bf16 | int8 | w8a8
    data_cache: Optional[str] = None           # split prompts: prepared-data folder (default: checkpoint's)
    spectrograms: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        """GenerationError for any value no generation can use, whether or not a prompt is given."""
        check_request(self.seconds, self.n, self.batch_size, self.seed, self.sampling)
        if self.prompt_seconds is not None and not (self.prompt_seconds > 0 and math.isfinite(self.prompt_seconds)):
            raise GenerationError(f"prompt_seconds={self.prompt_seconds} must be > 0 (leave it out for the whole "
                                  f"prompt, up to {DEFAULT_PROMPT_SECONDS:g} s)")
        if not (self.prompt_start_seconds >= 0 and math.isfinite(self.prompt_start_seconds)):
            raise GenerationError(f"prompt_start_seconds={self.prompt_start_seconds} must be >= 0")
        if self.prompt_windows < 1:
            raise GenerationError(f"prompt_windows={self.prompt_windows} must be >= 1")
        if self.threads < 0:
            raise GenerationError(f"threads={self.threads} must be >= 0 (0: one per core)")
        if self.backend not in BACKENDS:
            raise GenerationError(f"backend={self.backend!r} is unknown: use one of {', '.join(BACKENDS)}")
        if self.precision not in PRECISIONS:
            raise GenerationError(f"precision={self.precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
        if self.device.split(":")[0] not in ("auto", "cpu", "cuda"):
            raise GenerationError(f"device={self.device!r} is unknown: use auto, cpu or cuda")
        if self.prompt_source and self.prompt_source.startswith("split:"):
            parse_split_prompt(self.prompt_source)

    @property
    def sampling(self) -> SamplingSettings:
        return SamplingSettings(self.temperature, self.top_k, self.top_p)

    @property
    def prompt_source(self) -> str | None:
        """The prompt, or None for unconditional generation (prompt=none)."""
        if self.prompt is None or str(self.prompt).lower() in ("none", "null", ""):
            return None
        return str(self.prompt)


USAGE = """usage: study generate checkpoint=PATH [key=value ...]
  study generate checkpoint=runs/x/checkpoints/best.pt prompt=song.mp3 prompt_seconds=4 seconds=8 n=4
  study generate checkpoint=... prompt=split:test prompt_windows=4 seconds=4    (prompts from the test split)
  study generate checkpoint=... seconds=16 n=8 temperature=0.95 top_p=0.9     (unconditional)
keys: """ + ", ".join(GenerateConfig.__dataclass_fields__)
EXAMPLE = "study generate checkpoint=runs/x/checkpoints/best.pt prompt=song.mp3 seconds=4"


def parse_config(argv: list[str]) -> GenerateConfig:
    """GenerateConfig from key=value arguments: unknown keys, wrong types and bad values raise StudyErrors."""
    return parse_key_values(GenerateConfig, argv, "generate", EXAMPLE)


def default_output(checkpoint: Path) -> Path:
    run = checkpoint.parent.parent.name if checkpoint.parent.name == "checkpoints" else checkpoint.stem
    return Path("samples") / f"{run}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(config: GenerateConfig) -> Path:
    """Everything `study generate` does for one parsed config; returns the output folder."""
    output = Path(config.output) if config.output else default_output(Path(config.checkpoint))
    staging = staging_folder(output)  # fail on an unwritable destination before loading anything
    try:
        generator = Generator(config.checkpoint, config.backend, config.device, config.threads or None,
                              config.precision)
        prompt = config.prompt_source
        if prompt is None:
            prompts = []
        elif prompt.startswith("split:"):
            split, window = parse_split_prompt(prompt)
            prompts = generator.prompts_from_split(split, window, config.prompt_windows, config.prompt_seconds,
                                                   config.prompt_start_seconds, config.data_cache)
        else:
            prompts = [generator.prompt_from_file(prompt, config.prompt_seconds, config.prompt_start_seconds)]
        result = generator.generate(prompts, config.seconds, config.n, config.sampling, config.seed,
                                    config.batch_size, progress=config.progress)
    except BaseException:
        staging.discard()
        raise
    path = generator.save(result, staging, config.spectrograms, {**asdict(config), "output": str(output)})
    summary = [f"wrote {len(result.continuations)} continuation{'s' if len(result.continuations) != 1 else ''} "
               f"of {config.seconds:g} s to {path}",
               f"  {generator.engine.describe()}",
               f"  speed: {result.timings['real_time_factor_per_stream']:.2f}x real time per stream, "
               f"{result.timings['real_time_factor_summed']:.2f}x summed over streams",
               "  ranking (mean model log-likelihood, nats/sample):"]
    for rank, index in enumerate(result.ranking()[:10], 1):
        item = result.continuations[index]
        summary.append(f"    {rank:>2}. {result.prompts[item.prompt].name}-sample{item.sample:02d}  "
                       f"{item.logp_model.mean():.4f}")
    print("\n".join(summary))
    return path


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    run(parse_config(argv))
    return 0
