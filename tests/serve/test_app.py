"""The HTTP API and the WebSocket stream of `study serve` on a tiny checkpoint: the audio is exactly what
`study generate` writes for the same settings and seed, and every bad request gets its clear answer."""

import io
import json
import time

import numpy as np
import pytest
import soundfile
from fastapi.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from conftest import RATE, audio_file, make_service
from study.errors import ConfigError
from study.data.cache import file_hash
from study.generation.command import GenerateConfig, run
from study.generation.outputs import MANIFEST_FORMAT
from study.serve.app import create_app
from study.serve.settings import ServeSettings, StreamSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def collect(websocket) -> tuple[list[dict], dict[int, list[tuple[int, np.ndarray]]], np.ndarray]:
    """Every message until the end: (JSON messages, stream -> [(offset, samples)], prompt audio)."""
    messages, frames, prompt = [], {}, []
    while True:
        message = websocket.receive()
        if message.get("bytes") is not None:
            header = np.frombuffer(message["bytes"][:16], "<i4")
            samples = np.frombuffer(message["bytes"][16:], "<f4")
            assert header[3] == len(samples)
            if header[0] == 0:
                prompt.append(samples)
            else:
                frames.setdefault(int(header[1]), []).append((int(header[2]), samples))
        elif message.get("text") is not None:
            messages.append(json.loads(message["text"]))
            if messages[-1]["type"] == "end":
                return messages, frames, np.concatenate(prompt) if prompt else np.zeros(0, np.float32)
        else:
            raise AssertionError(f"the stream closed before its end message: {message}")


def wait_until_ended(client, job_id: str, limit: int = 2000) -> dict:
    for _ in range(limit):
        status = client.get(f"/jobs/{job_id}").json()
        if status["status"] in ("done", "stopped", "failed"):
            return status
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not end: {status}")


def study_generate(checkpoint, prompt_path, output, **settings) -> dict:
    """The files `study generate` writes for these settings: name -> audio."""
    config = GenerateConfig(checkpoint=str(checkpoint), prompt=str(prompt_path) if prompt_path else None,
                            output=str(output), backend="numba", threads=1, spectrograms=False, progress=False,
                            **settings)
    folder = run(config)
    return {path.name: soundfile.read(str(path), dtype="float32")[0] for path in folder.glob("*.wav")}


def test_streams_sharing_a_batch_give_the_audio_of_study_generate(service, checkpoint, tmp_path):
    """Two requests with prompts of different lengths start in one batch, a third joins while they run;
    each stream's chunks arrive in order, complete, and equal `study generate`'s files sample for sample."""
    requests = [("a.wav", audio_file(0.30, 44100, 2, seed=1), StreamSettings(seconds=0.4, n=2, seed=3)),
                ("b.flac", audio_file(0.25, 22050, 1, "FLAC", seed=2),
                 StreamSettings(seconds=0.3, seed=7, prompt_seconds=0.21)),
                ("c.wav", audio_file(0.2, 16000, 1, seed=4), StreamSettings(seconds=0.35, n=2, seed=5, top_p=0.9))]
    jobs = []
    for name, data, settings in requests[:2]:  # queued before the engine thread starts: one batch from step 0
        jobs.append(service.create_job(settings, service.prompt(data, name, settings), name))
    with TestClient(create_app(service)) as client:
        name, data, settings = requests[2]
        with client.websocket_connect(f"/jobs/{jobs[0].id}/stream") as first:
            first_messages = [json.loads(first.receive_text())]
            response = client.post("/generate", files={"prompt": (name, data, "audio/wav")},
                                   data={"seconds": "0.35", "n": "2", "seed": "5", "top_p": "0.9"})
            assert response.status_code == 202, response.text
            jobs.append(service.jobs[response.json()["id"]])
            rest = collect(first)
            results = [(first_messages + rest[0], rest[1], rest[2])]
        for job in jobs[1:]:
            with client.websocket_connect(f"/jobs/{job.id}/stream") as websocket:
                results.append(collect(websocket))
        assert max(streams for streams, _, _ in service.scheduler.step_log) >= 3   # requests really shared steps
        for index, ((name, data, settings), job, (messages, frames, prompt)) in enumerate(zip(requests, jobs, results)):
            assert messages[0]["type"] == "job" and messages[-1]["type"] == "end"
            assert messages[-1]["status"] == "done"
            path = tmp_path / name
            path.write_bytes(data)
            expected = study_generate(checkpoint, path, tmp_path / f"out{index}", seconds=settings.seconds,
                                      n=settings.n, seed=settings.seed, top_p=settings.top_p,
                                      prompt_seconds=settings.prompt_seconds)
            assert np.array_equal(prompt, expected["prompt00.wav"])
            assert sorted(frames) == list(range(settings.n))
            for stream, pieces in frames.items():
                offsets = [offset for offset, _ in pieces]
                assert offsets == sorted(offsets) and offsets[0] == 0
                assert all(a + len(s) == b for (a, s), (b, _) in zip(pieces, pieces[1:]))   # no gap, no overlap
                audio = np.concatenate([samples for _, samples in pieces])
                assert len(audio) == round(settings.seconds * RATE)
                assert np.array_equal(audio, expected[f"prompt00-sample{stream:02d}-continuation.wav"])
                whole = client.get(f"/jobs/{job.id}/audio.wav", params={"stream": stream})
                assert whole.status_code == 200 and whole.headers["content-type"] == "audio/wav"
                served, rate = soundfile.read(io.BytesIO(whole.content), dtype="float32")
                assert rate == RATE and np.array_equal(served, expected[f"prompt00-sample{stream:02d}.wav"])


