"""The live server's state: the checkpoint loaded once, the scheduler, the jobs, uploads and outputs.

Uploads are decoded from a private temporary folder and deleted at once; outputs are written by
`Generator.save` (the files and manifest of `study generate`) into the server's own temporary folder.
It never reads or writes a path a client names.
"""

import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile

from study.data.quantize import zero_token
from study.errors import GenerationError
from study.generation.command import GenerateConfig
from study.generation.generator import Generator
from study.generation.outputs import Continuation, Generation
from study.generation.prompts import prompt_from_file, unconditional_prompt
from study.generation.sampling import SamplingSettings
from study.serve.scheduler import Job, Scheduler
from study.serve.settings import ServeSettings, StreamSettings

log = logging.getLogger(__name__)
UPLOAD_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aiff", ".aif")


class UploadTooLarge(ValueError):
    """Over a size or duration limit: answered 413 with the limit named."""


class Service:
    """Everything `study serve` holds between requests; `close` stops the engine thread and removes files."""

    def __init__(self, settings: ServeSettings, checkpoint: str | Path):
        self.settings = settings
        self.generator = Generator(checkpoint, settings.backend, settings.device, settings.threads or None,
                                   settings.precision)
        self.audio = self.generator.audio
        self.scheduler = Scheduler(self.generator.engine, self.generator.total_pool, settings.chunk_samples,
                                   settings.max_streams, settings.max_queue, zero_token(self.audio.bits),
                                   round(settings.client_buffer_seconds * self.audio.sample_rate))
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.folder = Path(tempfile.mkdtemp(prefix="study-serve-"))
        self.warm_seconds = 0.0
        self._lock = threading.Lock()

    @property
    def sample_rate(self) -> int:
        return self.audio.sample_rate

    def warm(self) -> float:
        """One engine step before the first listener (compiles the CPU loop or captures the CUDA graph)."""
        started = time.perf_counter()
        engine, chunk = self.generator.engine, self.scheduler.chunk
        state = engine.new_state(1)
        tokens = np.full((1, chunk), zero_token(self.audio.bits), np.int64)
        engine.run(state, tokens[:, 0], tokens, np.zeros(1, np.uint64), 0, SamplingSettings())
        self.warm_seconds = time.perf_counter() - started
        return self.warm_seconds

    def start(self) -> None:
        self.scheduler.start()

    def close(self) -> None:
        self.scheduler.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def describe(self) -> str:
        return self.generator.engine.describe()

    # -- requests ------------------------------------------------------------------------------------
    def prompt(self, data: bytes | None, filename: str | None, settings: StreamSettings):
        """Tokens of an uploaded file (None: unconditional), made as `study generate` makes them."""
        if data is None:
            return unconditional_prompt()
        limits = self.settings
        if len(data) > limits.max_upload_bytes:
            raise UploadTooLarge(f"the upload has {len(data) / 2**20:.1f} MiB, over the limit of "
                                 f"max_upload_mib={limits.max_upload_mib:g} MiB; send a shorter excerpt")
        suffix = Path(filename or "").suffix.lower()
        folder = Path(tempfile.mkdtemp(prefix="upload-", dir=self.folder))
        path = folder / f"upload{suffix if suffix in UPLOAD_SUFFIXES else ''}"
        try:
            path.write_bytes(data)
            try:
                info = soundfile.info(str(path))
            except (RuntimeError, OSError, ValueError) as error:
                raise GenerationError(f"the upload {filename!r} is not audio this server can decode ({error}); "
                                      "send wav, flac, ogg or mp3") from None
            if info.duration > limits.max_upload_seconds:
                raise UploadTooLarge(f"the upload lasts {info.duration:.0f} s, over the limit of "
                                     f"max_upload_seconds={limits.max_upload_seconds:g} s; send a shorter excerpt")
            prompt = prompt_from_file(path, self.audio, self.generator.total_pool, settings.prompt_seconds,
                                      settings.prompt_start_seconds)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        prompt.source = f"upload:{filename or 'prompt'}"
        prompt.info["path"] = prompt.source
        return prompt

    def create_job(self, settings: StreamSettings, prompt, upload_name: str | None) -> Job:
        length = max(1, round(settings.seconds * self.sample_rate))
        job = Job(secrets.token_urlsafe(9), settings, prompt, length, self.sample_rate, upload_name)
        self.scheduler.submit(job)   # raises Busy
        with self._lock:
            self.jobs[job.id] = job
            finished = [key for key, old in self.jobs.items() if old.ended]
            for key in finished[:max(0, len(self.jobs) - self.settings.keep_jobs)]:
                old = self.jobs.pop(key)
                if old.folder is not None:
                    shutil.rmtree(old.folder, ignore_errors=True)
        return job

    def status(self, job: Job) -> dict:
        rate = self.sample_rate
        first_audio = None if job.first_audio is None else round(job.first_audio - job.created, 4)
        speed = job.real_time_factor()
        return {
            "id": job.id, "status": job.status, "error": job.error,
            "queue_position": self.scheduler.queue_position(job),
            "settings": asdict(job.settings), "sample_rate": rate, "streams": len(job.streams),
            "prompt_samples": len(job.prompt.tokens), "samples": job.length, "generated_samples": job.generated,
            "generated_seconds": round(job.generated / rate, 4),
            "time_to_first_audio_seconds": first_audio,
            "real_time_factor_per_stream": None if speed is None else round(speed, 3),
            "links": {"self": f"/jobs/{job.id}", "stream": f"/jobs/{job.id}/stream",
                      "audio": f"/jobs/{job.id}/audio.wav", "manifest": f"/jobs/{job.id}/manifest.json"},
        }

    # -- outputs ---------------------------------------------------------------------------------------
    def outputs(self, job: Job) -> Path:
        """The folder `study generate` would write for this job (written once, after the job ended)."""
        with job.lock:
            if job.folder is not None:
                return job.folder
            length = job.generated   # a stopped job: what every stream has
            continuations = [Continuation(0, stream.index, stream.index, stream.tokens[:length].copy(),
                                          stream.logp_model[:length].copy(), stream.logp_sample[:length].copy())
                             for stream in job.streams]
            settings = job.settings
            rate = self.sample_rate
            result_settings = {"seconds": settings.seconds, "samples": length, "n": settings.n,
                               "batch_size": self.settings.max_streams, "seed": settings.seed,
                               **asdict(job.sampling)}
            took = (job.updated or job.created) - (job.began_continuation or job.created)
            speed = job.real_time_factor() or 0.0
            timings = {"load_seconds": round(self.generator.load_seconds, 4),
                       "generation_seconds": round(took, 4),
                       "real_time_factor_per_stream": round(speed, 3),
                       "time_to_first_audio_seconds": None if job.first_audio is None
                       else round(job.first_audio - job.created, 4)}
            result = Generation([job.prompt], continuations, [job.prompt_logp], result_settings, timings)
            config = GenerateConfig(checkpoint=str(self.generator.checkpoint), prompt=job.prompt.source,
                                    prompt_seconds=settings.prompt_seconds,
                                    prompt_start_seconds=settings.prompt_start_seconds, seconds=settings.seconds,
                                    n=settings.n, batch_size=self.settings.max_streams,
                                    temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k,
                                    seed=settings.seed, backend=self.settings.backend, device=self.settings.device,
                                    threads=self.settings.threads, precision=self.settings.precision,
                                    spectrograms=False, progress=False)
            extra = {**asdict(config), "output": None, "served": {"job": job.id, "status": job.status}}
            job.folder = self.generator.save(result, self.folder / f"job-{job.id}", spectrograms=False,
                                             extra_settings=extra)
            return job.folder
