"""`study generate` and the `Generator` API: continue audio prompts (a file, dataset windows, or none).

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

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import soundfile
import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from tqdm import tqdm

from study.errors import GenerationError
from study.training.checkpoint import CheckpointError, load_model
from study.data import DataError
from study.data.audio_io import UnusableAudioError, iter_audio, read_info
from study.data.quantize import QUANTIZATIONS, NORMALIZATIONS, decode, tokenize, zero_token
from study.data.settings import SPLIT_NAMES
from study.generation.engines.selection import BACKENDS, make_engine, resolve_device
from study.generation.sampling import SamplingSettings, stream_keys

log = logging.getLogger(__name__)
MANIFEST_FORMAT = "sashimi-study/generation/1"
DEFAULT_PROMPT_SECONDS = 8.0
SILENCE_PEAK = 1e-4            # -80 dBFS: below this a prompt is taken as silent
CHUNK_SAMPLES = 4096           # samples per engine call (progress updates); a multiple of any pooling
WAV_SUBTYPE = "FLOAT"          # 32-bit float WAV: the decoded tokens exactly




# -- settings -----------------------------------------------------------------------------------------
@dataclass
class GenerateConfig:
    """Every key of `study generate key=value ...` (OmegaConf checks names and types)."""
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
    data_cache: Optional[str] = None           # split prompts: prepared-data folder (default: checkpoint's)
    spectrograms: bool = True
    progress: bool = True


def parse_config(argv: list[str]) -> GenerateConfig:
    """GenerateConfig from key=value arguments; unknown keys and wrong types are GenerationErrors."""
    schema = OmegaConf.structured(GenerateConfig)
    for argument in argv:
        if "=" not in argument:
            raise GenerationError(f"argument {argument!r} is not key=value; e.g. study generate checkpoint=runs/x/"
                                  f"checkpoints/best.pt prompt=song.mp3 seconds=4 (keys: {', '.join(schema.keys())})")
    try:
        merged = OmegaConf.merge(schema, OmegaConf.from_dotlist(argv))
        if OmegaConf.is_missing(merged, "checkpoint"):
            raise GenerationError("checkpoint=PATH is required, e.g. checkpoint=runs/<run>/checkpoints/best.pt")
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        detail = str(error).strip().splitlines()[0]
        key = getattr(error, "full_key", None)
        where = f" {key}" if key else ""
        raise GenerationError(f"bad argument{where}: {detail}; known keys: {', '.join(schema.keys())}") from error
    if config.checkpoint in ("???", "", None):
        raise GenerationError("checkpoint=PATH is required, e.g. checkpoint=runs/<run>/checkpoints/best.pt")
    return config


@dataclass(frozen=True)
class AudioFormat:
    """How the checkpoint's training data turned audio into tokens (its `data` config section)."""
    sample_rate: int
    bits: int
    quantization: str
    normalization: str
    sample_len: int

    @classmethod
    def from_payload(cls, payload: dict, source: str) -> "AudioFormat":
        data = payload.get("data_config") or (payload.get("config") or {}).get("data") or {}
        missing = [key for key in ("sample_rate", "bits", "quantization", "normalization", "sample_len")
                   if key not in data]
        if missing:
            raise CheckpointError(f"{source} has no data settings {missing} in its config, so prompts cannot be "
                                  "quantised as its training data was; use a checkpoint written by `study train`")
        audio = cls(int(data["sample_rate"]), int(data["bits"]), str(data["quantization"]),
                    str(data["normalization"]), int(data["sample_len"]))
        if audio.quantization not in QUANTIZATIONS or audio.normalization not in NORMALIZATIONS:
            raise CheckpointError(f"{source}: data.quantization={audio.quantization!r} / data.normalization="
                                  f"{audio.normalization!r} are not one of {QUANTIZATIONS} / {NORMALIZATIONS}")
        return audio

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return decode(torch.from_numpy(np.asarray(tokens, dtype=np.int64)), self.bits, self.quantization).numpy()


