"""Generation engines against the model: the fused numba loop and the static tensor step (eager here,
CUDA graphs under `make gpu-check`) give the logits of `SaShiMi.forward`, and every backend draws
the tokens of the plain `model.step` + reference sampler path."""

import copy

import numpy as np
import pytest
import torch

from study.generation.engines.cuda_graph import GraphEngine
from study.generation.engines.numba_engine import FastEngine
from study.generation.engines import numba_network
from study.generation.engines.numba_math import gelu_array, sigmoid_array
from study.generation.engines.numba_network import flatten
from study.generation.engines.numba_plan import STEP_OPS, S4Plan, compact_ssm, network_plan, ssm_matrices
from study.generation.engines.numba_sampler import exp_nonpositive, sample_one
from study.generation.engines.protocol import Engine
from study.generation.engines.selection import make_engine
from study.generation.engines.step import StepEngine
from study.s4.layer import DiagonalKernel, DPLRKernel
from study.generation.sampling import SamplingSettings, sample, stream_keys, uniforms
from study.sashimi import build_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def perturb_(model, scale=0.1):
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn_like(parameter) * parameter.abs().mean())
    return model


def small_model(**overrides):
    values = dict(n_layers=1, d_model=16, d_state=16, l_max=256)
    values.update(overrides)
    return perturb_(build_model("sashimi-2", **values).eval())


def teacher_forced_logits(engine, tokens: torch.Tensor) -> np.ndarray:
    """Logits the engine gives when fed tokens[:, t] at step t, as forward sees them."""
    batch = tokens.shape[0]
    forced = np.roll(tokens.numpy(), -1, axis=1)  # output t is forced to the next input; the last is unused
    out = engine.run(engine.new_state(batch), tokens[:, 0].numpy(), forced, stream_keys(0, range(batch)), 0,
                     SamplingSettings(), keep_logits=True)
    return out.logits


def assert_engine_matches_forward(model, engine, length, batch_size=1, tolerance=1e-4):
    tokens = torch.randint(0, model.config.n_classes, (batch_size, length))
    with torch.no_grad():
        expected = model(tokens).numpy()
    error = np.abs(teacher_forced_logits(engine, tokens) - expected).max()
    assert error <= tolerance, f"max |engine - forward| = {error}"


@pytest.mark.parametrize("preset", ["sashimi-2", "sashimi-8"])
def test_fast_engine_equals_forward_for_the_full_presets_over_2048_samples(preset):
    model = perturb_(build_model(preset, l_max=2048).eval())
    assert_engine_matches_forward(model, FastEngine(model, threads=1), 2048)


VARIANTS = [dict(), dict(norm="layer_norm"), dict(ssm_mode="diag", ssm_init="diag-lin"), dict(final_act="id"),
            dict(pool=[2, 4], expand=3), dict(dt_transform="exp"), dict(pool=[4])]


@pytest.mark.parametrize("overrides", VARIANTS)
@pytest.mark.parametrize("engine_class", [FastEngine, GraphEngine])
def test_engines_equal_forward_for_model_variants(overrides, engine_class):
    model = small_model(**overrides)
    # batch 3: the stream-pair loops and their odd remainder; 128 samples = 8 periods of the 16x pooling
    assert_engine_matches_forward(model, engine_class(model), 128 if engine_class is GraphEngine else 256, batch_size=3)


@pytest.mark.parametrize("overrides", VARIANTS)
def test_compact_ssm_step_with_fp32_weights_equals_forward_for_model_variants(overrides, monkeypatch):
    """The compact S4 step alone (fp32 linear weights, so nothing else is rounded) against the model."""
    monkeypatch.setitem(numba_network._SSM_FORM_OF, "fp32", numba_network._SSM_COMPACT)
    model = small_model(**overrides)
    engine = FastEngine(model, precision="fp32")
    assert "fp32 linear weights and compact S4 step" in engine.describe()
    assert_engine_matches_forward(model, engine, 256, batch_size=3)