def test_http_job_status_wav_and_manifest(service, checkpoint):
    with TestClient(create_app(service)) as client:
        response = client.post("/generate", files={"prompt": ("song.ogg", audio_file(0.5, 48000, 2, "OGG"), "audio/ogg")},
                               data={"seconds": "0.2", "prompt_seconds": "0.25", "temperature": "0.9"})
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["status"] in ("queued", "running") and job["samples"] == round(0.2 * RATE)
        status = wait_until_ended(client, job["id"])
        assert status["status"] == "done" and status["generated_samples"] == status["samples"]
        assert status["time_to_first_audio_seconds"] > 0 and status["real_time_factor_per_stream"] > 0
        wav = client.get(f"/jobs/{job['id']}/audio.wav", params={"part": "continuation"})
        audio, rate = soundfile.read(io.BytesIO(wav.content), dtype="float32")
        assert rate == RATE and len(audio) == round(0.2 * RATE)
        manifest = client.get(f"/jobs/{job['id']}/manifest.json").json()
        assert manifest["format"] == MANIFEST_FORMAT
        assert manifest["checkpoint"]["sha256"] == file_hash(checkpoint)
        assert manifest["settings"]["temperature"] == 0.9 and manifest["settings"]["prompt"] == "upload:song.ogg"
        assert manifest["prompts"][0]["samples"] == round(0.25 * RATE)
        assert "/generate" in client.get("/openapi.json").json()["paths"]
        assert client.get("/docs").status_code == 200
        assert "AudioWorklet" in client.get("/static/app.js").text and client.get("/").status_code == 200


def test_unconditional_request_without_a_file(service):
    with TestClient(create_app(service)) as client:
        response = client.post("/generate", data={"seconds": "0.1", "seed": "2"})
        assert response.status_code == 202, response.text
        assert response.json()["prompt_samples"] == 0
        assert wait_until_ended(client, response.json()["id"])["status"] == "done"


@pytest.mark.parametrize("field, value, allowed", [
    ("top_p", "1.5", "number in (0, 1]"), ("seconds", "0", "number in (0, 60]"), ("n", "2.5", "integer in [1, 4]"),
    ("temperature", "warm", "number in [0, 10]"), ("seed", "-1", "integer in [0, 9.22337e+18]"),
    ("prompt_seconds", "nan", "number in (0, 16]")])
def test_malformed_settings_get_422_with_field_and_range(service, field, value, allowed):
    with TestClient(create_app(service)) as client:
        response = client.post("/generate", data={field: value})
        assert response.status_code == 422
        detail = response.json()["detail"][0]
        assert detail["field"] == field and detail["allowed"] == allowed


def test_uploads_that_are_not_audio_too_big_or_too_long(checkpoint):
    service = make_service(checkpoint, max_upload_mib=0.25, max_upload_seconds=2.0)
    try:
        with TestClient(create_app(service)) as client:
            not_audio = client.post("/generate", files={"prompt": ("notes.wav", b"this is text, not audio", "audio/wav")})
            assert not_audio.status_code == 422 and not_audio.json()["detail"][0]["field"] == "prompt"
            big = client.post("/generate", files={"prompt": ("big.wav", audio_file(1.5, 48000, 2), "audio/wav")})
            assert big.status_code == 413 and "max_upload_mib=0.25" in big.json()["detail"]
            long = client.post("/generate", files={"prompt": ("long.flac", audio_file(3.0, 8000, 1, "FLAC"), "audio/flac")})
            assert long.status_code == 413 and "max_upload_seconds=2" in long.json()["detail"]
            silent = client.post("/generate", files={"prompt": ("silence.wav", _silence(), "audio/wav")})
            assert silent.status_code == 422 and "silent" in silent.json()["detail"][0]["message"]
            assert service.scheduler.slots_used() == 0 and not service.jobs
    finally:
        service.close()


