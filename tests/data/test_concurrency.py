"""Two processes preparing the same fingerprint at once (two Ray trials): both succeed, one builds."""

import json
import multiprocessing
from pathlib import Path

from data_test_helpers import paths_config, small_toy


def prepare_in_process(root: str, start, results) -> None:
    from study.data.prepare import prepare

    start.wait(timeout=60)  # both processes have imported everything; race from here
    prepared = prepare(small_toy(toy_clips=12, toy_clip_seconds=4.0), paths_config(Path(root)))
    results.put((str(prepared.path), prepared.fingerprint, prepared.reused))


def test_concurrent_prepare_builds_once_and_both_succeed(tmp_path):
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=prepare_in_process, args=(str(tmp_path), start, results)) for _ in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    (path_a, fingerprint_a, reused_a), (path_b, fingerprint_b, reused_b) = outcomes
    assert path_a == path_b and fingerprint_a == fingerprint_b
    assert sorted([reused_a, reused_b]) == [False, True]  # exactly one build
    cache = tmp_path / "cache"
    assert sorted(p.name for p in cache.iterdir() if p.is_dir()) == [Path(path_a).name, "toy-sources"]
    assert not [p for p in cache.rglob(".*tmp*")]
    manifest = json.loads((Path(path_a) / "manifest.json").read_text())
    assert manifest["totals"]["files"] == 12 and manifest["totals"]["windows"] == 12 * 15