def test_the_two_s4_forms_continue_each_others_memory(monkeypatch):
    """Each form reads the correction s = Re(M.x) the other carried in the memory ('auto' switches forms
    on one state): folded then compact, and compact then folded, give the logits of forward."""
    model = small_model()
    folded = FastEngine(model, precision="fp32")
    monkeypatch.setitem(numba_network._SSM_FORM_OF, "fp32", numba_network._SSM_COMPACT)
    compact = FastEngine(model, precision="fp32")
    tokens = torch.randint(0, model.config.n_classes, (2, 96))
    with torch.no_grad():
        expected = model(tokens).numpy()
    forced = np.roll(tokens.numpy(), -1, axis=1)
    keys = stream_keys(0, range(2))
    for first, then in ((folded, compact), (compact, folded)):
        state = first.new_state(2)
        head = first.run(state, tokens[:, 0].numpy(), forced[:, :37], keys, 0, SamplingSettings(), keep_logits=True)
        tail = then.run(state, forced[:, 36], forced[:, 37:], keys, 37, SamplingSettings(), keep_logits=True)
        error = np.abs(np.concatenate([head.logits, tail.logits], axis=1) - expected).max()
        assert error <= 1e-4, (first.describe(), error)


SAMPLINGS = [SamplingSettings(), SamplingSettings(temperature=0.8, top_k=20, top_p=0.9),
             SamplingSettings(temperature=1.3, top_p=0.5), SamplingSettings(temperature=0), SamplingSettings(top_k=1)]


@pytest.mark.parametrize("sampling", SAMPLINGS)
def test_backends_draw_the_tokens_of_the_plain_step_path(sampling):
    model = small_model()
    keys = stream_keys(11, range(3))
    backends = ("step", "numba", "graph") if sampling in SAMPLINGS[:2] else ("step", "numba")
    runs = {}
    for backend in backends:
        engine = make_engine(model, backend, precision="fp32")
        runs[backend] = engine.run(engine.new_state(3), np.full(3, 128), np.full((3, 160), -1), keys, 0, sampling)
    reference = runs["step"]
    for backend in backends[1:]:
        assert np.array_equal(runs[backend].tokens, reference.tokens), backend
        assert np.allclose(runs[backend].logp_model, reference.logp_model, atol=1e-4), backend
        assert np.allclose(runs[backend].logp_sample, reference.logp_sample, atol=1e-4), backend


def test_fast_sampler_equals_the_reference_sampler_on_random_logits():
    generator = np.random.default_rng(0)
    logits = (generator.standard_normal((300, 256)) * generator.uniform(0.1, 8, (300, 1))).astype(np.float32)
    logits[:4, :8] = logits[:4, 8:16]  # exact ties
    u = uniforms(stream_keys(3, range(300)), 0, 1)[:, 0]
    shifted, weights = np.empty(256), np.empty(256)
    exponents, candidates = np.empty(256, np.int64), np.empty(256, np.int64)
    for settings in SAMPLINGS + [SamplingSettings(top_p=0.01), SamplingSettings(temperature=0.5, top_k=256)]:
        reference = sample(torch.from_numpy(logits), settings, torch.from_numpy(u))
        for row in range(len(logits)):
            token, logp_model, logp_sample = sample_one(logits[row], 256, settings.temperature, settings.top_k,
                                                        settings.top_p, u[row], shifted, weights, exponents,
                                                        candidates)
            assert token == reference.tokens[row].item(), (settings, row)
            assert abs(logp_model - reference.logp_model[row].item()) < 1e-9
            assert abs(logp_sample - reference.logp_sample[row].item()) < 1e-9


def test_results_do_not_depend_on_threads_or_chunking():
    model = small_model()
    keys = stream_keys(5, range(5))
    whole = FastEngine(model, threads=1)
    expected = whole.run(whole.new_state(5), np.full(5, 128), np.full((5, 200), -1), keys, 0, SamplingSettings())
    split = FastEngine(model, threads=2)
    state = split.new_state(5)
    first, pieces = np.full(5, 128), []
    for start in (0, 37, 160):
        size = {0: 37, 37: 123, 160: 40}[start]
        out = split.run(state, first, np.full((5, size), -1), keys, start, SamplingSettings())
        pieces.append(out.tokens)
        first = out.tokens[:, -1]
    assert np.array_equal(np.concatenate(pieces, 1), expected.tokens)


def test_select_continues_each_chosen_stream():
    model = small_model()
    engine = FastEngine(model, threads=1)
    keys = stream_keys(0, range(2))
    state = engine.new_state(2)
    prompt = np.random.default_rng(1).integers(0, 256, (2, 50))
    engine.run(state, np.full(2, 128), prompt, keys, 0, SamplingSettings())
    both = engine.run(engine.select(state, [0, 1]), prompt[:, -1], np.full((2, 40), -1), keys, 0, SamplingSettings())
    picked = engine.select(state, [1, 1, 0])
    again = engine.run(picked, prompt[[1, 1, 0], -1], np.full((3, 40), -1), keys[[1, 1, 0]], 0, SamplingSettings())
    assert np.array_equal(again.tokens, both.tokens[[1, 1, 0]])


