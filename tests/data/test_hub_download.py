"""The real download path (`huggingface_hub.hf_hub_download` over HTTP) against a local hub: public and
gated repos, a missing file, a connection dropped mid-file and a corrupt archive."""

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import constants as hub_constants

from data_test_helpers import sine, write_wav
from local_hub import TOKEN, HubRepo, LocalHub
from study.cli import main as cli_main

REPO = Path(__file__).resolve().parents[2]
DATASETS = {"youtubemix": ("krandiash/youtubemix", "youtube_mix.zip", "youtube_mix", "PCM_16"),
            "bigband": ("galbezalel/youtube_bigband", "youtube_bigband_mono.zip", "youtube_bigband_mono", "PCM_32")}
SMALL = ["data.sample_len=4096", "data.split=[0.6,0.2,0.2]"]


def archive_bytes(inner_folder: str, count: int, subtype: str, scratch: Path) -> bytes:
    """A zip shaped like the hub archive: <inner_folder>/out<i>.wav of 0.6 s each."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for index in range(count):
            wav = write_wav(scratch / f"{inner_folder}-{index}.wav", sine(0.6, 16000, (200.0 + 50 * index,)), 16000,
                            subtype)
            bundle.write(wav, f"{inner_folder}/out{index}.wav")
    return buffer.getvalue()


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running LocalHub that huggingface_hub talks to, as HF_ENDPOINT would make it, with no token,
    an empty hub cache and short timeouts."""
    with LocalHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(hub_constants, "ENDPOINT", server.url)
        monkeypatch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        monkeypatch.setattr(hub_constants, "HF_HUB_ETAG_TIMEOUT", 5)
        monkeypatch.setattr(hub_constants, "HF_HUB_DOWNLOAD_TIMEOUT", 5)
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setattr("huggingface_hub.file_download.time.sleep", lambda seconds: None)  # retries at once
        yield server


def prepare_command(tmp_path: Path, name: str) -> list[str]:
    return ["data", "prepare", f"data={name}", *SMALL, f"paths.data_cache={tmp_path / 'cache'}",
            f"paths.downloads={tmp_path / 'downloads'}"]


def archive_on_disk(tmp_path: Path, name: str) -> Path:
    return tmp_path / "downloads" / name / DATASETS[name][1]


@pytest.mark.parametrize("name", ["youtubemix", "bigband"])
def test_study_data_prepare_downloads_the_archive_over_http(hub, tmp_path, capsys, name):
    repo_id, filename, inner, subtype = DATASETS[name]
    content = archive_bytes(inner, 5, subtype, tmp_path)
    hub.repos[repo_id] = HubRepo(files={filename: content})
    assert cli_main(prepare_command(tmp_path, name)) == 0
    out = capsys.readouterr().out
    assert f"hub dataset {repo_id} file {filename}" in out and "prepared" in out
    assert archive_on_disk(tmp_path, name).read_bytes() == content
    assert [(r.method, r.path) for r in hub.file_requests()] == [
        ("HEAD", f"/datasets/{repo_id}/resolve/main/{filename}"), ("GET", f"/datasets/{repo_id}/resolve/main/{filename}")]
    assert cli_main(prepare_command(tmp_path, name)) == 0 and "reused" in capsys.readouterr().out
    assert len(hub.file_requests()) == 2, "a downloaded archive is never fetched again"


def test_gated_repo_refuses_without_a_token_and_serves_with_one(hub, tmp_path, capsys, monkeypatch):
    repo_id, filename, inner, subtype = DATASETS["youtubemix"]
    hub.repos[repo_id] = HubRepo(files={filename: archive_bytes(inner, 5, subtype, tmp_path)}, gated=True)
    assert cli_main(prepare_command(tmp_path, "youtubemix")) == 2
    error = capsys.readouterr().err
    assert "GatedRepoError" in error and "HF_TOKEN" in error and "Traceback" not in error
    assert f"https://huggingface.co/datasets/{repo_id}" in error and "data=folder" in error
    assert not hub.gets(), "nothing is downloaded without access"
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_token")
    assert cli_main(prepare_command(tmp_path, "youtubemix")) == 2
    assert "GatedRepoError" in capsys.readouterr().err
    assert not archive_on_disk(tmp_path, "youtubemix").exists()
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert cli_main(prepare_command(tmp_path, "youtubemix")) == 0
    assert hub.gets() and all(r.authorized for r in hub.gets())


