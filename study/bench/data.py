"""`study bench data [overrides...]`: preparation throughput (audio hours per minute) and loader windows/s.

Works in a temporary cache that it deletes, so every run measures a cold preparation; prints a table
and writes nothing that outlives the run. Timings are this machine's, never asserted by tests.
"""

import os
import sys
import tempfile
import time

from omegaconf import OmegaConf

from study.config import compose_config
from study.data import DataError

LOADER_SECONDS = 2.0


def loader_throughput(prepared, batch_size: int, num_workers: int) -> float:
    """Windows per second drawn from the shuffled train split for about LOADER_SECONDS."""
    from study.data.dataset import make_loader

    loader = make_loader(prepared, "train", batch_size, shuffle=True, seed=0, num_workers=num_workers)
    windows, epoch = 0, 0
    started = time.perf_counter()
    while time.perf_counter() - started < LOADER_SECONDS:
        loader.sampler.set_epoch(epoch)
        for inputs, _ in loader:
            windows += len(inputs)
        epoch += 1
    return windows / (time.perf_counter() - started)


def main(argv: list[str]) -> int:
    from study.data.prepare import prepare
    from study.data.settings import DataSettings
    from study.data.sources import resolve_source

    config = compose_config(["data=toy-piano", *argv])
    with tempfile.TemporaryDirectory(prefix="study-bench-data-") as scratch:
        paths = OmegaConf.create({"data_cache": os.path.join(scratch, "cache"),
                                  "downloads": str(config.paths.downloads)})
        try:
            started = time.perf_counter()
            resolve_source(DataSettings.from_config(config.data), paths)  # toy generation or download + unzip
            source_seconds = time.perf_counter() - started
            started = time.perf_counter()
            prepared = prepare(config.data, paths)
            prepare_seconds = time.perf_counter() - started
        except DataError as error:
            print(f"study bench data: {error}", file=sys.stderr)
            return 2
        hours = prepared.manifest["totals"]["source_seconds"] / 3600
        batch_size = 16
        rows = [
            ("audio prepared", f"{hours:.3f} h in {prepared.manifest['totals']['files']} files"),
            ("source (generate / unzip)", f"{source_seconds:.2f} s"),
            ("prepare (hash, decode, quantise, write)", f"{prepare_seconds:.2f} s"),
            ("preparation throughput", f"{hours / (prepare_seconds / 60):.1f} h of audio per minute"),
        ]
        for workers in (0, 2):
            rate = loader_throughput(prepared, batch_size, workers)
            rows.append((f"loader, batch {batch_size}, {workers} workers", f"{rate:,.0f} windows/s "
                         f"({rate * prepared.sample_len / 1e6:.1f} M tokens/s)"))
        del prepared
    print(f"study bench data: {config.data.name}, sample_len {config.data.sample_len}, "
          f"{config.data.sample_rate} Hz, {os.cpu_count()} CPU cores (temporary cache, nothing written)")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    return 0