def test_step_engine_select_matches_fast_engine_select():
    model = small_model()
    keys = stream_keys(2, range(2))
    prompt = np.random.default_rng(2).integers(0, 256, (2, 21))
    results = []
    for engine in (StepEngine(model), FastEngine(model)):
        state = engine.new_state(2)
        engine.run(state, np.full(2, 128), prompt, keys, 0, SamplingSettings())
        state = engine.select(state, [1, 0, 1])
        results.append(engine.run(state, prompt[[1, 0, 1], -1], np.full((3, 30), -1), keys[[0, 1, 0]], 0,
                                  SamplingSettings()).tokens)
    assert np.array_equal(*results)


@pytest.mark.parametrize("backend", ["step", "numba", "graph"])
def test_streams_joined_between_runs_continue_as_one_batch(backend):
    """join: streams primed apart (one, then two) and joined continue exactly as if batched from the start."""
    model = small_model()
    engine = make_engine(model, backend)
    assert isinstance(engine, Engine) and engine.describe().startswith(f"backend {backend}")
    keys = stream_keys(4, range(3))
    prompt = np.random.default_rng(4).integers(0, 256, (3, 19))
    together = engine.new_state(3)
    engine.run(together, np.full(3, 128), prompt, keys, 0, SamplingSettings())
    expected = engine.run(together, prompt[:, -1], np.full((3, 37), -1), keys, 0, SamplingSettings())
    first, second = engine.new_state(1), engine.new_state(2)
    engine.run(first, np.full(1, 128), prompt[:1], keys[:1], 0, SamplingSettings())
    engine.run(second, np.full(2, 128), prompt[1:], keys[1:], 0, SamplingSettings())
    joined = engine.join([first, second])
    assert (joined.batch_size, joined.position) == (3, 19)
    out = engine.run(joined, prompt[:, -1], np.full((3, 37), -1), keys, 0, SamplingSettings())
    assert np.array_equal(out.tokens, expected.tokens)
    assert np.allclose(out.logp_model, expected.logp_model, atol=1e-6)


def test_join_refuses_streams_at_different_phases():
    model = small_model()
    engine = make_engine(model, "numba")
    early, late = engine.new_state(1), engine.new_state(1)
    engine.run(late, np.full(1, 128), np.full((1, 5), 7), stream_keys(0, [0]), 0, SamplingSettings())
    with pytest.raises(ValueError, match="phases \\[0, 5\\]"):
        engine.join([early, late])
    late_again = engine.new_state(1)
    engine.run(late_again, np.full(1, 128), np.full((1, 16), 7), stream_keys(0, [0]), 0, SamplingSettings())
    assert engine.join([late_again, early]).position == 16  # same phase: the batch keeps the first's position


def test_ssm_matrices_reproduce_the_dplr_step():
    """The folded step x' = F x - G_p Re(M.x) + G u, y = Re(C.x') against DPLRKernel.step (complex128)."""
    kernel = DPLRKernel(4, 16, 256)
    perturb_(kernel)
    params = {k: v.to(torch.complex128) for k, v in kernel.step_parameters().items()}
    matrices = ssm_matrices(kernel)
    generator = torch.Generator().manual_seed(0)
    memory = torch.randn(2, 4, 8, dtype=torch.complex128, generator=generator)
    u = torch.randn(2, 4, dtype=torch.float64, generator=generator)
    y_expected, memory_expected = DPLRKernel.step(u, memory, params)
    M, F, G, G_p, C = (torch.from_numpy(matrices[name]) for name in ("M", "F", "G", "G_p", "C"))
    s = (M * memory).sum(-1, keepdim=True).real
    folded = F * memory - G_p * s + G * u.unsqueeze(-1)
    assert torch.allclose(folded, memory_expected, atol=1e-5)
    assert torch.allclose((C * folded).sum(-1).real, y_expected, atol=1e-5)


KERNELS = {"dplr": lambda: DPLRKernel(4, 16, 256), "diagonal": lambda: DiagonalKernel(4, 16, init="diag-lin")}


