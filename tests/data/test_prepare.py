"""Preparation: cache layout, manifest, tokens against an independent computation, fingerprints, reuse."""

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
import soundfile

from data_test_helpers import SMALL, data_config, paths_config, sine, small_toy, write_wav
from study.data import DataError
from study.errors import ConfigError
from study.data import prepare as prepare_module
from study.data.prepare import compute_fingerprint, find_prepared, prepare
from study.data.settings import PREPROCESSING_KNOBS, DataSettings


def reference_tokens(audio: np.ndarray, sample_len: int) -> np.ndarray:
    """Consecutive windows of the whole file -> the official min-max (+1e-6) -> official 8-bit mu-law
    (|y + 1e-8|, trunc(t * 255.99 + 0.005)), in float64 numpy."""
    count = len(audio) // sample_len
    windows = audio[: count * sample_len].reshape(count, sample_len).astype(np.float64)
    low, high = windows.min(axis=1, keepdims=True), windows.max(axis=1, keepdims=True)
    scaled = -1 + 2 * (windows - low) / (high - low + 1e-6)
    companded = np.sign(scaled) * np.log1p(255 * np.abs(scaled + 1e-8)) / np.log1p(255)
    return np.trunc((companded + 1) / 2 * 255.99 + 0.005).astype(np.int64)


def test_toy_preparation_layout_manifest_and_tokens(paths):
    prepared = prepare(small_toy(), paths)
    assert prepared.path.parent == Path(paths.data_cache)
    assert prepared.path.name == f"toy-piano-{prepared.fingerprint[:12]}"
    assert not prepared.reused
    manifest = json.loads((prepared.path / "manifest.json").read_text())
    assert manifest == prepared.manifest
    assert manifest["fingerprint"] == prepared.fingerprint
    # 5 clips of 2 s = 32000 samples -> 7 windows of 4096 each; a 60/20/20 split of 5 files is 3/1/1
    assert {name: (s["files"], s["windows"]) for name, s in manifest["splits"].items()} == \
        {"train": (3, 21), "val": (1, 7), "test": (1, 7)}
    assert manifest["splits"]["train"]["seconds"] == pytest.approx(21 * 4096 / 16000)
    assert manifest["totals"]["source_seconds"] == pytest.approx(10.0)
    assert [entry["split"] for entry in manifest["files"]] == ["train"] * 3 + ["val", "test"]
    assert [entry["path"] for entry in manifest["files"]] == [f"clip-{i:03d}.wav" for i in range(5)]
    assert manifest["knobs"]["sample_len"] == 4096 and manifest["data_config"]["name"] == "toy-piano"
    assert manifest["skipped"] == [] and manifest["warnings"] == []
    assert not list(Path(paths.data_cache).glob(".*tmp*"))
    # the stored tokens equal an independent computation from the toy WAV files
    toy_files = sorted((Path(paths.data_cache) / "toy-sources").glob("*/clip-*.wav"))
    assert [f.name for f in toy_files] == [e["path"] for e in manifest["files"]]
    val = datasets.load_from_disk(str(prepared.path / "val"))
    assert val.features["tokens"].feature.dtype == "uint8"
    stored = np.array(val.with_format("numpy")["tokens"], dtype=np.int64)
    audio, rate = soundfile.read(str(toy_files[3]), dtype="float32")
    expected = reference_tokens(audio, 4096)
    assert rate == 16000 and stored.shape == expected.shape == (7, 4096)
    assert np.abs(stored - expected).max() <= 1 and np.mean(stored == expected) > 0.999
    assert val["file_index"] == [3] * 7 and val["window_index"] == list(range(7))


def test_second_prepare_reuses_the_cache_without_rebuilding(paths, monkeypatch):
    first = prepare(small_toy(), paths)
    monkeypatch.setattr(prepare_module, "_build", lambda *args: pytest.fail("rebuilt an existing cache"))
    second = prepare(small_toy(), paths)
    assert second.reused and second.path == first.path and second.manifest == first.manifest
    assert find_prepared(small_toy(), paths).path == first.path


def test_find_prepared_without_a_cache_says_how_to_prepare(paths):
    with pytest.raises(DataError, match="study data prepare data=toy-piano"):
        find_prepared(small_toy(), paths)


def settings_for(**overrides) -> DataSettings:
    return DataSettings.from_config(small_toy(**overrides))