# -- prompts --------------------------------------------------------------------------------------------
@dataclass
class Prompt:
    """Tokens the model is conditioned on, where they came from, and (dataset windows) what followed."""
    tokens: np.ndarray                     # (P,) int64; empty for unconditional generation
    source: str                            # file path, split:<name>:<window>, or none
    info: dict = field(default_factory=dict)
    reference: np.ndarray | None = None    # the true continuation (dataset windows)

    @property
    def name(self) -> str:
        return self.info.get("name", "prompt")


def unconditional_prompt() -> Prompt:
    return Prompt(np.zeros(0, np.int64), "none", {"name": "unconditional"})


def _excerpt_samples(seconds: float | None, start_seconds: float, sample_rate: int) -> tuple[int, int | None]:
    if start_seconds < 0:
        raise GenerationError(f"prompt_start_seconds={start_seconds} must be >= 0")
    if seconds is not None and seconds <= 0:
        raise GenerationError(f"prompt_seconds={seconds} must be > 0 (leave it out for the whole prompt, up to "
                              f"{DEFAULT_PROMPT_SECONDS:g} s)")
    return round(start_seconds * sample_rate), round((seconds or DEFAULT_PROMPT_SECONDS) * sample_rate)


def _check_length(samples: int, total_pool: int, sample_rate: int, source: str) -> None:
    if samples < total_pool:
        raise GenerationError(
            f"prompt {source} has {samples} samples ({samples / sample_rate * 1000:.1f} ms at {sample_rate} Hz), "
            f"shorter than one pooling stride of the model ({total_pool} samples): its inner stages would never "
            f"see it; use a longer prompt (at least {total_pool / sample_rate * 1000:.1f} ms) or prompt=none")


def prompt_from_file(path: str | Path, audio: AudioFormat, total_pool: int, seconds: float | None = None,
                     start_seconds: float = 0.0) -> Prompt:
    """The excerpt [start, start + seconds) of an audio file as tokens, made as training windows are."""
    path = Path(path)
    if not path.is_file():
        raise GenerationError(f"prompt {path} is not a file; pass an audio file (wav, flac, ogg, mp3), "
                              "split:test for dataset windows, or prompt=none")
    start, wanted = _excerpt_samples(seconds, start_seconds, audio.sample_rate)
    try:
        info = read_info(path)
        blocks, have = [], 0
        stream = iter_audio(path, audio.sample_rate)
        try:
            for block in stream:  # decode only as far as needed
                blocks.append(block)
                have += len(block)
                if have >= start + wanted:
                    break
        finally:
            stream.close()  # closes the file now, not when the generator is collected
    except UnusableAudioError as error:
        raise GenerationError(f"prompt {path} cannot be used: {error}; pass another file or prompt=none") from error
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if start >= len(samples):
        raise GenerationError(f"prompt_start_seconds={start_seconds} is past the end of {path} "
                              f"({len(samples) / audio.sample_rate:.2f} s); use a smaller value")
    excerpt = torch.from_numpy(np.ascontiguousarray(samples[start:start + wanted]))
    _check_length(len(excerpt), total_pool, audio.sample_rate, str(path))
    peak = float(excerpt.abs().max())
    if peak < SILENCE_PEAK:
        level = "-inf" if peak == 0 else f"{20 * math.log10(peak):.0f}"
        raise GenerationError(
            f"prompt {path} is silent from {start_seconds:g} s on (peak {level} dBFS < "
            f"{20 * math.log10(SILENCE_PEAK):.0f} dBFS): there is nothing to continue, and minmax normalisation "
            "would blow its noise floor up to full scale; use prompt=none for unconditional generation, another "
            "prompt_start_seconds, or another file")
    pieces = [tokenize(excerpt[i:i + audio.sample_len], audio.bits, audio.quantization, audio.normalization)
              for i in range(0, len(excerpt), audio.sample_len)]
    tokens = torch.cat(pieces).numpy().astype(np.int64)
    requested = seconds if seconds is not None else DEFAULT_PROMPT_SECONDS
    record = {
        "name": "prompt00", "kind": "file", "path": str(path.resolve()), "sha256": file_sha256(path),
        "source_sample_rate": info.sample_rate, "source_channels": info.channels, "source_format": info.format,
        "source_subtype": info.subtype, "start_seconds": start / audio.sample_rate,
        "requested_seconds": requested, "seconds": len(tokens) / audio.sample_rate, "samples": len(tokens),
        "peak_dbfs": round(20 * math.log10(peak), 2),
        "processing": (f"decoded, channel mean, soxr {audio.sample_rate} Hz, {audio.normalization} normalisation "
                       f"of the excerpt as one window (blocks of {audio.sample_len}), {audio.quantization} "
                       f"{audio.bits} bits"),
    }
    if seconds is not None and len(tokens) < round(seconds * audio.sample_rate):
        record["warning"] = (f"asked for {seconds:g} s of prompt, the file has {len(tokens) / audio.sample_rate:.2f} s "
                             f"after {start_seconds:g} s; used what there is")
    return Prompt(tokens, str(path), record)


