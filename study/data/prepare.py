"""Prepare a data config once: decode, resample, window, quantise, split; store Arrow + manifest.

The cache folder <paths.data_cache>/<data.name>-<fingerprint[:12]>/ appears only complete (built in a
temporary folder, renamed under a file lock); preparation never leaves half a cache and never
overwrites one.

fingerprint = sha256(json({format_version, preprocessing knobs, [(relative path, sha256 of file)]}))
so it is stable across machines and folder locations, and changes with any knob or any byte of audio.
"""

import hashlib
import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from natsort import natsorted, ns
from tqdm import tqdm

from study.data import DataError
from study.data.audio_io import UnusableAudioError, iter_clips, read_info
from study.data.cache import HASH_ALGORITHM, HASH_MEMO_NAME, build_once, file_hashes
from study.data.quantize import token_dtype, tokenize
from study.data.settings import SPLIT_NAMES, DataSettings
from study.data.sources import SourceFiles, resolve_source
from study.data.splits import checked_split_counts

log = logging.getLogger(__name__)
FORMAT_VERSION = 2  # bump when preparation changes what it writes for the same knobs
# 2: windows run consecutively over each whole file (the official YouTubeMix epoch), no longer per clip
MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class PreparedData:
    """A prepared cache: its folder (with manifest.json and train/, val/, test/ Arrow datasets)."""

    path: Path
    fingerprint: str
    manifest: dict
    reused: bool = False

    @property
    def sample_len(self) -> int:
        return int(self.manifest["knobs"]["sample_len"])

    @property
    def bits(self) -> int:
        return int(self.manifest["knobs"]["bits"])

    @property
    def sample_rate(self) -> int:
        return int(self.manifest["knobs"]["sample_rate"])

    def split_path(self, split: str) -> Path:
        if split not in SPLIT_NAMES:
            raise DataError(f"split {split!r} is not one of {SPLIT_NAMES}; ask for 'train', 'val' or 'test'")
        return self.path / split


def window_features(settings: DataSettings) -> datasets.Features:
    """Arrow schema of one row: a window of tokens and where it came from."""
    storage = "uint8" if token_dtype(settings.bits) == torch.uint8 else "uint16"
    return datasets.Features({
        "tokens": datasets.List(datasets.Value(storage), length=settings.sample_len),
        "file_index": datasets.Value("int32"),  # index into manifest["files"]
        "clip_index": datasets.Value("int32"),    # clip (of data.clip_seconds) holding the window's first sample
        "window_index": datasets.Value("int32"),  # window within the file
    })


def compute_fingerprint(settings: DataSettings, relative_paths: list[str], hashes: list[str]) -> str:
    """sha256 hex of the canonical JSON of format version, knobs and (path, content hash) pairs."""
    payload = {
        "format_version": FORMAT_VERSION,
        "knobs": settings.fingerprint_knobs(),
        "files": [[path, digest] for path, digest in zip(relative_paths, hashes)],
    }
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _locate(data_config, paths_config, download: bool) -> tuple[DataSettings, SourceFiles, list[str], str, Path]:
    settings = DataSettings.from_config(data_config)
    cache_root = Path(str(paths_config.data_cache)).expanduser()
    source = resolve_source(settings, paths_config, download=download)
    hashes = file_hashes(source.files, memo_path=cache_root / HASH_MEMO_NAME)
    fingerprint = compute_fingerprint(settings, [source.relative(p) for p in source.files], hashes)
    return settings, source, hashes, fingerprint, cache_root / f"{settings.name}-{fingerprint[:12]}"


def prepare(data_config, paths_config, progress: bool = False) -> PreparedData:
    """The prepared cache for `data_config` (the `data` group) under `paths_config` (the `paths` group).

    Reuses the folder when its fingerprint exists; otherwise resolves the source (download / toy
    generation), decodes every file and builds the folder atomically. Raises DataError with the
    cause and the fix when nothing usable remains or a split would be empty.
    """
    settings, source, hashes, fingerprint, target = _locate(data_config, paths_config, download=True)
    built = build_once(target, lambda temporary: _build(temporary, settings, source, hashes, fingerprint, progress))
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    return PreparedData(path=target, fingerprint=fingerprint, manifest=manifest, reused=not built)


def find_prepared(data_config, paths_config) -> PreparedData:
    """The existing prepared cache for `data_config`; never downloads or prepares.

    A toy source's WAV files are generated if missing, since the fingerprint hashes them.
    """
    settings, _, _, fingerprint, target = _locate(data_config, paths_config, download=False)
    if not (target / MANIFEST_NAME).is_file():
        raise DataError(
            f"{settings.name} is not prepared with these settings (no {target}); "
            f"run `study data prepare data={settings.name}` with the same overrides first"
        )
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    return PreparedData(path=target, fingerprint=fingerprint, manifest=manifest, reused=True)