FILES = (["a.wav", "b.wav"], ["0" * 64, "1" * 64])
KNOB_CHANGES = {
    "sample_rate": 8000, "clip_seconds": 1.0, "split": [0.8, 0.1, 0.1], "sample_len": 2048, "bits": 7,
    "quantization": "linear", "normalization": "none", "quantizer": "torchaudio", "seed": 1, "toy_clips": 6, "toy_clip_seconds": 3.0,
}


def test_fingerprint_is_stable_across_runs_and_pinned():
    base = compute_fingerprint(settings_for(), *FILES)
    assert base == compute_fingerprint(settings_for(), *FILES)
    payload = {"format_version": 2, "files": [["a.wav", "0" * 64], ["b.wav", "1" * 64]], "knobs": {
        "bits": 8, "clip_seconds": 60, "normalization": "minmax", "quantization": "mu-law", "quantizer": "official",
        "sample_len": 4096, "sample_rate": 16000, "seed": 0, "split": [0.6, 0.2, 0.2], "toy_clip_seconds": 2,
        "toy_clips": 5}}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    assert base == hashlib.sha256(text.encode()).hexdigest()  # whole seconds hash as integers, as YAML wrote them
    # pinned: a change here renames every existing cache; bump FORMAT_VERSION on purpose instead
    # (format 2 and the quantizer knob: per-file windows and official tokens)
    assert base == "db1a27ad556e4a446e7e66509ef7a0aa54f5d5f23149d7be1bda02d884f86c2d"
    assert compute_fingerprint(settings_for(toy_clip_seconds=2), *FILES) == base


@pytest.mark.parametrize("knob", sorted(KNOB_CHANGES))
def test_fingerprint_changes_with_every_knob(knob):
    assert set(KNOB_CHANGES) == set(PREPROCESSING_KNOBS) | {"seed", "toy_clips", "toy_clip_seconds"}
    base = compute_fingerprint(settings_for(), *FILES)
    assert compute_fingerprint(settings_for(**{knob: KNOB_CHANGES[knob]}), *FILES) != base


def test_fingerprint_changes_with_file_content_names_and_order_only():
    settings = settings_for()
    base = compute_fingerprint(settings, *FILES)
    assert compute_fingerprint(settings, FILES[0], ["0" * 64, "2" * 64]) != base
    assert compute_fingerprint(settings, ["a.wav", "c.wav"], FILES[1]) != base
    assert compute_fingerprint(settings, FILES[0][::-1], FILES[1][::-1]) != base
    # labels and locations are not preprocessing: renaming the config or moving the folder keeps it
    renamed = dataclasses.replace(settings, name="other", path="/elsewhere", warnings=("note",))
    assert compute_fingerprint(renamed, *FILES) == base


def test_changed_knob_prepares_a_separate_cache(paths):
    first = prepare(small_toy(), paths)
    second = prepare(small_toy(bits=6, quantization="linear"), paths)
    assert second.path != first.path and not second.reused
    train = datasets.load_from_disk(str(second.path / "train")).with_format("numpy")
    assert np.array(train["tokens"]).max() <= 63


def test_folder_fingerprint_survives_moving_the_folder_and_changes_with_content(tmp_path):
    music = tmp_path / "music"
    for index in range(3):
        write_wav(music / f"song{index}.wav", sine(1.0, 16000, (220.0 * (index + 1),)))
    config = data_config("folder", path=str(music), **SMALL)
    first = prepare(config, paths_config(tmp_path / "one"))
    moved = tmp_path / "moved"
    shutil.copytree(music, moved)
    assert prepare(data_config("folder", path=str(moved), **SMALL), paths_config(tmp_path / "two")).fingerprint \
        == first.fingerprint
    write_wav(moved / "song1.wav", sine(1.0, 16000, (300.0,)))
    assert prepare(data_config("folder", path=str(moved), **SMALL), paths_config(tmp_path / "two")).fingerprint \
        != first.fingerprint