def parse_split_prompt(text: str) -> tuple[str, int | None]:
    """'split:test' -> ('test', None); 'split:val:12' -> ('val', 12)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[1] not in SPLIT_NAMES:
        raise GenerationError(f"prompt={text!r}: write split:<{'|'.join(SPLIT_NAMES)}> or split:<split>:<window index>")
    if len(parts) == 3:
        try:
            return parts[1], int(parts[2])
        except ValueError:
            raise GenerationError(f"prompt={text!r}: the window index {parts[2]!r} is not an integer") from None
    return parts[1], None


def prompts_from_split(payload: dict, split: str, window: int | None, count: int, audio: AudioFormat,
                       total_pool: int, seconds: float | None = None, start_seconds: float = 0.0,
                       data_cache: str | None = None) -> list[Prompt]:
    """Prompts from prepared windows of the checkpoint's data config: window `window`, or `count` windows
    evenly spaced over the split. The rest of each window after the prompt is kept as the reference."""
    from study.data.dataset import WindowDataset
    from study.data.prepare import find_prepared

    config = payload.get("config") or {}
    paths = dict(config.get("paths") or {})
    paths["data_cache"] = data_cache or paths.get("data_cache") or os.environ.get("STUDY_DATA_CACHE", "data/cache")
    paths.setdefault("downloads", os.environ.get("STUDY_DOWNLOADS", "data/downloads"))
    try:
        # data_config: the data the run really used (an embedded stand-in at smoke scale)
        prepared = find_prepared(payload.get("data_config") or config["data"], OmegaConf.create(paths))
    except DataError as error:
        raise GenerationError(f"prompt=split:{split} reads the checkpoint's prepared data: {error}") from error
    dataset = WindowDataset(prepared, split)
    if len(dataset) == 0:
        raise GenerationError(f"the {split} split of {prepared.path} has no windows; use another split")
    if window is not None:
        if not 0 <= window < len(dataset):
            raise GenerationError(f"window {window} is out of range: the {split} split has {len(dataset)} windows")
        indices = [window]
    else:
        if count < 1:
            raise GenerationError(f"prompt_windows={count} must be >= 1")
        indices = sorted(set(np.linspace(0, len(dataset) - 1, min(count, len(dataset))).round().astype(int).tolist()))
    start, wanted = _excerpt_samples(seconds, start_seconds, audio.sample_rate)
    prompts = []
    for number, index in enumerate(indices):
        tokens = dataset.tokens(index).astype(np.int64)
        if start >= len(tokens):
            raise GenerationError(f"prompt_start_seconds={start_seconds} is past the end of a "
                                  f"{len(tokens) / audio.sample_rate:.2f} s window")
        prompt = tokens[start:start + wanted]
        source = f"split:{split}:{index}"
        _check_length(len(prompt), total_pool, audio.sample_rate, source)
        record = {"name": f"prompt{number:02d}", "kind": "split", "split": split, "window": int(index),
                  "prepared": str(prepared.path), "fingerprint": prepared.fingerprint,
                  "start_seconds": start / audio.sample_rate, "seconds": len(prompt) / audio.sample_rate,
                  "samples": len(prompt), "processing": "the prepared window's tokens as stored"}
        prompts.append(Prompt(prompt, source, record, reference=tokens[start + len(prompt):]))
    return prompts


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# -- generation -----------------------------------------------------------------------------------------
@dataclass
class Continuation:
    prompt: int                  # index into Generation.prompts
    sample: int                  # 0 .. n-1 for its prompt
    stream: int                  # global stream index (its random numbers depend only on seed and this)
    tokens: np.ndarray           # (S,) int64
    logp_model: np.ndarray       # (S,) float64
    logp_sample: np.ndarray      # (S,) float64

    def likelihood(self) -> dict:
        return {"model": {"sum_nats": float(self.logp_model.sum()), "mean_nats": float(self.logp_model.mean())},
                "sampling": {"sum_nats": float(self.logp_sample.sum()), "mean_nats": float(self.logp_sample.mean())}}


@dataclass
class Generation:
    prompts: list[Prompt]
    continuations: list[Continuation]
    prompt_logp: list[np.ndarray]     # per prompt: log p_model of each prompt token given those before
    settings: dict
    timings: dict

    def ranking(self) -> list[int]:
        """Continuation indices by mean model log-likelihood per sample, highest first (ties: stream order)."""
        return sorted(range(len(self.continuations)),
                      key=lambda i: (-self.continuations[i].logp_model.mean(), self.continuations[i].stream))


def _chunks(position: int, total: int, period: int) -> list[int]:
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

    def __init__(self, checkpoint: str | Path, backend: str = "auto", device: str = "auto", threads: int | None = None):
        started = time.perf_counter()
        self.checkpoint = Path(checkpoint)
        if backend not in BACKENDS:
            raise GenerationError(f"backend={backend!r} is unknown: use one of {', '.join(BACKENDS)}")
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
            self.engine = make_engine(model, backend, self.device, threads or None)
        except ValueError as error:
            raise GenerationError(str(error)) from error
        self.backend = self.engine.describe()
        log.info("generation %s", self.backend)
        self.load_seconds = time.perf_counter() - started

    @property
    def total_pool(self) -> int:
        return self.model.config.total_pool

    def prompt_from_file(self, path: str | Path, seconds: float | None = None, start_seconds: float = 0.0) -> Prompt:
        return prompt_from_file(path, self.audio, self.total_pool, seconds, start_seconds)

    def prompts_from_split(self, split: str, window: int | None = None, count: int = 1, seconds: float | None = None,
                           start_seconds: float = 0.0, data_cache: str | None = None) -> list[Prompt]:
        return prompts_from_split(self.payload, split, window, count, self.audio, self.total_pool, seconds,
                                  start_seconds, data_cache)

    def generate(self, prompts: list[Prompt] | None, seconds: float, n: int = 1,
                 sampling: SamplingSettings = SamplingSettings(), seed: int = 0, batch_size: int = 16,
                 progress: bool = False) -> Generation:
        """n continuations of `seconds` for every prompt (none or [] : unconditional)."""
        if not seconds > 0 or not math.isfinite(seconds):
            raise GenerationError(f"seconds={seconds} must be > 0")
        if n < 1:
            raise GenerationError(f"n={n} must be >= 1 (continuations per prompt)")
        if batch_size < 1:
            raise GenerationError(f"batch_size={batch_size} must be >= 1")
        if seed < 0:
            raise GenerationError(f"seed={seed} must be >= 0")
        try:
            sampling.validate()
        except ValueError as error:
            raise GenerationError(str(error)) from error
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
        start = zero_token(self.audio.bits)
        period = self.total_pool
        prompt_seconds = generation_seconds = 0.0
        stream_rates = []
        bar = tqdm(total=len(streams) * length / rate, unit="s", desc="generating", disable=not progress,
                   bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}{postfix}]")
        try:
            for members in batches:
                owners = sorted({streams[i][0] for i in members})
                prompt_length = len(prompts[owners[0]].tokens)
                began = time.perf_counter()
                state = self.engine.new_state(len(owners))
                if prompt_length:
                    forced = np.stack([prompts[p].tokens for p in owners])
                    pieces, done = [], 0
                    for size in _chunks(0, prompt_length, period):
                        first = np.full(len(owners), start) if done == 0 else forced[:, done - 1]
                        out = self.engine.run(state, first, forced[:, done:done + size], keys[:len(owners)], 0, sampling)
                        pieces.append(out.logp_model)
                        done += size
                        bar.set_postfix_str(f"prompt {done / rate:.1f}/{prompt_length / rate:.1f} s")
                    for row, p in enumerate(owners):
                        if prompt_logp[p] is None:
                            prompt_logp[p] = np.concatenate([piece[row] for piece in pieces])
                state = self.engine.select(state, [owners.index(streams[i][0]) for i in members])
                first = np.array([prompts[streams[i][0]].tokens[-1] if prompt_length else start for i in members])
                prompt_seconds += time.perf_counter() - began
                began = time.perf_counter()
                done = 0
                for size in _chunks(prompt_length, length, period):
                    out = self.engine.run(state, first, np.full((len(members), size), -1, np.int64), keys[members],
                                          done, sampling)
                    tokens[members, done:done + size] = out.tokens
                    logp_model[members, done:done + size] = out.logp_model
                    logp_sample[members, done:done + size] = out.logp_sample
                    first = out.tokens[:, -1]
                    done += size
                    elapsed = time.perf_counter() - began
                    bar.update(len(members) * size / rate)
                    bar.set_postfix_str(f"{done / rate / elapsed:.2f}x real time per stream, "
                                        f"{len(members) * done / rate / elapsed:.2f}x summed")
                took = time.perf_counter() - began
                generation_seconds += took
                stream_rates.append(length / took)
        finally:
            bar.close()
        continuations = [Continuation(p, k, index, tokens[index], logp_model[index], logp_sample[index])
                         for index, (p, k) in enumerate(streams)]
        settings = {"seconds": seconds, "samples": length, "n": n, "batch_size": batch_size, "seed": seed,
                    **asdict(sampling)}
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

    # -- outputs ------------------------------------------------------------------------------------
    def save(self, result: Generation, output: str | Path, spectrograms: bool = True,
             extra_settings: dict | None = None) -> Path:
        """Write WAVs, spectrograms, tokens.npz and manifest.json into `output`, which appears only complete."""
        staging = OutputFolder(output)
        try:
            self._write(result, staging.temporary, spectrograms, extra_settings or {})
            return staging.commit()
        except BaseException:
            staging.discard()
            raise

    def _write(self, result: Generation, folder: Path, spectrograms: bool, extra_settings: dict) -> None:
        started = time.perf_counter()
        rate = self.audio.sample_rate
        prompts_record = []
        for index, prompt in enumerate(result.prompts):
            record = dict(prompt.info, index=index, source=prompt.source)
            if len(prompt.tokens):
                record["file"] = f"{prompt.name}.wav"
                write_wav(folder / record["file"], self.audio.decode(prompt.tokens), rate)
                logp = result.prompt_logp[index]
                record["log_likelihood"] = {"sum_nats": float(logp.sum()), "mean_nats": float(logp.mean())}
            if prompt.reference is not None and len(prompt.reference):
                record["reference_file"] = f"{prompt.name}-reference.wav"
                write_wav(folder / record["reference_file"],
                          self.audio.decode(prompt.reference[:result.settings["samples"]]), rate)
            prompts_record.append(record)
        ranking = result.ranking()
        rank_of = {index: rank + 1 for rank, index in enumerate(ranking)}
        continuations_record = []
        for index, item in enumerate(result.continuations):
            prompt = result.prompts[item.prompt]
            stem = f"{prompt.name}-sample{item.sample:02d}"
            continuation = self.audio.decode(item.tokens)
            whole = np.concatenate([self.audio.decode(prompt.tokens), continuation])
            files = {"audio": f"{stem}.wav", "continuation": f"{stem}-continuation.wav"}
            write_wav(folder / files["audio"], whole, rate)
            write_wav(folder / files["continuation"], continuation, rate)
            if spectrograms:
                files["spectrogram"] = f"{stem}.png"
                write_spectrogram(folder / files["spectrogram"], whole, rate, len(prompt.tokens) / rate,
                                  f"{stem}: mean log-likelihood {item.logp_model.mean():.3f} nats/sample, rank "
                                  f"{rank_of[index]} of {len(ranking)}")
            continuations_record.append({"id": stem, "prompt": item.prompt, "sample": item.sample,
                                         "stream": item.stream, "rank": rank_of[index], "files": files,
                                         "log_likelihood": item.likelihood()})
        np.savez_compressed(folder / "tokens.npz",
                            continuation_tokens=np.stack([c.tokens for c in result.continuations]),
                            logp_model=np.stack([c.logp_model for c in result.continuations]),
                            logp_sample=np.stack([c.logp_sample for c in result.continuations]),
                            **{f"{p.name}_tokens": p.tokens for p in result.prompts},
                            **{f"{p.name}_logp_model": lp for p, lp in zip(result.prompts, result.prompt_logp)})
        config = self.payload.get("config") or {}
        manifest = {
            "format": MANIFEST_FORMAT,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {**extra_settings, **result.settings},
            "checkpoint": {"path": str(self.checkpoint.resolve()), "sha256": file_sha256(self.checkpoint),
                           "model": self.payload.get("model_config"),
                           **{key: self.payload[key] for key in ("step", "epoch")
                              if isinstance(self.payload.get(key), (int, float))},
                           "experiment": config.get("name")},
            "audio": {**asdict(self.audio), "wav_subtype": WAV_SUBTYPE},
            "backend": self.engine.describe(),  # after the run: says if CUDA graph capture failed
            "device": str(self.device),
            "prompts": prompts_record,
            "continuations": continuations_record,
            "ranking": {"by": "mean model log-likelihood per sample (nats, temperature 1, no truncation), "
                              "highest first",
                        "order": [continuations_record[i]["id"] for i in ranking]},
            "timings": {**result.timings, "write_seconds": round(time.perf_counter() - started, 4)},
            "definitions": {
                "log_likelihood.model": "log softmax(logits)[token], temperature 1, all classes",
                "log_likelihood.sampling": "log probability under the distribution sampled (temperature, top-k, "
                                           "top-p)",
                "real_time_factor": "seconds of audio generated per second of wall-clock time (> 1 is faster "
                                    "than real time); per stream, and summed over the streams of a batch",
            },
            "warnings": [p.info["warning"] for p in result.prompts if "warning" in p.info],
        }
        temporary = folder / ".manifest.json.tmp"
        temporary.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(temporary, folder / "manifest.json")


class OutputFolder:
    """A temporary sibling folder for the outputs, renamed onto `path` when everything is written.

    Made at once (so an unwritable or occupied destination fails before any generation); `path` may
    not exist yet or be an empty folder; nothing existing is ever overwritten."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
            raise GenerationError(f"output={self.path} already exists and is not an empty folder; choose another "
                                  "output= or move it away (outputs are never overwritten)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.temporary = Path(tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.tmp-"))
        except OSError as error:
            raise GenerationError(f"cannot write output={self.path}: {error.strerror or error}; choose a folder "
                                  "you can write to") from error

    def commit(self) -> Path:
        if self.path.is_dir():
            self.path.rmdir()  # empty (checked at start); fails loudly if something appeared meanwhile
        os.rename(self.temporary, self.path)
        return self.path

    def discard(self) -> None:
        shutil.rmtree(self.temporary, ignore_errors=True)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    soundfile.write(str(path), np.asarray(audio, dtype=np.float32), sample_rate, subtype=WAV_SUBTYPE)


