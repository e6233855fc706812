"""Prompts for generation: audio files or prepared dataset windows, made into tokens as training windows were.

Decoding, resampling, normalisation and quantisation go through study.data exactly as for training;
it never repairs audio and never reads outside the path or prepared data it is given.
"""

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from study.data import DataError
from study.data.audio_io import UnusableAudioError, iter_audio, read_info
from study.data.cache import file_hash
from study.data.quantize import NORMALIZATIONS, QUANTIZATIONS, QUANTIZERS, decode, tokenize
from study.data.settings import SPLIT_NAMES
from study.errors import CheckpointError, GenerationError

DEFAULT_PROMPT_SECONDS = 8.0
SILENCE_PEAK = 1e-4            # -80 dBFS: below this a prompt is taken as silent


@dataclass(frozen=True)
class AudioFormat:
    """How the checkpoint's training data turned audio into tokens (its `data` config section)."""
    sample_rate: int
    bits: int
    quantization: str
    normalization: str
    sample_len: int
    quantizer: str = "torchaudio"  # checkpoints written before data.quantizer existed used this rounding

    @classmethod
    def from_payload(cls, payload: dict, source: str) -> "AudioFormat":
        data = payload.get("data_config") or (payload.get("config") or {}).get("data") or {}
        missing = [key for key in ("sample_rate", "bits", "quantization", "normalization", "sample_len")
                   if key not in data]
        if missing:
            raise CheckpointError(f"{source} has no data settings {missing} in its config, so prompts cannot be "
                                  "quantised as its training data was; use a checkpoint written by `study train`")
        audio = cls(int(data["sample_rate"]), int(data["bits"]), str(data["quantization"]),
                    str(data["normalization"]), int(data["sample_len"]), str(data.get("quantizer", "torchaudio")))
        if (audio.quantization not in QUANTIZATIONS or audio.normalization not in NORMALIZATIONS
                or audio.quantizer not in QUANTIZERS):
            raise CheckpointError(f"{source}: data.quantization={audio.quantization!r} / data.normalization="
                                  f"{audio.normalization!r} / data.quantizer={audio.quantizer!r} are not one of "
                                  f"{QUANTIZATIONS} / {NORMALIZATIONS} / {QUANTIZERS}")
        return audio

    def decode(self, tokens: np.ndarray) -> np.ndarray:
        return decode(torch.from_numpy(np.asarray(tokens, dtype=np.int64)), self.bits, self.quantization,
                      quantizer=self.quantizer).numpy()


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


def excerpt_samples(seconds: float | None, start_seconds: float, sample_rate: int) -> tuple[int, int | None]:
    if start_seconds < 0:
        raise GenerationError(f"prompt_start_seconds={start_seconds} must be >= 0")
    if seconds is not None and seconds <= 0:
        raise GenerationError(f"prompt_seconds={seconds} must be > 0 (leave it out for the whole prompt, up to "
                              f"{DEFAULT_PROMPT_SECONDS:g} s)")
    return round(start_seconds * sample_rate), round((seconds or DEFAULT_PROMPT_SECONDS) * sample_rate)


def check_length(samples: int, total_pool: int, sample_rate: int, source: str) -> None:
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
    start, wanted = excerpt_samples(seconds, start_seconds, audio.sample_rate)
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
    check_length(len(excerpt), total_pool, audio.sample_rate, str(path))
    peak = float(excerpt.abs().max())
    if peak < SILENCE_PEAK:
        level = "-inf" if peak == 0 else f"{20 * math.log10(peak):.0f}"
        raise GenerationError(
            f"prompt {path} is silent from {start_seconds:g} s on (peak {level} dBFS < "
            f"{20 * math.log10(SILENCE_PEAK):.0f} dBFS): there is nothing to continue, and minmax normalisation "
            "would blow its noise floor up to full scale; use prompt=none for unconditional generation, another "
            "prompt_start_seconds, or another file")
    pieces = [tokenize(excerpt[i:i + audio.sample_len], audio.bits, audio.quantization, audio.normalization,
                       quantizer=audio.quantizer)
              for i in range(0, len(excerpt), audio.sample_len)]
    tokens = torch.cat(pieces).numpy().astype(np.int64)
    requested = seconds if seconds is not None else DEFAULT_PROMPT_SECONDS
    record = {
        "name": "prompt00", "kind": "file", "path": str(path.resolve()), "sha256": file_hash(path),
        "source_sample_rate": info.sample_rate, "source_channels": info.channels, "source_format": info.format,
        "source_subtype": info.subtype, "start_seconds": start / audio.sample_rate,
        "requested_seconds": requested, "seconds": len(tokens) / audio.sample_rate, "samples": len(tokens),
        "peak_dbfs": round(20 * math.log10(peak), 2),
        "processing": (f"decoded, channel mean, soxr {audio.sample_rate} Hz, {audio.normalization} normalisation "
                       f"of the excerpt as one window (blocks of {audio.sample_len}), {audio.quantization} "
                       f"{audio.bits} bits, {audio.quantizer} quantizer"),
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
    start, wanted = excerpt_samples(seconds, start_seconds, audio.sample_rate)
    prompts = []
    for number, index in enumerate(indices):
        tokens = dataset.tokens(index).astype(np.int64)
        if start >= len(tokens):
            raise GenerationError(f"prompt_start_seconds={start_seconds} is past the end of a "
                                  f"{len(tokens) / audio.sample_rate:.2f} s window")
        prompt = tokens[start:start + wanted]
        source = f"split:{split}:{index}"
        check_length(len(prompt), total_pool, audio.sample_rate, source)
        record = {"name": f"prompt{number:02d}", "kind": "split", "split": split, "window": int(index),
                  "prepared": str(prepared.path), "fingerprint": prepared.fingerprint,
                  "start_seconds": start / audio.sample_rate, "seconds": len(prompt) / audio.sample_rate,
                  "samples": len(prompt), "processing": "the prepared window's tokens as stored"}
        prompts.append(Prompt(prompt, source, record, reference=tokens[start + len(prompt):]))
    return prompts