def test_resampled_stereo_source_matches_independent_pipeline(tmp_path, paths):
    import soxr

    music = tmp_path / "music"
    rng = np.random.default_rng(0)
    for index in range(3):
        left = sine(2.0, 44100, (330.0 * (index + 1), 550.0)) + 0.01 * rng.standard_normal(88200).astype(np.float32)
        write_wav(music / f"{index}.wav", np.stack([left, 0.25 * left], axis=1), 44100, "FLOAT")
    prepared = prepare(data_config("folder", path=str(music), sample_rate=8000, **SMALL), paths)
    train = datasets.load_from_disk(str(prepared.path / "train")).with_format("numpy")
    stored = np.array(train["tokens"], dtype=np.int64)
    audio, _ = soundfile.read(str(music / "0.wav"), dtype="float32")
    expected = reference_tokens(soxr.resample(audio.mean(axis=1), 44100, 8000), 4096)
    assert stored[: len(expected)].shape == expected.shape == (3, 4096)  # 16000 samples at 8 kHz -> 3 windows
    assert np.abs(stored[: len(expected)] - expected).max() <= 1
    assert prepared.manifest["files"][0]["channels"] == 2
    assert prepared.manifest["files"][0]["source_sample_rate"] == 44100


def test_windows_run_over_the_whole_file_as_the_official_loader(tmp_path, paths):
    music = tmp_path / "music"
    for index in range(3):
        write_wav(music / f"{index}.wav", sine(5.0, 16000))
    # 5 s = 80000 samples -> 19 consecutive windows of 4096 from the first sample, margin 2176 dropped;
    # clips of 2 s (32000) only bound the decoding: window k starts in clip (4096 k) // 32000
    prepared = prepare(data_config("folder", path=str(music), clip_seconds=2.0, **SMALL), paths)
    assert [(f["clips"], f["windows"]) for f in prepared.manifest["files"]] == [(3, 19)] * 3
    train = datasets.load_from_disk(str(prepared.path / "train"))
    assert train["window_index"][:19] == list(range(19))
    assert train["clip_index"][:19] == [4096 * k // 32000 for k in range(19)]
    assert train["clip_index"][7:9] == [0, 1]  # window 7 (28672..32767) straddles the first clip boundary


def test_sixteen_bit_tokens_are_stored_as_uint16(paths):
    prepared = prepare(small_toy(bits=12), paths)
    train = datasets.load_from_disk(str(prepared.path / "train"))
    assert train.features["tokens"].feature.dtype == "uint16"
    assert 2048 < max(max(row) for row in train["tokens"]) < 4096


def test_a_failure_midway_leaves_no_cache_and_no_temporary_folder(paths, monkeypatch):
    real = prepare_module._file_windows
    calls = []

    def failing(path, settings, storage):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # e.g. the user presses Ctrl-C halfway
        return real(path, settings, storage)

    monkeypatch.setattr(prepare_module, "_file_windows", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare(small_toy(), paths)
    root = Path(paths.data_cache)
    assert [p.name for p in root.iterdir() if p.is_dir()] == ["toy-sources"]  # no cache, no temporary folder
    monkeypatch.setattr(prepare_module, "_file_windows", real)
    assert not prepare(small_toy(), paths).reused  # the next run builds it whole


def test_invalid_knobs_are_reported_with_the_fix(paths):
    cases = {
        "bits": (40, "data.bits=8"), "quantization": ("a-law", "data.quantization=mu-law"),
        "normalization": ("rms", "data.normalization=minmax"), "split": ([0.5, 0.5], "data.split="),
        "sample_len": (0, "data.sample_len=131072"), "sample_rate": (0, "data.sample_rate=16000"),
        "source": ("ftp", "data=youtubemix"), "clip_seconds": (0.1, "raise data.clip_seconds"),
    }
    for knob, (value, fix) in cases.items():
        with pytest.raises(ConfigError, match=fix.replace("[", r"\[")):
            prepare(small_toy(**{knob: value}), paths)
    with pytest.raises(DataError, match="data.path=/path/to/music"):
        prepare(data_config("folder"), paths)
    with pytest.raises(DataError, match="not an existing directory"):
        prepare(data_config("folder", path="/no/such/folder"), paths)
    broken = small_toy()
    broken["bitz"] = 8
    with pytest.raises(ConfigError, match=r"data.bitz: Key 'bitz' not in 'DataSettings'"):
        prepare(broken, paths)
    for knob, value in (("sample_rate", float("nan")), ("clip_seconds", float("inf")), ("toy_clips", 0)):
        with pytest.raises(ConfigError, match=rf"data\.{knob}\b"):
            prepare(small_toy(**{knob: value}), paths)