@pytest.mark.parametrize("kind", KERNELS)
def test_compact_ssm_rebuilds_the_folded_matrices_in_float64(kind):
    """F + sigma times per-n and per-h constants gives ssm_matrices' G_p, G and M of the same kernel in float64."""
    kernel = perturb_(KERNELS[kind]())
    compact = compact_ssm(kernel)
    folded = ssm_matrices(copy.deepcopy(kernel).double())
    F, P, Bv = compact["F"], compact["P"], compact["Bv"]
    alpha, b, gamma = (compact[name][:, None] for name in ("alpha", "b", "gamma"))
    near = F + compact["sigma"]
    rebuilt = dict(F=F, G_p=alpha * near * P, G=alpha * near * (Bv - b * P), M=gamma * near * P.conj())
    for name, value in rebuilt.items():
        assert np.abs(value - folded[name]).max() <= 1e-12, name
    assert np.abs(folded["G"]).min() > 1e-4 and (np.abs(folded["M"]).min() > 1e-4) == compact["rank1"]
    assert compact["rank1"] == folded["rank1"] == (kind == "dplr")


@pytest.mark.parametrize("kind", KERNELS)
def test_compact_ssm_step_is_the_kernel_step(kind):
    """t = gamma Re sum (F + sigma) Q x + b u, x' = F x + alpha (F + sigma) (Bv u - P t), y = Re(C.x') against
    DPLRKernel.step / DiagonalKernel.step in complex128 (C as the step's)."""
    kernel = perturb_(KERNELS[kind]())
    reference = copy.deepcopy(kernel).double()
    params = reference.step_parameters()
    generator = torch.Generator().manual_seed(0)
    memory = torch.randn(2, 4, 8, dtype=torch.complex128, generator=generator)
    u = torch.randn(2, 4, dtype=torch.float64, generator=generator)
    y_expected, memory_expected = type(kernel).step(u, memory, params)
    compact = {name: torch.as_tensor(value) for name, value in compact_ssm(kernel).items()}
    near = compact["F"] + compact["sigma"]                                              # (H, N/2)
    t = compact["gamma"] * (near * compact["P"].conj() * memory).sum(-1).real + compact["b"] * u   # (B, H)
    memory_compact = compact["F"] * memory + compact["alpha"][:, None] * near * (
        compact["Bv"] * u.unsqueeze(-1) - compact["P"] * t.unsqueeze(-1))
    assert torch.allclose(memory_compact, memory_expected, rtol=0, atol=1e-12)
    assert torch.allclose((params["C2"] * memory_compact).sum(-1).real, y_expected, rtol=0, atol=1e-12)


def test_bytes_per_sample_count_the_s4_form_each_precision_reads(monkeypatch):
    """Per S4 block at its stage's rate: folded 10 rows per (n, h); compact 4 rows per (n, h), 4 constants per n,
    3 per h and sigma (float32 each)."""
    plan = network_plan(small_model())
    compact = flatten(plan, "bf16")
    monkeypatch.setitem(numba_network._SSM_FORM_OF, "bf16", numba_network._SSM_FOLDED)
    folded = flatten(plan, "bf16")
    assert (compact.ssm_form, folded.ssm_form, flatten(plan, "fp32").ssm_form) == ("compact", "folded", "folded")
    rate, saved = 1.0, 0.0
    for level in plan.levels:
        for block in level.blocks:
            if isinstance(block, S4Plan):
                n2, h = block.half_state, block.channels
                saved += rate * 4 * (10 * n2 * h - (4 * n2 * h + 4 * n2 + 3 * h + 1))
        rate /= max(level.stride, 1)
    assert folded.bytes_per_sample - compact.bytes_per_sample == pytest.approx(saved)


def test_vectorised_nonlinearities_match_torch():
    x = torch.linspace(-30, 30, 200001)
    assert (torch.from_numpy(gelu_array(x.numpy())) - torch.nn.functional.gelu(x.double())).abs().max() < 3e-7
    assert (torch.from_numpy(sigmoid_array(x.numpy())) - torch.sigmoid(x.double())).abs().max() < 1e-7
    values = -np.linspace(0, 700, 100001)
    out, exponents = np.empty_like(values), np.empty(len(values), np.int64)
    exp_nonpositive(values, out, exponents, len(values))
    assert np.max(np.abs(out / np.exp(values) - 1)) < 1e-13


