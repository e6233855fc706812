"""The `Generator` API: continue audio prompts (a file, dataset windows, or none) with a generation engine.

Prompts go through the data code exactly as training windows did; outputs appear only complete (a
temporary folder renamed at the end). It never overwrites an existing folder, never repairs audio.

Conventions, for a checkpoint trained on windows [zero_token, x_0, x_1, ...] -> [x_0, x_1, ...]:
  prompt        x_0 .. x_{P-1} is fed teacher-forced after the zero token (as the start of a window),
                so the first continuation sample is drawn from p(x_P | x_<P). Its tokens are made like
                a training window's: decoded, mixed to mono, resampled (soxr HQ) by
                study.data.audio_io, then per-window normalised and quantised by study.data.quantize.
                With normalization=minmax the prompt excerpt is scaled as one window (its own min and
                max -> [-1, 1]; blocks of data.sample_len if longer), so the prompt's level does not
                matter, only its shape.
  unconditional the zero token alone, as at the start of every training window.
  log-likelihood per continuation sample, in nats: `model` = log softmax(logits)[token] at temperature
                1 without truncation (the model's own judgement, comparable across settings), and
                `sampling` = log probability under the distribution actually sampled (temperature,
                top-k, top-p). Continuations are ranked by the mean `model` log-likelihood, highest
                first (the official script ranks by the same quantity).
  real-time factor  seconds of audio generated per second of wall-clock time (> 1: faster than real
                time), per stream and summed over the streams of a batch.
"""

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from study.data.quantize import zero_token
from study.errors import CheckpointError, GenerationError
from study.files import StagingFolder
from study.generation.engines.protocol import EngineState
from study.generation.engines.selection import BACKENDS, PRECISIONS, make_engine, resolve_device
from study.generation.outputs import Continuation, Generation, Provenance, staging_folder, write_outputs
from study.generation.prompts import AudioFormat, Prompt, prompt_from_file, prompts_from_split, unconditional_prompt
from study.generation.sampling import SamplingSettings, stream_keys
from study.training.checkpoint import load_model

log = logging.getLogger(__name__)
CHUNK_SAMPLES = 4096           # samples per engine call (progress updates); a multiple of any pooling


def check_request(seconds: float, n: int, batch_size: int, seed: int, sampling: SamplingSettings) -> None:
    """GenerationError for settings no generation can use (the API and the command check the same)."""
    if not seconds > 0 or not math.isfinite(seconds):
        raise GenerationError(f"seconds={seconds} must be > 0")
    if n < 1:
        raise GenerationError(f"n={n} must be >= 1 (continuations per prompt)")
    if batch_size < 1:
        raise GenerationError(f"batch_size={batch_size} must be >= 1")
    if not 0 <= seed < 1 << 63:
        raise GenerationError(f"seed={seed} must be an integer in [0, 2^63)")
    try:
        sampling.validate()
    except ValueError as error:
        raise GenerationError(str(error)) from error


def chunks(position: int, total: int, period: int) -> list[int]:
    """Chunk lengths covering `total` samples from `position`, each chunk ending on a pooling period
    (so CUDA graphs replay whole periods) and at most CHUNK_SAMPLES long."""
    sizes, done = [], 0
    while done < total:
        size = CHUNK_SAMPLES - (position + done) % period
        size = min(size, total - done)
        sizes.append(size)
        done += size
    return sizes


