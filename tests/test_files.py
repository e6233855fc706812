"""Atomic writes: a file or a folder appears whole or not at all, and nothing existing is overwritten."""

import pytest

from study.files import OccupiedError, StagingFolder, write_atomic


def test_write_atomic_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = write_atomic(tmp_path / "deep" / "a.json", b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_a_staging_folder_appears_only_complete(tmp_path):
    with StagingFolder(tmp_path / "out") as folder:
        (folder / "x.txt").write_text("x")
        assert not (tmp_path / "out").exists()  # nothing under the final name while it is written
    assert (tmp_path / "out" / "x.txt").read_text() == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_staging_folder_leaves_nothing(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RuntimeError, match="disk full"):
        with StagingFolder(tmp_path / "empty") as folder:
            (folder / "half.txt").write_text("half")
            raise RuntimeError("disk full")
    assert [p.name for p in tmp_path.iterdir()] == ["empty"] and not any((tmp_path / "empty").iterdir())


def test_an_occupied_destination_is_refused_before_any_work(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("mine")
    (tmp_path / "file").write_text("file")
    for path in (tmp_path / "full", tmp_path / "file"):
        with pytest.raises(OccupiedError, match="already exists"):
            StagingFolder(path)
    assert (tmp_path / "full" / "mine.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "full"]