def write_spectrogram(path: Path, audio: np.ndarray, sample_rate: int, boundary_seconds: float, title: str) -> None:
    """Log-magnitude STFT (1024-point Hann, hop 256) with the prompt/continuation boundary marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    signal = torch.from_numpy(np.asarray(audio, dtype=np.float32))
    n_fft = 1024 if len(signal) >= 1024 else max(16, 1 << (len(signal).bit_length() - 1))
    spectrum = torch.stft(signal, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft),
                          return_complex=True, center=True).abs()
    decibels = 20 * torch.log10(spectrum.clamp(min=1e-5))
    figure, axes = plt.subplots(figsize=(10, 4), dpi=100)
    axes.imshow(decibels.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=-100, vmax=float(decibels.max()),
                extent=(0, len(signal) / sample_rate, 0, sample_rate / 2))
    if boundary_seconds > 0:
        axes.axvline(boundary_seconds, color="cyan", linewidth=1.5, linestyle="--", label="end of prompt")
        axes.legend(loc="upper right")
    axes.set_xlabel("seconds")
    axes.set_ylabel("Hz")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


# -- command line -----------------------------------------------------------------------------------------
USAGE = """usage: study generate checkpoint=PATH [key=value ...]
  study generate checkpoint=runs/x/checkpoints/best.pt prompt=song.mp3 prompt_seconds=4 seconds=8 n=4
  study generate checkpoint=... prompt=split:test prompt_windows=4 seconds=4    (prompts from the test split)
  study generate checkpoint=... seconds=16 n=8 temperature=0.95 top_p=0.9     (unconditional)
