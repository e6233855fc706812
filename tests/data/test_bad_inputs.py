"""Bad input files: usable ones are prepared, unusable ones skipped with a reason, never a crash."""

import numpy as np
import pytest
import soundfile

from data_test_helpers import SMALL, data_config, sine, write_wav
from study.data import DataError
from study.data.commands import summary
from study.data.prepare import prepare

SECONDS = 0.6  # 9600 samples at 16 kHz: two windows of 4096


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory):
    """One folder with every kind of file a user might have; names sort usable first, then broken."""
    folder = tmp_path_factory.mktemp("messy")
    tone = sine(SECONDS, 16000, (440.0, 660.0))
    write_wav(folder / "a01-pcm16.wav", tone)
    write_wav(folder / "a02-pcm8.wav", tone, subtype="PCM_U8")
    write_wav(folder / "a03-pcm24.wav", tone, subtype="PCM_24")
    write_wav(folder / "a04-float32.wav", tone * 3.0, subtype="FLOAT")  # float WAV beyond [-1, 1]
    write_wav(folder / "a05-stereo.wav", np.stack([tone, -tone], axis=1) + 0.1, subtype="FLOAT")
    write_wav(folder / "a06-six-channels.wav", np.stack([tone] * 6, axis=1))
    write_wav(folder / "a07-8k.wav", sine(SECONDS * 2, 8000), 8000)
    write_wav(folder / "a08-44k.wav", sine(SECONDS, 44100), 44100)
    write_wav(folder / "a09-48k.wav", sine(SECONDS, 48000), 48000, subtype="PCM_24")
    soundfile.write(str(folder / "a10-song.flac"), tone, 16000)
    soundfile.write(str(folder / "a11-song.ogg"), tone, 16000, format="OGG", subtype="VORBIS")
    soundfile.write(str(folder / "a12-song.mp3"), sine(SECONDS, 44100), 44100, format="MP3", subtype="MPEG_LAYER_III")
    (folder / "b01-corrupt.wav").write_bytes(bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8)))
    (folder / "b02-empty.wav").write_bytes(b"")
    (folder / "b03-text.wav").write_text("not audio at all\n" * 20)
    write_wav(folder / "b04-zero-length.wav", np.zeros(0, np.float32))
    write_wav(folder / "b05-sub-window.wav", sine(0.1, 16000))
    nan = tone.copy()
    nan[5000] = np.nan
    write_wav(folder / "b06-nan.wav", nan, subtype="FLOAT")
    inf = tone.copy()
    inf[100] = np.inf
    write_wav(folder / "b07-inf.wav", inf, subtype="FLOAT")
    (folder / "b08-notes.txt").write_text("track list\n")
    (folder / ".hidden.wav").write_bytes(b"ignored: hidden")
    return folder


EXPECTED_SKIPS = {
    "b01-corrupt.wav": "cannot decode", "b02-empty.wav": "empty file: 0 bytes", "b03-text.wav": "cannot decode",
    "b04-zero-length.wav": "empty audio: 0 samples", "b05-sub-window.wav": "shorter than one window: 1600 samples",
    "b06-nan.wav": "non-finite samples", "b07-inf.wav": "non-finite samples",
    "b08-notes.txt": "extension '.txt' is not one of",
}


def test_usable_files_are_prepared_and_bad_ones_skipped_with_reasons(messy_folder, paths, capsys):
    config = data_config("folder", path=str(messy_folder), **SMALL)
    prepared = prepare(config, paths)
    manifest = prepared.manifest
    usable = {entry["path"]: entry for entry in manifest["files"]}
    assert sorted(usable) == [f"a{index:02d}-{name}" for index, name in enumerate(
        ["pcm16.wav", "pcm8.wav", "pcm24.wav", "float32.wav", "stereo.wav", "six-channels.wav", "8k.wav",
         "44k.wav", "48k.wav", "song.flac", "song.ogg", "song.mp3"], start=1)]
    skipped = {entry["path"]: entry["reason"] for entry in manifest["skipped"]}
    assert set(skipped) == set(EXPECTED_SKIPS)
    for name, reason in EXPECTED_SKIPS.items():
        assert reason in skipped[name], (name, skipped[name])
    assert str(messy_folder) not in skipped["b01-corrupt.wav"]  # reasons name the file, not the full path
    assert list(skipped) == sorted(skipped)
    assert usable["a05-stereo.wav"]["channels"] == 2 and usable["a06-six-channels.wav"]["channels"] == 6
    assert usable["a02-pcm8.wav"]["subtype"] == "PCM_U8" and usable["a04-float32.wav"]["subtype"] == "FLOAT"
    assert {usable[f"a0{i}-{r}k.wav"]["source_sample_rate"] for i, r in ((7, 8), (8, 44), (9, 48))} == \
        {8000, 44100, 48000}
    assert all(entry["windows"] >= 2 for entry in usable.values())
    assert manifest["totals"] == {**manifest["totals"], "files": 12, "skipped": 8}
    assert any("8 of 20 files were skipped" in text for text in manifest["warnings"])
    shown = summary(prepared)
    assert "skipped 8 files" in shown and "b06-nan.wav: non-finite samples" in shown


def test_no_usable_file_is_a_clear_error_and_leaves_no_cache(tmp_path, paths):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "x.wav").write_text("text")
    write_wav(folder / "y.wav", sine(0.1, 16000))
    with pytest.raises(DataError) as caught:
        prepare(data_config("folder", path=str(folder), **SMALL), paths)
    message = str(caught.value)
    assert "no usable audio" in message and "x.wav: cannot decode" in message and "y.wav: shorter" in message
    assert "data.sample_len=4096" in message
    assert not any(p.is_dir() for p in tmp_path.joinpath("cache").glob("*"))


def test_folder_without_audio_files_is_a_clear_error(tmp_path, paths):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no audio here")
    with pytest.raises(DataError, match="no audio files .* found in .*point data.path"):
        prepare(data_config("folder", path=str(folder), **SMALL), paths)


def test_too_few_usable_files_for_the_split_is_a_clear_error(tmp_path, paths):
    folder = tmp_path / "five"
    for index in range(5):
        write_wav(folder / f"{index}.wav", sine(SECONDS, 16000))
    (folder / "5.wav").write_text("text")
    config = data_config("folder", path=str(folder), sample_len=4096)  # official 88/6/6 split
    with pytest.raises(DataError) as caught:
        prepare(config, paths)
    assert str(caught.value).startswith("val split has 0 files: 5 usable files found, the 88/6/6 split needs at least 9")
    assert "data.split=" in str(caught.value)
    assert not any(p.is_dir() for p in tmp_path.joinpath("cache").glob("*"))