def _silence() -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(8000, np.float32), 16000, format="WAV")
    return buffer.getvalue()


def test_too_many_streams_queue_with_position_then_busy(checkpoint):
    service = make_service(checkpoint, max_streams=2, max_queue=1)
    try:
        with TestClient(create_app(service)) as client:
            running = client.post("/generate", data={"seconds": "20", "n": "2"}).json()
            queued = client.post("/generate", data={"seconds": "0.1"})
            assert queued.status_code == 202 and queued.json()["queue_position"] == 1
            busy = client.post("/generate", data={"seconds": "0.1"})
            assert busy.status_code == 503 and "busy" in busy.json()["detail"] and busy.headers["retry-after"]
            with client.websocket_connect(f"/jobs/{queued.json()['id']}/stream") as websocket:
                assert websocket.receive_json()["queue_position"] == 1
                assert websocket.receive_json() == {"type": "queued", "position": 1}
                client.post(f"/jobs/{running['id']}/stop")
                messages, frames, _ = collect(websocket)
            assert messages[-1]["status"] == "done" and sum(len(s) for _, s in frames[0]) == round(0.1 * RATE)
            assert client.get(f"/jobs/{running['id']}").json()["status"] == "stopped"
    finally:
        service.close()


def test_disconnect_mid_stream_frees_the_slot_within_one_step(service):
    with TestClient(create_app(service)) as client:
        job_id = client.post("/generate", data={"seconds": "30"}).json()["id"]
        with client.websocket_connect(f"/jobs/{job_id}/stream") as websocket:
            while websocket.receive().get("bytes") is None or not service.jobs[job_id].generated:
                pass
        status = wait_until_ended(client, job_id)
        job = service.jobs[job_id]
        assert status["status"] == "stopped" and status["generated_samples"] < status["samples"]
        assert job.end_step - job.stop_requested_step <= 1
        assert service.scheduler.slots_used() == 0


def test_non_loopback_bind_needs_a_token_and_checks_it(checkpoint):
    with pytest.raises(ConfigError, match="token=SECRET"):
        ServeSettings(checkpoint=str(checkpoint), host="0.0.0.0")
    service = make_service(checkpoint, host="0.0.0.0", token="sesame")
    try:
        with TestClient(create_app(service)) as client:
            assert client.post("/generate", data={"seconds": "0.1"}).status_code == 401
            wrong = {"Authorization": "Bearer open"}
            assert client.post("/generate", data={"seconds": "0.1"}, headers=wrong).status_code == 401
            right = {"Authorization": "Bearer sesame"}
            job = client.post("/generate", data={"seconds": "0.1"}, headers=right)
            assert job.status_code == 202
            assert client.get(f"/jobs/{job.json()['id']}", headers=wrong).status_code == 401
            with pytest.raises(WebSocketDisconnect) as refused:
                with client.websocket_connect(f"/jobs/{job.json()['id']}/stream?token=open") as websocket:
                    websocket.receive_text()
            assert refused.value.code == 4401
            with client.websocket_connect(f"/jobs/{job.json()['id']}/stream?token=sesame") as websocket:
                assert collect(websocket)[0][-1]["status"] == "done"
            assert client.get("/config").json()["token_required"] is True
    finally:
        service.close()


def test_stop_message_ends_the_stream_with_what_was_generated(service):
    with TestClient(create_app(service)) as client:
        job_id = client.post("/generate", data={"seconds": "30", "n": "2"}).json()["id"]
        with client.websocket_connect(f"/jobs/{job_id}/stream") as websocket:
            while websocket.receive().get("bytes") is None:
                pass
            websocket.send_text(json.dumps({"type": "stop"}))
            messages, frames, _ = collect(websocket)
        assert messages[-1]["status"] == "stopped" and service.scheduler.slots_used() == 0
        kept = messages[-1]["generated_samples"]
        assert 0 < kept < messages[-1]["samples"]
        audio, _ = soundfile.read(io.BytesIO(client.get(f"/jobs/{job_id}/audio.wav",
                                                        params={"stream": 1, "part": "continuation"}).content))
        assert len(audio) == kept
        assert client.get(f"/jobs/{job_id}/manifest.json").json()["settings"]["served"]["status"] == "stopped"
