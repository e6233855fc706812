"""Decode any audio file into mono float32 at a target sample rate: soundfile, channel mean, soxr.

Used by preparation and by generation prompts alike, so both see identical audio; never quantises
silently nor repairs bad samples (non-finite audio is an error the caller reports).
"""

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr
import torch

from study.data import DataError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
READ_BLOCK_FRAMES = 1 << 18
RESAMPLER_QUALITY = "HQ"  # soxr high quality: band-limited, linear phase, -130 dB stop band


class UnusableAudioError(DataError):
    """A file that cannot become training audio; str(error) is the reason recorded in the manifest."""


@dataclass(frozen=True)
class AudioInfo:
    """What the file header says (frames may be approximate for mp3)."""

    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def read_info(path: Path) -> AudioInfo:
    """Header of `path`; UnusableAudioError if libsndfile cannot open it (corrupt, empty, not audio)."""
    if path.is_file() and path.stat().st_size == 0:
        raise UnusableAudioError("empty file: 0 bytes")
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError, ValueError, EOFError) as error:
        raise UnusableAudioError(f"cannot decode: {_short(error, path)}") from error
    if info.samplerate <= 0 or info.channels <= 0:
        raise UnusableAudioError(f"invalid header: {info.samplerate} Hz, {info.channels} channels")
    return AudioInfo(info.samplerate, info.channels, info.frames, info.format, info.subtype)


def _short(error: Exception, path: Path) -> str:
    """First line of the error, with the file's full path shortened to its name."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text.replace(str(path), path.name)[:200]


def to_mono(frames: np.ndarray) -> np.ndarray:
    """Mean over channels: (frames, channels) -> (frames,), float32."""
    return frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0].astype(np.float32)


def iter_audio(path: Path, sample_rate: int) -> Iterator[np.ndarray]:
    """Mono float32 blocks of `path` resampled to `sample_rate` by one continuous soxr stream.

    Concatenating the blocks equals resampling the whole file at once. Raises UnusableAudioError on a
    decode failure or on a NaN / inf sample (the caller skips the file; nothing is repaired).
    """
    info = read_info(path)
    stream = None
    if info.sample_rate != sample_rate:
        stream = soxr.ResampleStream(info.sample_rate, sample_rate, 1, dtype="float32", quality=RESAMPLER_QUALITY)
    position = 0
    try:
        with soundfile.SoundFile(str(path)) as handle:
            for frames in handle.blocks(blocksize=READ_BLOCK_FRAMES, dtype="float32", always_2d=True):
                mono = to_mono(frames)
                bad = ~np.isfinite(mono)
                if bad.any():
                    first = position + int(np.argmax(bad))
                    raise UnusableAudioError(
                        f"non-finite samples (NaN or inf), first at {first / info.sample_rate:.3f} s; "
                        "re-export the file with finite samples"
                    )
                position += len(mono)
                out = stream.resample_chunk(mono) if stream is not None else mono
                if len(out):
                    yield out
    except UnusableAudioError:
        raise
    except (RuntimeError, OSError, ValueError, EOFError) as error:
        raise UnusableAudioError(f"cannot decode: {_short(error, path)}") from error
    if stream is not None:
        tail = stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if len(tail):
            yield tail
    if position == 0:
        raise UnusableAudioError("empty audio: 0 samples")


def iter_clips(path: Path, sample_rate: int, clip_samples: int) -> Iterator[np.ndarray]:
    """Consecutive clips of `clip_samples` mono samples at `sample_rate`; the last may be shorter."""
    pending: list[np.ndarray] = []
    pending_samples = 0
    for block in iter_audio(path, sample_rate):
        pending.append(block)
        pending_samples += len(block)
        if pending_samples >= clip_samples:
            joined = np.concatenate(pending)
            whole = len(joined) // clip_samples * clip_samples
            for start in range(0, whole, clip_samples):
                yield joined[start:start + clip_samples]
            pending = [joined[whole:]]
            pending_samples = len(pending[0])
    if pending_samples:
        yield np.concatenate(pending)


def load_audio(path: str | Path, sample_rate: int) -> torch.Tensor:
    """The whole file as a mono float32 tensor (time,) at `sample_rate`, decoded as training data is.

    Raises UnusableAudioError (a DataError) naming the reason when the file cannot be used.
    """
    path = Path(path)
    if not path.is_file():
        raise UnusableAudioError(f"{path} is not a file; pass the path of an audio file (wav, flac, ogg, mp3)")
    blocks = list(iter_audio(path, sample_rate))
    audio = np.concatenate(blocks) if blocks else np.zeros(0, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))


def load_tokens(path: str | Path, data_config) -> torch.Tensor:
    """Tokens (int64, (time,)) of any audio file, made exactly as training windows are made.

    Audio = load_audio(path, data.sample_rate); it is normalised in consecutive blocks of
    data.sample_len samples (a final shorter block on its own) and encoded with data.bits /
    data.quantization / data.quantizer, like a training window. Remainders are kept, unlike in training.
    """
    from study.data.quantize import tokenize

    audio = load_audio(path, int(data_config.sample_rate))
    sample_len = int(data_config.sample_len)
    pieces = [
        tokenize(audio[start:start + sample_len], int(data_config.bits), str(data_config.quantization),
                 str(data_config.normalization), quantizer=str(data_config.quantizer))
        for start in range(0, len(audio), sample_len)
    ]
    return torch.cat(pieces) if pieces else torch.zeros(0, dtype=torch.int64)
