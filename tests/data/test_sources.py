"""Hub sources offline: a locally built archive placed where the download would land, and download errors."""

import zipfile
from pathlib import Path

import httpx2
import huggingface_hub
import numpy as np
import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError

from data_test_helpers import SMALL, data_config, sine, write_wav
from study.cli import main as cli_main
from study.data import DataError
from study.data.prepare import prepare
from study.data.sources import archive_path, list_audio_files
from study.data.settings import DataSettings


def build_archive(zip_path: Path, inner_folder: str, count: int, subtype: str, scratch: Path) -> Path:
    """A zip shaped like the hub archive: <inner_folder>/out<i>.wav, plus macOS metadata to ignore."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w") as bundle:
        for index in range(count):
            wav = write_wav(scratch / f"out{index}.wav", sine(0.6, 16000, (200.0 + 50 * index,)), 16000, subtype)
            bundle.write(wav, f"{inner_folder}/out{index}.wav")
        bundle.writestr(f"__MACOSX/{inner_folder}/._out0.wav", b"resource fork")
    return zip_path


def refuse_download(*args, **kwargs):
    raise AssertionError("hf_hub_download called although the archive is on disk")


@pytest.mark.parametrize("name, inner, subtype", [("youtubemix", "youtube_mix", "PCM_16"),
                                                  ("bigband", "youtube_bigband_mono", "PCM_32")])
def test_archive_already_downloaded_is_unpacked_and_prepared_offline(tmp_path, paths, monkeypatch, name, inner, subtype):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse_download)
    config = data_config(name, **SMALL)
    target = archive_path(DataSettings.from_config(config), Path(paths.downloads))
    assert target == Path(paths.downloads) / name / config.filename
    build_archive(target, inner, 11, subtype, tmp_path)
    prepared = prepare(config, paths)
    manifest = prepared.manifest
    # natural order: out2 before out10; 11 files at 60/20/20 -> 6 / 2 / 3
    assert [entry["path"] for entry in manifest["files"]] == [f"{inner}/out{i}.wav" for i in range(11)]
    assert [manifest["splits"][s]["files"] for s in ("train", "val", "test")] == [6, 2, 3]
    assert manifest["source_description"] == f"hub dataset {config.repo_id} file {config.filename}"
    assert {entry["subtype"] for entry in manifest["files"]} == {subtype}
    has_leak_warning = any("samplernn-pytorch/issues/47" in text for text in manifest["warnings"])
    assert has_leak_warning == (name == "youtubemix")
    assert prepare(config, paths).reused


def test_missing_archive_is_downloaded_to_the_documented_place(tmp_path, paths, monkeypatch):
    calls = []

    def fake_download(repo_id, filename, *, repo_type, local_dir, **kwargs):
        calls.append((repo_id, filename, repo_type, Path(local_dir)))
        return str(build_archive(Path(local_dir) / filename, "youtube_mix", 5, "PCM_16", tmp_path))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    prepared = prepare(data_config("youtubemix", **SMALL), paths)
    assert calls == [("krandiash/youtubemix", "youtube_mix.zip", "dataset", Path(paths.downloads) / "youtubemix")]
    assert prepared.manifest["totals"]["files"] == 5
    prepare(data_config("youtubemix", **SMALL), paths)
    assert len(calls) == 1


def hub_errors() -> list[Exception]:
    request = httpx2.Request("GET", "https://huggingface.co/datasets/krandiash/youtubemix/resolve/main/youtube_mix.zip")
    return [
        GatedRepoError("Access to dataset krandiash/youtubemix is restricted", response=httpx2.Response(401, request=request)),
        LocalEntryNotFoundError("cannot find the requested files in the local cache"),
        httpx2.ConnectError("Name or service not known", request=request),
        ConnectionError("network is unreachable"),
    ]


@pytest.mark.parametrize("error", hub_errors(), ids=lambda e: type(e).__name__)
def test_download_failures_name_the_token_the_terms_page_and_the_way_out(paths, monkeypatch, error):
    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", failing)
    with pytest.raises(DataError) as caught:
        prepare(data_config("youtubemix", **SMALL), paths)
    message = str(caught.value)
    assert "HF_TOKEN" in message
    assert "https://huggingface.co/datasets/krandiash/youtubemix" in message
    assert "data=folder" in message
    assert type(error).__name__ in message
    assert not Path(paths.data_cache).exists() or not any(Path(paths.data_cache).glob("youtubemix-*"))


def test_cli_download_failure_prints_the_message_and_returns_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download",
                        lambda *a, **k: (_ for _ in ()).throw(LocalEntryNotFoundError("offline")))
    status = cli_main(["data", "prepare", "data=youtubemix", f"paths.data_cache={tmp_path}/cache",
                       f"paths.downloads={tmp_path}/downloads"])
    captured = capsys.readouterr()
    assert status == 2
    assert "HF_TOKEN" in captured.err and "Traceback" not in captured.err + captured.out


def test_corrupt_archive_is_a_clear_error(paths):
    config = data_config("bigband", **SMALL)
    target = archive_path(DataSettings.from_config(config), Path(paths.downloads))
    target.parent.mkdir(parents=True)
    target.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not a readable zip archive.*delete it and run again"):
        prepare(config, paths)
    assert not [p for p in target.parent.glob("extracted-*") if p.is_dir()]


def test_listing_is_natural_sorted_recursive_and_skips_hidden(tmp_path):
    for name in ("b/10.wav", "b/2.wav", "a/1.flac", ".cache/x.wav", "__MACOSX/._1.wav", "c.MP3", "cover.jpg"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    files, ignored = list_audio_files(tmp_path)
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a/1.flac", "b/2.wav", "b/10.wav", "c.MP3"]
    assert [entry["path"] for entry in ignored] == ["cover.jpg"]
    assert np.all(["not one of" in entry["reason"] for entry in ignored])


def test_info_on_a_hub_dataset_never_downloads(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse_download)
    status = cli_main(["data", "info", "data=bigband", f"paths.data_cache={tmp_path}/cache",
                       f"paths.downloads={tmp_path}/downloads"])
    assert status == 2
    assert "not downloaded yet" in capsys.readouterr().err