class Generator:
    """A checkpoint ready to generate: `prompts_*` make prompts, `generate` runs, `save` writes the outputs.

    Example:
        generator = Generator("runs/x/checkpoints/best.pt")
        prompts = [generator.prompt_from_file("song.mp3", seconds=4)]
        result = generator.generate(prompts, seconds=8, n=4, sampling=SamplingSettings(top_p=0.95))
        generator.save(result, "samples/song")
    """

    def __init__(self, checkpoint: str | Path, backend: str = "auto", device: str = "auto", threads: int | None = None,
                 precision: str = "auto"):
        started = time.perf_counter()
        self.checkpoint = Path(checkpoint)
        if backend not in BACKENDS:
            raise GenerationError(f"backend={backend!r} is unknown: use one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise GenerationError(f"precision={precision!r} is unknown: use one of {', '.join(PRECISIONS)}")
        try:
            self.device = resolve_device(device)
        except (ValueError, RuntimeError) as error:
            raise GenerationError(str(error)) from error
        model, payload = load_model(self.checkpoint)
        self.payload = payload
        self.model = model
        self.audio = AudioFormat.from_payload(payload, str(self.checkpoint))
        if 2 ** self.audio.bits != model.config.n_classes:
            raise CheckpointError(f"{self.checkpoint}: data.bits={self.audio.bits} gives {2 ** self.audio.bits} "
                                  f"classes but the model has {model.config.n_classes}; the checkpoint is inconsistent")
        try:
            self.engine = make_engine(model, backend, self.device, threads or None, precision)
        except ValueError as error:
            raise GenerationError(str(error)) from error
        self.backend = self.engine.describe()
        log.info("generation %s", self.backend)
        self.load_seconds = time.perf_counter() - started

    def precision_for(self, sampling: SamplingSettings) -> str:
        """The storage of the linear weights a generation with `sampling` runs with (fp32 | bf16 | int8 | w8a8)."""
        choose = getattr(self.engine, "precision_for", None)
        return choose(sampling) if choose else "fp32"

    @property
    def total_pool(self) -> int:
        return self.model.config.total_pool

    def prompt_from_file(self, path: str | Path, seconds: float | None = None, start_seconds: float = 0.0) -> Prompt:
        return prompt_from_file(path, self.audio, self.total_pool, seconds, start_seconds)

    def prompts_from_split(self, split: str, window: int | None = None, count: int = 1, seconds: float | None = None,
                           start_seconds: float = 0.0, data_cache: str | None = None) -> list[Prompt]:
        return prompts_from_split(self.payload, split, window, count, self.audio, self.total_pool, seconds,
                                  start_seconds, data_cache)

    # -- generation ---------------------------------------------------------------------------------
    def generate(self, prompts: list[Prompt] | None, seconds: float, n: int = 1,
                 sampling: SamplingSettings = SamplingSettings(), seed: int = 0, batch_size: int = 16,
                 progress: bool = False) -> Generation:
        """n continuations of `seconds` for every prompt (none or [] : unconditional)."""
        check_request(seconds, n, batch_size, seed, sampling)
        prompts = list(prompts) if prompts else [unconditional_prompt()]
        rate = self.audio.sample_rate
        length = max(1, round(seconds * rate))
        streams = [(p, k) for p in range(len(prompts)) for k in range(n)]
        keys = stream_keys(seed, np.arange(len(streams)))
        tokens = np.zeros((len(streams), length), np.int64)
        logp_model = np.zeros((len(streams), length))
        logp_sample = np.zeros((len(streams), length))
        prompt_logp: list[np.ndarray | None] = [None] * len(prompts)
        # Streams whose prompts have the same length can share a batch (their pooling phases agree).
        by_length: dict[int, list[int]] = {}
        for index, (p, _) in enumerate(streams):
            by_length.setdefault(len(prompts[p].tokens), []).append(index)
        batches = [members[i:i + batch_size] for members in by_length.values()
                   for i in range(0, len(members), batch_size)]
        prompt_seconds = generation_seconds = 0.0
        stream_rates = []
        bar = tqdm(total=len(streams) * length / rate, unit="s", desc="generating", disable=not progress,
                   bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}{postfix}]")
        try:
            for members in batches:
                began = time.perf_counter()
                owners = sorted({streams[i][0] for i in members})
                state, logp = self._prime([prompts[p] for p in owners], keys[:len(owners)], sampling, bar)
                for row, p in enumerate(owners):
                    if prompt_logp[p] is None:
                        prompt_logp[p] = logp[row]
                state = self.engine.select(state, [owners.index(streams[i][0]) for i in members])
                prompt_seconds += time.perf_counter() - began
                began = time.perf_counter()
                start = zero_token(self.audio.bits)
                first = np.array([prompts[streams[i][0]].tokens[-1] if state.position else start for i in members])
                for done, out in self._continue(state, first, keys[members], length, sampling):
                    size = out.tokens.shape[1]
                    tokens[members, done:done + size] = out.tokens
                    logp_model[members, done:done + size] = out.logp_model
                    logp_sample[members, done:done + size] = out.logp_sample
                    elapsed = time.perf_counter() - began
                    bar.update(len(members) * size / rate)
                    bar.set_postfix_str(f"{(done + size) / rate / elapsed:.2f}x real time per stream, "
                                        f"{len(members) * (done + size) / rate / elapsed:.2f}x summed")
                took = time.perf_counter() - began
                generation_seconds += took
                stream_rates.append(length / took)
        finally:
            bar.close()
        continuations = [Continuation(p, k, index, tokens[index], logp_model[index], logp_sample[index])
                         for index, (p, k) in enumerate(streams)]
        settings = {"seconds": seconds, "samples": length, "n": n, "batch_size": batch_size, "seed": seed,
                    **asdict(sampling), "precision": self.precision_for(sampling)}
        total_samples = len(streams) * length
        timings = {
            "load_seconds": round(self.load_seconds, 4), "prompt_seconds": round(prompt_seconds, 4),
            "generation_seconds": round(generation_seconds, 4),
            "samples_per_second_per_stream": round(float(np.mean(stream_rates)), 1),
            "samples_per_second_summed": round(total_samples / generation_seconds, 1),
            "real_time_factor_per_stream": round(float(np.mean(stream_rates)) / rate, 3),
            "real_time_factor_summed": round(total_samples / generation_seconds / rate, 3),
        }
        return Generation(prompts, continuations, [lp if lp is not None else np.zeros(0) for lp in prompt_logp],
                          settings, timings)

    def _prime(self, prompts: list[Prompt], keys: np.ndarray, sampling: SamplingSettings,
               bar) -> tuple[EngineState, np.ndarray]:
        """A state after teacher-forcing the prompts (all of one length) after the zero token, as the
        start of a training window; and log p_model of each prompt token, (len(prompts), P)."""
        state = self.engine.new_state(len(prompts))
        prompt_length = len(prompts[0].tokens)
        if not prompt_length:
            return state, np.zeros((len(prompts), 0))
        forced = np.stack([prompt.tokens for prompt in prompts])           # (prompts, P)
        pieces, done = [], 0
        for size in chunks(0, prompt_length, self.total_pool):
            first = np.full(len(prompts), zero_token(self.audio.bits)) if done == 0 else forced[:, done - 1]
            pieces.append(self.engine.run(state, first, forced[:, done:done + size], keys, 0, sampling).logp_model)
            done += size
            bar.set_postfix_str(f"prompt {done / self.audio.sample_rate:.1f}/"
                                f"{prompt_length / self.audio.sample_rate:.1f} s")
        return state, np.concatenate(pieces, axis=1)

    def _continue(self, state: EngineState, first: np.ndarray, keys: np.ndarray, length: int,
                  sampling: SamplingSettings):
        """Sample `length` tokens for every stream of `state` in chunks: yields (samples done before, outputs)."""
        done = 0
        for size in chunks(state.position, length, self.total_pool):
            out = self.engine.run(state, first, np.full((len(first), size), -1, np.int64), keys, done, sampling)
            yield done, out
            first = out.tokens[:, -1]
            done += size

    # -- outputs ------------------------------------------------------------------------------------
    def save(self, result: Generation, output: str | Path | StagingFolder, spectrograms: bool = True,
             extra_settings: dict | None = None) -> Path:
        """Write WAVs, spectrograms, tokens.npz and manifest.json into `output` (a path, or a staging
        folder made earlier with `outputs.staging_folder`), which appears only complete."""
        staging = output if isinstance(output, StagingFolder) else staging_folder(output)
        source = Provenance(self.checkpoint, self.payload, self.audio, self.engine.describe(), str(self.device),
                            result.settings.get("precision", "fp32"))
        with staging as folder:
            write_outputs(result, folder, source, spectrograms, extra_settings or {})
        return staging.path
