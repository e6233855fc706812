"""`study bench serve`: N concurrent WebSocket listeners of `study serve` on 127.0.0.1, against the engine alone.

Per client count it prints the per-client real-time factor (p50 and the slowest 5%), time to first audio,
and how much of the engine's own batched throughput (measured in the same run) reaches listeners. A
command, not a test: nothing asserts its figures. It never binds anything but 127.0.0.1.
"""

import asyncio
import io
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from study.command_args import parse_key_values
from study.errors import ConfigError

MAX_CLIENTS = 32
MAX_SECONDS = 30.0


@dataclass
class ServeBenchSettings:
    """Every key of `study bench serve key=value ...`."""
    checkpoint: Optional[str] = None    # default: SaShiMi-2 at full size with random weights (speed does not
                                        # depend on them), 16 kHz mu-law 8 bit
    clients: str = "1,2,4,8"            # concurrent listeners per round, comma-separated
    seconds: float = 4.0                # continuation per listener
    prompt_seconds: float = 1.0         # prompt per listener (teacher-forced before the first sample)
    chunk_samples: int = 2048
    threads: int = 0                    # numba threads; 0: one per core
    backend: str = "auto"
    device: str = "auto"

    def counts(self) -> list[int]:
        try:
            counts = sorted({int(part) for part in self.clients.split(",") if part.strip()})
        except ValueError:
            raise ConfigError(f"study bench serve: clients={self.clients!r} must be integers, e.g. clients=1,4,8") from None
        if not counts or counts[0] < 1 or counts[-1] > MAX_CLIENTS:
            raise ConfigError(f"study bench serve: clients={self.clients!r} must be in [1, {MAX_CLIENTS}]")
        if not 0 < self.seconds <= MAX_SECONDS or not 0 < self.prompt_seconds <= 8:
            raise ConfigError(f"study bench serve: seconds must be in (0, {MAX_SECONDS:g}] and prompt_seconds in (0, 8]")
        return counts


def random_checkpoint(folder: Path) -> Path:
    import torch

    from study.sashimi import build_model
    from study.training.checkpoint import model_payload, save_checkpoint
    torch.manual_seed(0)
    model = build_model("sashimi-2", l_max=16384)
    data = {"sample_rate": 16000, "bits": 8, "quantization": "mu-law", "normalization": "minmax", "sample_len": 16384}
    return save_checkpoint(folder / "sashimi-2-random.pt",
                           {**model_payload(model), "config": {"data": data, "name": "sashimi-2 (random weights)"}})


def prompt_bytes(seconds: float, rate: int = 44100) -> bytes:
    import soundfile
    t = np.arange(round(seconds * rate)) / rate
    audio = sum(np.sin(2 * np.pi * 220 * h * t) / h for h in range(1, 5)) * np.exp(-3 * (t % 0.5))
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.4 * audio).astype(np.float32), rate, format="WAV")
    return buffer.getvalue()


def engine_throughput(service, batch: int, seconds: float = 1.5) -> float:
    """Summed samples/s of the engine alone for `batch` streams, in steps of the server's chunk."""
    from study.generation.sampling import SamplingSettings, stream_keys
    engine, chunk = service.generator.engine, service.scheduler.chunk
    state = engine.new_state(batch)
    keys = stream_keys(0, range(batch))
    first = np.full(batch, 128)
    forced = np.full((batch, chunk), -1, np.int64)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds or done == 0:
        out = engine.run(state, first, forced, keys, done, SamplingSettings())
        first, done = out.tokens[:, -1], done + chunk
    return batch * done / (time.perf_counter() - started)


