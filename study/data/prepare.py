"""Prepare a data config once: decode, resample, clip, window, quantise, split; store Arrow + manifest.

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
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import torch
from tqdm import tqdm

from study.data import DataError
from study.data.audio_io import UnusableAudioError, iter_clips, read_info
from study.data.cache import HASH_ALGORITHM, build_once, file_hashes
from study.data.quantize import token_dtype, tokenize
from study.data.settings import SPLIT_NAMES, DataSettings
from study.data.sources import SourceFiles, resolve_source
from study.data.splits import checked_split_counts

log = logging.getLogger(__name__)
FORMAT_VERSION = 1  # bump when preparation changes what it writes for the same knobs
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
        "clip_index": datasets.Value("int32"),
        "window_index": datasets.Value("int32"),  # window within the clip
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
    hashes = file_hashes(source.files, memo_path=cache_root / "file-hashes.json")
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
    """The existing prepared cache for `data_config`, without downloading or building anything."""
    settings, _, _, fingerprint, target = _locate(data_config, paths_config, download=False)
    if not (target / MANIFEST_NAME).is_file():
        raise DataError(
            f"{settings.name} is not prepared with these settings (no {target}); "
            f"run `study data prepare data={settings.name}` with the same overrides first"
        )
    manifest = json.loads((target / MANIFEST_NAME).read_text())
    return PreparedData(path=target, fingerprint=fingerprint, manifest=manifest, reused=True)


def _file_windows(path: Path, settings: DataSettings, storage: np.dtype) -> tuple[list[np.ndarray], dict]:
    """Token windows of every clip of one file (the file is read whole before any is kept)."""
    info = read_info(path)
    clips, total_samples = [], 0
    for clip in iter_clips(path, settings.sample_rate, settings.clip_samples):
        total_samples += len(clip)
        count = len(clip) // settings.sample_len
        windows = torch.from_numpy(clip[: count * settings.sample_len].reshape(count, settings.sample_len))
        tokens = tokenize(windows, settings.bits, settings.quantization, settings.normalization)
        clips.append(tokens.numpy().astype(storage))
    windows = sum(len(c) for c in clips)
    if windows == 0:
        raise UnusableAudioError(
            f"shorter than one window: {total_samples} samples at {settings.sample_rate} Hz "
            f"({total_samples / settings.sample_rate:.2f} s) < data.sample_len={settings.sample_len}"
        )
    record = {
        "format": info.format, "subtype": info.subtype, "source_sample_rate": info.sample_rate,
        "channels": info.channels, "source_seconds": round(total_samples / settings.sample_rate, 3),
        "clips": len(clips), "windows": windows,
    }
    return clips, record


def _build(folder: Path, settings: DataSettings, source: SourceFiles, hashes: list[str], fingerprint: str,
           progress: bool) -> None:
    started = time.perf_counter()
    features = window_features(settings)
    storage = np.uint8 if features["tokens"].feature.dtype == "uint8" else np.uint16
    stream_path = folder / "all-windows.arrow"
    usable, skipped = [], [dict(entry) for entry in source.ignored]
    with pa.OSFile(str(stream_path), "wb") as sink, pa.ipc.new_stream(sink, features.arrow_schema) as writer:
        for path, digest in tqdm(list(zip(source.files, hashes)), desc=f"decoding {settings.name}", unit="file",
                                 disable=not progress):
            relative = source.relative(path)
            try:
                clips, record = _file_windows(path, settings, storage)
            except UnusableAudioError as error:
                skipped.append({"path": relative, HASH_ALGORITHM: digest, "reason": str(error)})
                continue
            file_index = len(usable)
            for clip_index, tokens in enumerate(clips):
                if len(tokens):
                    writer.write_batch(_batch(tokens, file_index, clip_index, features))
            usable.append({"path": relative, HASH_ALGORITHM: digest, "bytes": path.stat().st_size, **record})
    if not usable:
        reasons = "; ".join(f"{entry['path']}: {entry['reason']}" for entry in skipped[:5])
        raise DataError(
            f"no usable audio in {source.description}: {len(skipped)} files skipped ({reasons}"
            f"{' ...' if len(skipped) > 5 else ''}); add decodable audio files at least "
            f"data.sample_len={settings.sample_len} samples long"
        )
    counts = checked_split_counts(len(usable), settings.split)
    splits, first_file, first_row = {}, 0, 0
    everything = datasets.Dataset.from_file(str(stream_path))
    parts = {}
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
    with _quiet_datasets():
        datasets.DatasetDict(parts).save_to_disk(str(folder))
    del everything, parts
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


def _batch(tokens: np.ndarray, file_index: int, clip_index: int, features: datasets.Features) -> pa.RecordBatch:
    count, sample_len = tokens.shape
    schema = features.arrow_schema
    columns = [
        pa.FixedSizeListArray.from_arrays(pa.array(tokens.reshape(-1)), sample_len),
        pa.array(np.full(count, file_index, np.int32)),
        pa.array(np.full(count, clip_index, np.int32)),
        pa.array(np.arange(count, dtype=np.int32)),
    ]
    return pa.RecordBatch.from_arrays(columns, schema=schema)


class _quiet_datasets:
    """Silence datasets' own progress bars while saving (restored afterwards)."""

    def __enter__(self):
        self.was_enabled = datasets.is_progress_bar_enabled()
        datasets.disable_progress_bars()

    def __exit__(self, *exc):
        if self.was_enabled:
            datasets.enable_progress_bars()