def test_missing_file_is_a_clear_error(hub, tmp_path, capsys):
    repo_id, _, _, _ = DATASETS["bigband"]
    hub.repos[repo_id] = HubRepo(files={"other.zip": b"PK"})
    assert cli_main(prepare_command(tmp_path, "bigband")) == 2
    error = capsys.readouterr().err
    assert "RemoteEntryNotFoundError" in error and "youtube_bigband_mono.zip" in error and "Traceback" not in error
    assert len(hub.file_requests()) <= 2


def test_a_connection_dropped_mid_file_resumes_from_where_it_stopped(hub, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(hub_constants, "DOWNLOAD_CHUNK_SIZE", 1024)  # so the first part reaches the disk
    repo_id, filename, inner, subtype = DATASETS["bigband"]
    content = archive_bytes(inner, 5, subtype, tmp_path)
    cut = len(content) // 3
    hub.repos[repo_id] = HubRepo(files={filename: content}, drops={filename: [cut]})
    assert cli_main(prepare_command(tmp_path, "bigband")) == 0
    assert archive_on_disk(tmp_path, "bigband").read_bytes() == content
    first, second = [r.range for r in hub.gets()]
    assert first is None and 0 < int(second.removeprefix("bytes=").rstrip("-")) <= cut


def test_a_download_that_keeps_failing_ends_in_a_clear_error_and_no_archive(hub, tmp_path, capsys):
    repo_id, filename, inner, subtype = DATASETS["bigband"]
    content = archive_bytes(inner, 5, subtype, tmp_path)
    hub.repos[repo_id] = HubRepo(files={filename: content}, drops={filename: [1000] + [0] * 20})
    assert cli_main(prepare_command(tmp_path, "bigband")) == 2
    error = capsys.readouterr().err
    assert "cannot download youtube_bigband_mono.zip" in error and "Traceback" not in error
    assert not archive_on_disk(tmp_path, "bigband").exists(), "a partial archive must never be used"
    assert not list((tmp_path / "cache").glob("bigband-*"))
    assert len(hub.gets()) <= 10
    hub.repos[repo_id].drops = {}
    assert cli_main(prepare_command(tmp_path, "bigband")) == 0, "the next run downloads it completely"
    assert archive_on_disk(tmp_path, "bigband").read_bytes() == content


def test_a_corrupt_archive_from_the_hub_is_a_clear_error(hub, tmp_path, capsys):
    repo_id, filename, _, _ = DATASETS["youtubemix"]
    hub.repos[repo_id] = HubRepo(files={filename: b"PK\x03\x04" + b"\x00" * 300})
    assert cli_main(prepare_command(tmp_path, "youtubemix")) == 2
    error = capsys.readouterr().err
    assert "not a readable zip archive" in error and "delete it and run again" in error
    assert not [p for p in archive_on_disk(tmp_path, "youtubemix").parent.glob("extracted-*") if p.is_dir()]


def test_the_cli_reads_hf_endpoint_and_hf_token_from_the_environment(tmp_path):
    repo_id, filename, inner, subtype = DATASETS["youtubemix"]
    with LocalHub() as hub:
        hub.repos[repo_id] = HubRepo(files={filename: archive_bytes(inner, 5, subtype, tmp_path)}, gated=True)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home")}
        done = subprocess.run([sys.executable, "-m", "study.cli", *prepare_command(tmp_path, "youtubemix")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"hub dataset {repo_id}" in done.stdout
    assert [(r.method, r.authorized) for r in hub.file_requests()] == [("HEAD", True), ("GET", True)]
