"""The batching scheduler without HTTP: the engine's `join` keeps each row's state, a listener that stops reading parks
only its own stream (the others finish), and a parked stream resumes with exactly the same tokens."""

import time

import numpy as np
import pytest

from conftest import audio_file
from study.generation.engines.step import StepEngine
from study.generation.sampling import SamplingSettings, stream_keys
from study.serve.settings import StreamSettings

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("kind", ["numba", "step"])
def test_join_runs_like_the_batch_it_concatenates(service, kind):
    engine = service.generator.engine if kind == "numba" else StepEngine(service.generator.model)
    period = service.generator.total_pool
    keys = stream_keys(1, [0, 1, 2])
    sampling = SamplingSettings(temperature=1.0)
    starts = np.array([3, 40, 77])
    batch = engine.new_state(3)
    alone = [engine.new_state(1) for _ in range(3)]
    steps = 2 * period if kind == "step" else 8 * period
    forced = np.full((3, steps), -1)
    reference = engine.run(batch, starts, forced, keys, 0, sampling)
    singles = [engine.run(state, starts[[b]], forced[[b]], keys[[b]], 0, sampling) for b, state in enumerate(alone)]
    joined = engine.join(alone)
    assert joined.batch_size == 3
    assert np.array_equal(np.concatenate([out.tokens for out in singles]), reference.tokens)
    after_batch = engine.run(batch, reference.tokens[:, -1], forced, keys, steps, sampling)
    after_join = engine.run(joined, reference.tokens[:, -1], forced, keys, steps, sampling)
    assert np.array_equal(after_batch.tokens, after_join.tokens)
    # float32 sums may round differently in a batch of 3 and three of 1: close, not bit-equal
    assert np.allclose(after_batch.logp_model, after_join.logp_model, rtol=0, atol=1e-5)


def test_a_listener_that_stops_reading_parks_only_its_stream(checkpoint):
    from conftest import make_service
    # int8: its pair and single-stream sums differ by ~5e-7, which this seed never turns into another token;
    # w8a8 re-quantizes each input, so such a difference can move a level and then a sampled token
    service = make_service(checkpoint, client_buffer_seconds=0.1, precision="int8")   # 1600 samples ahead at most
    try:
        settings = StreamSettings(seconds=0.5, seed=4)
        slow = service.create_job(settings, service.prompt(audio_file(0.2), "slow.wav", settings), "slow.wav")
        slow.has_listener = True   # a listener that has been sent nothing yet
        free = service.create_job(StreamSettings(seconds=0.5, seed=4), service.prompt(audio_file(0.2), "free.wav",
                                  settings), "free.wav")
        service.start()
        while not free.ended:
            time.sleep(0.005)
        assert free.status == "done"
        buffer = service.scheduler.buffer_samples
        assert slow.status == "running" and buffer <= slow.generated < buffer + service.scheduler.chunk
        slow.sent[0] = slow.generated      # the listener catches up: the stream joins again
        service.scheduler.wake()
        while not slow.ended:
            slow.sent[0] = slow.generated
            service.scheduler.wake()
            time.sleep(0.005)
        assert slow.status == "done"
        # same prompt, settings and seed: the parked stream's tokens are the free stream's
        assert np.array_equal(slow.streams[0].tokens, free.streams[0].tokens)
    finally:
        service.close()