async def listen(url: str, prompt: bytes, settings: ServeBenchSettings) -> dict:
    """One listener: POST the prompt, stream until the end; times from the POST."""
    import httpx
    import websockets
    began = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120) as client:
        response = await client.post("/generate", files={"prompt": ("prompt.wav", prompt, "audio/wav")},
                                     data={"seconds": str(settings.seconds),
                                           "prompt_seconds": str(settings.prompt_seconds)})
    if response.status_code != 202:
        return {"error": f"HTTP {response.status_code}: {response.text[:200]}"}
    job = response.json()
    first = None
    samples = 0
    async with websockets.connect(url.replace("http", "ws") + f"/jobs/{job['id']}/stream", max_size=1 << 22) as socket:
        async for message in socket:
            if isinstance(message, bytes):
                header = np.frombuffer(message[:16], "<i4")
                if header[0] == 1:
                    first = first or time.perf_counter()
                    samples += int(header[3])
            elif json.loads(message)["type"] == "end":
                break
    ended = time.perf_counter()
    rate = job["sample_rate"]
    return {"time_to_first_audio": first - began, "real_time_factor": samples / rate / max(ended - first, 1e-9),
            "samples": samples}


async def round_of(url: str, count: int, prompt: bytes, settings: ServeBenchSettings) -> tuple[list[dict], float]:
    started = time.perf_counter()
    results = await asyncio.gather(*(listen(url, prompt, settings) for _ in range(count)))
    return list(results), time.perf_counter() - started


def main(argv: list[str]) -> int:
    settings = parse_key_values(ServeBenchSettings, argv, "bench serve", "study bench serve clients=1,4,8 seconds=4")
    counts = settings.counts()
    import logging
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from study.serve.command import background_server
    from study.serve.service import Service
    from study.serve.settings import ServeSettings
    with tempfile.TemporaryDirectory(prefix="study-bench-serve-") as folder:
        checkpoint = Path(settings.checkpoint) if settings.checkpoint else random_checkpoint(Path(folder))
        serve = ServeSettings(checkpoint=str(checkpoint), max_streams=max(counts), max_queue=0,
                              max_seconds=MAX_SECONDS, chunk_samples=settings.chunk_samples, threads=settings.threads,
                              backend=settings.backend, device=settings.device)
        service = Service(serve, checkpoint)
        try:
            warm = service.warm()
            rate = service.sample_rate
            print(f"study bench serve: {checkpoint.name}, {service.describe()}; warm-up {warm:.1f} s; "
                  f"{settings.seconds:g} s per listener after a {settings.prompt_seconds:g} s prompt; steps of "
                  f"{service.scheduler.chunk} samples; real time = {rate} samples/s per listener", flush=True)
            prompt = prompt_bytes(settings.prompt_seconds + 0.5)
            print(f"{'clients':>7} {'rtf p50':>8} {'rtf p95':>8} {'ttfa p50':>9} {'ttfa p95':>9} "
                  f"{'listeners x':>11} {'engine x':>9} {'served/engine':>13}", flush=True)
            real_time = []
            with background_server(service) as url:
                for count in counts:
                    results, _ = asyncio.run(round_of(url, count, prompt, settings))
                    failed = [r["error"] for r in results if "error" in r]
                    if failed:
                        print(f"{count:>7} failed: {failed[0]}")
                        continue
                    engine = engine_throughput(service, count) / rate   # while no listener runs: the same cores
                    speeds = np.array([r["real_time_factor"] for r in results])
                    first = np.array([r["time_to_first_audio"] for r in results])
                    summed = float(speeds.sum())
                    print(f"{count:>7} {np.median(speeds):>7.2f}x {np.percentile(speeds, 5):>7.2f}x "
                          f"{np.median(first):>8.2f}s {np.percentile(first, 95):>8.2f}s {summed:>10.2f}x "
                          f"{engine:>8.2f}x {summed / engine:>12.0%}", flush=True)
                    if speeds.min() > 1:
                        real_time.append(count)
            print(f"largest client count with every listener faster than real time: "
                  f"{max(real_time) if real_time else 'none'} (of {counts})")
            print("rtf p95 = the real-time factor 95% of listeners beat; ttfa = POST to first continuation sample, "
                  "prompt prefill included; listeners x = summed real-time factors; engine x = the engine alone, "
                  "same batch, same steps; figures depend on what else runs on the machine")
        finally:
            service.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