keys: """ + ", ".join(GenerateConfig.__dataclass_fields__)


def default_output(checkpoint: Path) -> Path:
    run = checkpoint.parent.parent.name if checkpoint.parent.name == "checkpoints" else checkpoint.stem
    return Path("samples") / f"{run}-{time.strftime('%Y%m%d-%H%M%S')}"


def run(config: GenerateConfig) -> Path:
    """Everything `study generate` does for one parsed config; returns the output folder."""
    sampling = SamplingSettings(config.temperature, config.top_k, config.top_p)
    try:
        sampling.validate()
    except ValueError as error:
        raise GenerationError(str(error)) from error
    if not config.seconds > 0:
        raise GenerationError(f"seconds={config.seconds} must be > 0")
    if config.threads < 0:
        raise GenerationError(f"threads={config.threads} must be >= 0 (0: one per core)")
    output = Path(config.output) if config.output else default_output(Path(config.checkpoint))
    staging = OutputFolder(output)  # fail on an unwritable destination before loading anything
    try:
        generator = Generator(config.checkpoint, config.backend, config.device, config.threads or None)
        prompt = None if config.prompt is None or str(config.prompt).lower() in ("none", "null", "") else config.prompt
        if prompt is None:
            prompts = []
        elif prompt.startswith("split:"):
            split, window = parse_split_prompt(prompt)
            prompts = generator.prompts_from_split(split, window, config.prompt_windows, config.prompt_seconds,
                                                   config.prompt_start_seconds, config.data_cache)
        else:
            prompts = [generator.prompt_from_file(prompt, config.prompt_seconds, config.prompt_start_seconds)]
        result = generator.generate(prompts, config.seconds, config.n, sampling, config.seed, config.batch_size,
                                    progress=config.progress)
        generator._write(result, staging.temporary, config.spectrograms, {**asdict(config), "output": str(output)})
        path = staging.commit()
    except BaseException:
        staging.discard()
        raise
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
    try:
        run(parse_config(argv))
    except (GenerationError, CheckpointError, DataError) as error:
        print(f"study generate: {error}", file=sys.stderr)
        return 2
    return 0