def _file_windows(path: Path, settings: DataSettings, storage: np.dtype) -> tuple[np.ndarray, np.ndarray, dict]:
    """Token windows of one file and the clip each starts in; the file is read whole before any is kept.

    As the official YouTubeMix loader: consecutive data.sample_len windows from the file's first sample,
    the margin (num_samples mod sample_len) at its end dropped; clips only bound how much is decoded at once.
    """
    info = read_info(path)
    clips = list(iter_clips(path, settings.sample_rate, settings.clip_samples))
    audio = np.concatenate(clips) if clips else np.zeros(0, np.float32)
    count = len(audio) // settings.sample_len
    if count == 0:
        raise UnusableAudioError(
            f"shorter than one window: {len(audio)} samples at {settings.sample_rate} Hz "
            f"({len(audio) / settings.sample_rate:.2f} s) < data.sample_len={settings.sample_len}"
        )
    windows = torch.from_numpy(audio[: count * settings.sample_len].reshape(count, settings.sample_len))
    tokens = tokenize(windows, settings.bits, settings.quantization, settings.normalization,
                      quantizer=settings.quantizer)
    clip_of_window = (np.arange(count) * settings.sample_len) // settings.clip_samples
    record = {
        "format": info.format, "subtype": info.subtype, "source_sample_rate": info.sample_rate,
        "channels": info.channels, "source_seconds": round(len(audio) / settings.sample_rate, 3),
        "clips": len(clips), "windows": count,
    }
    return tokens.numpy().astype(storage), clip_of_window.astype(np.int32), record


def _build(folder: Path, settings: DataSettings, source: SourceFiles, hashes: list[str], fingerprint: str,
           progress: bool) -> None:
    """Decode every file into one Arrow stream, cut it into the split datasets, write the manifest last."""
    started = time.perf_counter()
    stream_path = folder / "all-windows.arrow"
    usable, skipped = _decode_sources(stream_path, settings, source, hashes, progress)
    splits = _save_splits(folder, stream_path, usable, settings)
    stream_path.unlink()
    warnings = list(settings.warnings)
    if skipped:
        warnings.append(f"{len(skipped)} of {len(source.files) + len(source.ignored)} files were skipped; "
                        "see `skipped` for the reason of each")
    manifest = {
        "name": settings.name,
        "source": settings.source,
        "source_description": source.description,
        "fingerprint": fingerprint,
        "format_version": FORMAT_VERSION,
        "hash_algorithm": HASH_ALGORITHM,
        "knobs": settings.fingerprint_knobs(),
        "data_config": settings.as_dict(),
        "splits": splits,
        "totals": {
            "files": len(usable), "skipped": len(skipped),
            "windows": sum(s["windows"] for s in splits.values()),
            "seconds": round(sum(s["seconds"] for s in splits.values()), 3),
            "source_seconds": round(sum(s["source_seconds"] for s in splits.values()), 3),
        },
        "files": usable,
        "skipped": skipped,
        "warnings": warnings,
        "build_seconds": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def _decode_sources(stream_path: Path, settings: DataSettings, source: SourceFiles, hashes: list[str],
                    progress: bool) -> tuple[list[dict], list[dict]]:
    """Windows of every usable file, in file order, appended to one Arrow stream; (usable, skipped) records."""
    features = window_features(settings)
    storage = np.uint8 if features["tokens"].feature.dtype == "uint8" else np.uint16
    usable, skipped = [], [dict(entry) for entry in source.ignored]
    with pa.OSFile(str(stream_path), "wb") as sink, pa.ipc.new_stream(sink, features.arrow_schema) as writer:
        for path, digest in tqdm(list(zip(source.files, hashes)), desc=f"decoding {settings.name}", unit="file",
                                 disable=not progress):
            relative = source.relative(path)
            try:
                tokens, clip_of_window, record = _file_windows(path, settings, storage)
            except UnusableAudioError as error:
                skipped.append({"path": relative, HASH_ALGORITHM: digest, "reason": str(error)})
                continue
            writer.write_batch(_batch(tokens, len(usable), clip_of_window, features))
            usable.append({"path": relative, HASH_ALGORITHM: digest, "bytes": path.stat().st_size, **record})
    if not usable:
        reasons = "; ".join(f"{entry['path']}: {entry['reason']}" for entry in skipped[:5])
        raise DataError(
            f"no usable audio in {source.description}: {len(skipped)} files skipped ({reasons}"
            f"{' ...' if len(skipped) > 5 else ''}); add decodable audio files at least "
            f"data.sample_len={settings.sample_len} samples long"
        )
    return usable, natsorted(skipped, key=lambda entry: entry["path"], alg=ns.PATH)


def _save_splits(folder: Path, stream_path: Path, usable: list[dict], settings: DataSettings) -> dict:
    """Contiguous file ranges -> contiguous row ranges -> folder/{train,val,test}; marks each file's split."""
    counts = checked_split_counts(len(usable), settings.split)
    everything = datasets.Dataset.from_file(str(stream_path))  # memory-mapped, rows in file order
    splits, parts, first_file, first_row = {}, {}, 0, 0
    for name, count in zip(SPLIT_NAMES, counts):
        members = usable[first_file:first_file + count]
        for entry in members:
            entry["split"] = name
        windows = sum(entry["windows"] for entry in members)
        parts[name] = everything.select(range(first_row, first_row + windows))
        splits[name] = {
            "files": count, "windows": windows,
            "seconds": round(windows * settings.sample_len / settings.sample_rate, 3),
            "source_seconds": round(sum(entry["source_seconds"] for entry in members), 3),
        }
        first_file += count
        first_row += windows
    with _datasets_progress_bars_off():
        datasets.DatasetDict(parts).save_to_disk(str(folder))
    return splits


def _batch(tokens: np.ndarray, file_index: int, clip_of_window: np.ndarray,
           features: datasets.Features) -> pa.RecordBatch:
    count, sample_len = tokens.shape
    schema = features.arrow_schema
    columns = [
        pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1)), sample_len),
        pa.array(np.full(count, file_index, np.int32)),
        pa.array(clip_of_window),
        pa.array(np.arange(count, dtype=np.int32)),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


@contextmanager
def _datasets_progress_bars_off():
    """Silence datasets' own progress bars while saving (restored afterwards)."""
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
