"""The ASGI app of `study serve`: the page, the HTTP API for scripts and the WebSocket audio stream.

Routes only translate between HTTP and the Service; every limit and range comes from study.serve.settings.
It never accepts a file path from a client and never answers an API call without the token, when one is set.
"""

import asyncio
import hmac
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Request, UploadFile, WebSocket, WebSocketDisconnect
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from study.errors import GenerationError
from study.serve.scheduler import Busy, Job
from study.serve.service import Service, UploadTooLarge
from study.serve.settings import SettingsError, StreamSettings, allowed_ranges, describe_range

STATIC = Path(__file__).parent / "static"
FRAME_SAMPLES = 4096          # samples per binary WebSocket frame at most
KIND_PROMPT, KIND_CONTINUATION = 0, 1
HEADER = "frame header: 4 little-endian int32 [kind (0 prompt, 1 continuation), stream, offset, count], then count float32"


def audio_frame(kind: int, stream: int, offset: int, samples: np.ndarray) -> bytes:
    header = np.array([kind, stream, offset, len(samples)], dtype="<i4")
    return header.tobytes() + np.asarray(samples, dtype="<f4").tobytes()


def stop_message(text: str) -> bool:
    try:
        message = json.loads(text)
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "stop"


def create_app(service: Service) -> FastAPI:
    """The app for one loaded checkpoint; its lifespan runs the engine thread."""
    settings = service.settings

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.scheduler.close()

    app = FastAPI(title="study serve", lifespan=lifespan, version="1",
                  description="Continue an audio prompt with a SaShiMi checkpoint and stream the continuation "
                              f"as it is generated. WebSocket `/jobs/{{id}}/stream`: JSON text messages and binary "
                              f"audio frames ({HEADER}); send `{{\"type\": \"stop\"}}` to stop. With a token, send "
                              "`Authorization: Bearer TOKEN` (the WebSocket also takes `?token=TOKEN`).")

    def token_matches(given: str | None) -> bool:
        return settings.token is None or (given is not None and hmac.compare_digest(given, settings.token))

    def authorized(request: Request) -> None:
        header = request.headers.get("authorization", "")
        given = header[7:] if header.lower().startswith("bearer ") else None
        if not token_matches(given):
            raise HTTPException(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' (the token "
                                     "study serve was started with)", headers={"WWW-Authenticate": "Bearer"})

    def find(job_id: str) -> Job:
        job = service.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (finished jobs are kept for the last {settings.keep_jobs})")
        return job

    @app.middleware("http")
    async def upload_limit(request: Request, call_next):
        length = request.headers.get("content-length")
        if request.url.path == "/generate" and length and length.isdigit() and \
                int(length) > settings.max_upload_bytes + (1 << 16):
            return JSONResponse({"detail": f"the request has {int(length) / 2**20:.1f} MiB, over the upload limit "
                                           f"max_upload_mib={settings.max_upload_mib:g} MiB",
                                 "limit": "max_upload_mib"}, status_code=413)
        return await call_next(request)

    @app.exception_handler(SettingsError)
    async def bad_setting(request: Request, error: SettingsError):
        return JSONResponse({"detail": [error.detail()]}, status_code=422)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/config", summary="limits, allowed ranges and the loaded checkpoint")
    async def config():
        ranges = allowed_ranges(settings)
        return {"sample_rate": service.sample_rate, "token_required": settings.token is not None,
                "max_streams": settings.max_streams, "max_upload_mib": settings.max_upload_mib,
                "max_upload_seconds": settings.max_upload_seconds,
                "ranges": {name: describe_range(entry) for name, entry in ranges.items()},
                "defaults": StreamSettings().__dict__, "backend": service.describe(),
                "checkpoint": service.generator.checkpoint.name,
                "experiment": (service.generator.payload.get("config") or {}).get("name")}

    @app.post("/generate", status_code=202, dependencies=[Depends(authorized)],
              summary="start a continuation of an uploaded prompt (none: unconditional); returns the job")
    async def generate(prompt: Optional[UploadFile] = File(None, description="wav, flac, ogg or mp3, any rate"),
                       prompt_seconds: Optional[str] = Form(None), prompt_start_seconds: Optional[str] = Form(None),
                       seconds: Optional[str] = Form(None), n: Optional[str] = Form(None),
                       temperature: Optional[str] = Form(None), top_p: Optional[str] = Form(None),
                       top_k: Optional[str] = Form(None), seed: Optional[str] = Form(None)):
        request = StreamSettings.checked(settings, prompt_seconds=prompt_seconds,
                                         prompt_start_seconds=prompt_start_seconds, seconds=seconds, n=n,
                                         temperature=temperature, top_p=top_p, top_k=top_k, seed=seed)
        data, name = None, None
        if prompt is not None and prompt.filename:
            data = await prompt.read(settings.max_upload_bytes + 1)
            name = Path(prompt.filename).name[:200]
        try:
            tokens = await asyncio.to_thread(service.prompt, data, name, request)
        except UploadTooLarge as error:
            raise HTTPException(413, str(error)) from None
        except GenerationError as error:
            raise HTTPException(422, [{"field": "prompt", "value": name, "allowed": "an audio file (wav, flac, "
                                       "ogg, mp3) that is not silent", "message": str(error)}]) from None
        try:
            job = service.create_job(request, tokens, name)
        except Busy as error:
            raise HTTPException(503, f"busy: {error}", headers={"Retry-After": "5"}) from None
        return service.status(job)

    @app.get("/jobs/{job_id}", dependencies=[Depends(authorized)], summary="status, progress and speed of a job")
    async def job_status(job_id: str):
        return service.status(find(job_id))

    @app.post("/jobs/{job_id}/stop", dependencies=[Depends(authorized)], summary="stop a job now, freeing its slot")
    async def stop(job_id: str):
        job = find(job_id)
        service.scheduler.stop(job)
        return service.status(job)

    def ended(job_id: str) -> tuple[Job, Path]:
        job = find(job_id)
        if not job.ended:
            raise HTTPException(409, f"job {job_id} is {job.status}; audio is ready when GET /jobs/{job_id} says "
                                     "done or stopped")
        if job.status == "failed":
            raise HTTPException(500, f"job {job_id} failed: {job.error}")
        return job, service.outputs(job)

    @app.get("/jobs/{job_id}/audio.wav", dependencies=[Depends(authorized)],
             summary="32-bit float WAV of stream `stream`: prompt + continuation, or the continuation alone")
    def audio(job_id: str, stream: int = 0, part: str = "whole"):
        job, folder = ended(job_id)
        if not 0 <= stream < len(job.streams) or part not in ("whole", "continuation"):
            raise HTTPException(422, [{"field": "stream" if part in ("whole", "continuation") else "part",
                                       "allowed": f"stream in [0, {len(job.streams) - 1}], part whole|continuation",
                                       "message": "no such audio"}])
        manifest = json.loads((folder / "manifest.json").read_text())
        files = manifest["continuations"][stream]["files"]
        name = files["audio" if part == "whole" else "continuation"]
        return FileResponse(folder / name, media_type="audio/wav", filename=name)

    @app.get("/jobs/{job_id}/manifest.json", dependencies=[Depends(authorized)],
             summary="the manifest `study generate` writes: settings, checkpoint hash, likelihoods, timings")
    def manifest(job_id: str):
        _, folder = ended(job_id)
        return FileResponse(folder / "manifest.json", media_type="application/json", filename="manifest.json")

    @app.websocket("/jobs/{job_id}/stream")
    async def stream(websocket: WebSocket, job_id: str, token: Optional[str] = None):
        header = websocket.headers.get("authorization", "")
        given = token or (header[7:] if header.lower().startswith("bearer ") else None)
        job = service.jobs.get(job_id)
        if not token_matches(given) or job is None:
            await websocket.close(code=4401 if job is not None or not token_matches(given) else 4404)
            return
        await websocket.accept()
        await send_stream(websocket, job)

    async def send_stream(websocket: WebSocket, job: Job) -> None:
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def listener() -> None:
            loop.call_soon_threadsafe(changed.set)

        job.listeners.append(listener)
        job.has_listener = True
        receive = asyncio.ensure_future(websocket.receive())
        waiting = None
        try:
            await websocket.send_text(json.dumps({"type": "job", **service.status(job)}))
            prompt_audio = service.audio.decode(job.prompt.tokens) if len(job.prompt.tokens) else np.zeros(0)
            for offset in range(0, len(prompt_audio), FRAME_SAMPLES):
                await websocket.send_bytes(audio_frame(KIND_PROMPT, 0, offset,
                                                       prompt_audio[offset:offset + FRAME_SAMPLES]))
            position = None
            while True:
                changed.clear()
                finished = job.ended
                if job.status == "queued":
                    now = service.scheduler.queue_position(job)
                    if now != position:
                        position = now
                        await websocket.send_text(json.dumps({"type": "queued", "position": now}))
                sent_any = False
                for stream in job.streams:
                    available = stream.generated
                    while job.sent[stream.index] < available:
                        start = job.sent[stream.index]
                        stop = min(available, start + FRAME_SAMPLES)
                        samples = service.audio.decode(stream.tokens[start:stop])
                        await websocket.send_bytes(audio_frame(KIND_CONTINUATION, stream.index, start, samples))
                        job.sent[stream.index] = stop
                        sent_any = True
                if sent_any:
                    service.scheduler.wake()
                    status = service.status(job)
                    await websocket.send_text(json.dumps({"type": "progress", **{
                        key: status[key] for key in ("generated_samples", "generated_seconds",
                                                     "real_time_factor_per_stream", "time_to_first_audio_seconds")}}))
                if finished:
                    await websocket.send_text(json.dumps({"type": "end", **service.status(job)}))
                    await websocket.close()
                    return
                waiting = asyncio.ensure_future(changed.wait())
                done, _ = await asyncio.wait({waiting, receive}, return_when=asyncio.FIRST_COMPLETED)
                if receive in done:
                    message = receive.result()
                    if message["type"] == "websocket.disconnect":
                        return
                    if message.get("text") and stop_message(message["text"]):
                        service.scheduler.stop(job)
                    receive = asyncio.ensure_future(websocket.receive())
                if not waiting.done():
                    waiting.cancel()
        except (WebSocketDisconnect, RuntimeError, OSError):  # the connection broke: the job ends with it
            pass
        finally:
            for task in (receive, waiting):
                if task is not None and not task.done():
                    task.cancel()
            job.listeners.remove(listener)
            job.has_listener = bool(job.listeners)
            if not job.ended:
                service.scheduler.stop(job)

    return app