def test_plan_names_every_block_and_state_is_the_recurrent_state_size():
    model = small_model()
    plan = network_plan(model)
    # levels outermost first, the centre last; each holds its stage's blocks in the model's order
    assert [level.stride for level in plan.levels] == [4, 4, 0]
    assert [len(level.blocks) for level in plan.levels] == [2, 2, 2]
    assert all(isinstance(level.blocks[0], S4Plan) for level in plan.levels)
    # the op table is the model's step program, phase by phase
    for phase in range(16):
        ops = model.backbone.step_program(phase)
        assert plan.program_lengths[phase] == len(ops)
        assert plan.program[phase, :len(ops)].tolist() == [[STEP_OPS[op.kind], op.level, op.slot, op.completes]
                                                           for op in ops]
    # per S4 block 2 * H * N/2 floats of memory and H of its carried correction s = Re(M.x); per pooling
    # level two buffers of H * stride
    expected = sum((2 * b.layer.kernel.half_state + 1) * b.layer.kernel.channels
                   for b in model.backbone.stateful_blocks())
    expected += sum(2 * 16 * 2 ** level * 4 for level in range(2))
    assert FastEngine(model).state_size == expected


@pytest.mark.cuda
@pytest.mark.parametrize("preset", ["sashimi-2", "sashimi-8"])
def test_cuda_graph_engine_equals_forward_and_repeats_itself(preset):
    model = perturb_(build_model(preset, l_max=2048).eval()).cuda()
    engine = GraphEngine(model, "cuda")
    assert engine.use_graphs
    tokens = torch.randint(0, 256, (2, 2048))
    with torch.no_grad():
        expected = model(tokens.cuda()).cpu().numpy()
    assert np.abs(teacher_forced_logits(engine, tokens) - expected).max() <= 1e-3  # TF32 / reduction order
    keys = stream_keys(0, range(4))
    runs = [engine.run(engine.new_state(4), np.full(4, 128), np.full((4, 1000), -1), keys, 0, SamplingSettings(top_p=0.9))
            for _ in range(2)]
    assert np.array_equal(runs[0].tokens, runs[1].tokens)


@pytest.mark.cuda
@pytest.mark.parametrize("sampling", [SamplingSettings(temperature=0), SamplingSettings(top_p=0.9)])
def test_cuda_graph_replays_draw_the_tokens_of_the_eager_model_step(sampling):
    """The captured graphs replay `model.step` itself: the same tokens as the same step run eagerly on
    the same device, across a head that is not period-aligned, whole periods and a tail, and a join."""
    model = small_model().cuda()
    graphs, eager = GraphEngine(model, "cuda"), StepEngine(model, "cuda")
    assert graphs.use_graphs
    keys = stream_keys(9, range(3))
    prompt = np.random.default_rng(9).integers(0, 256, (3, 21))  # 21: the continuation starts mid-period
    runs = []
    for engine in (graphs, eager):
        parts = [engine.new_state(1), engine.new_state(2)]
        engine.run(parts[0], np.full(1, 128), prompt[:1], keys[:1], 0, sampling)
        engine.run(parts[1], np.full(2, 128), prompt[1:], keys[1:], 0, sampling)
        state = engine.join(parts)
        runs.append(engine.run(state, prompt[:, -1], np.full((3, 203), -1), keys, 0, sampling))
    assert graphs.capture_error is None
    assert np.array_equal(runs[0].tokens, runs[1].tokens)
    assert np.allclose(runs[0].logp_model, runs[1].logp_model, atol=1e-4)


def test_fast_engine_executes_the_models_step_program_not_an_order_of_its_own(monkeypatch):
    """A model whose step program skips the centre stage: forward no longer agrees, but the fast engine
    still gives the plain step's logits, because both execute `step_program`."""
    model = small_model()
    full = model.backbone.step_program
    monkeypatch.setattr(model.backbone, "step_program",
                        lambda phase: [op for op in full(phase) if (op.kind, op.level) != ("stage", 2)])
    tokens = torch.randint(0, model.config.n_classes, (2, 64))
    step = teacher_forced_logits(StepEngine(model, torch.device("cpu")), tokens)
    with torch.no_grad():
        assert np.abs(step - model(tokens).numpy()).max() > 1e-2   # the program really changed the network
    assert np.abs(teacher_forced_logits(FastEngine(model, threads=1), tokens) - step).max() < 1e-4
