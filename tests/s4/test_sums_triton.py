"""The Triton Cauchy and Vandermonde kernels against the PyTorch reference, and the backend dispatch.

CPU tests run the kernels in triton's interpreter (TRITON_INTERPRET=1, set by `make test`) at small
sizes; tests marked `cuda` compile them for a GPU at model sizes (`make gpu-check`).
"""

import logging
import math
import os
import subprocess
import sys

import pytest
import torch

from study.s4.sums import reference as kernel_ops

TOLERANCE = 1e-4


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|."""
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.fixture
def triton_ops():
    """study.s4.sums.triton_gpu, failing loudly when its kernels can run neither compiled nor interpreted."""
    from study.s4.sums import triton_gpu as kernel_ops_triton

    if not kernel_ops_triton.INTERPRETED:
        pytest.fail("CPU tests of the Triton kernels need TRITON_INTERPRET=1 set before Python starts (make test does)")
    return kernel_ops_triton


@pytest.fixture
def compiled_triton_ops():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: run `make gpu-check` on a GPU machine")
    from study.s4.sums import triton_gpu as kernel_ops_triton

    if kernel_ops_triton.INTERPRETED:
        pytest.fail("CUDA tests compile the kernels: unset TRITON_INTERPRET (make gpu-check does not set it)")
    return kernel_ops_triton


def small_blocks(ops, monkeypatch, block: int, target_programs: int) -> None:
    """Shrink the kernels' blocks so small sizes still cover several blocks, splits and chunks."""
    monkeypatch.setattr(ops, "CAUCHY_BLOCK", block)
    monkeypatch.setattr(ops, "VANDERMONDE_BLOCK", block)
    monkeypatch.setattr(ops, "TARGET_PROGRAMS", target_programs)


def diagonal_states(heads: int, state_half: int, generator: torch.Generator, dt_min: float = 1e-3,
                    dt_max: float = 1e-1) -> torch.Tensor:
    """dt * (-1/2 + i pi n) with log-uniform dt per head and a small perturbation: (H, N) complex64."""
    log_dt = torch.rand(heads, 1, generator=generator, dtype=torch.float64)
    dt = torch.exp(math.log(dt_min) + log_dt * (math.log(dt_max) - math.log(dt_min)))
    n = torch.arange(state_half, dtype=torch.float64)
    noise = 0.1 * torch.randn(heads, state_half, generator=generator, dtype=torch.complex128)
    return (dt * (-0.5 + 1j * math.pi * n + noise)).to(torch.complex64)


def bilinear_nodes(length: int) -> torch.Tensor:
    """z_k = 2 (1 - omega_k) / (1 + omega_k), omega_k = exp(-2 pi i k / L), k <= L // 2: (L//2 + 1,) complex64.

    For even L the last node is huge (omega = -1 up to rounding), as in the model.
    """
    omega = torch.exp(-2j * math.pi * torch.arange(length // 2 + 1, dtype=torch.float64) / length)
    return (2 * (1 - omega) / (1 + omega)).to(torch.complex64)


def cauchy_inputs(leading, heads, state_half, length, seed=0, device="cpu"):
    generator = torch.Generator().manual_seed(seed)
    v = torch.randn(*leading, heads, state_half, generator=generator, dtype=torch.complex64)
    w = diagonal_states(heads, state_half, generator)
    z = bilinear_nodes(length)
    grad = torch.randn(*leading, heads, z.shape[0], generator=generator, dtype=torch.complex64)
    return v.to(device), z.to(device), w.to(device), grad.to(device)


def vandermonde_inputs(leading, heads, state_half, length, seed=0, device="cpu", dt_min=1e-3, dt_max=1e-1):
    generator = torch.Generator().manual_seed(seed)
    c = torch.randn(*leading, heads, state_half, generator=generator, dtype=torch.complex64)
    x = diagonal_states(heads, state_half, generator, dt_min, dt_max)
    grad = torch.randn(*leading, heads, length, generator=generator)
    return c.to(device), x.to(device), grad.to(device)


def value_and_grads(function, inputs, grad, *rest):
    """function(*inputs, *rest) and the gradients of <output, grad> for each input."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    out = function(*leaves, *rest)
    return out.detach(), torch.autograd.grad(out, leaves, grad)


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    error = relative_error(actual, expected)
    assert error <= TOLERANCE, f"{name}: relative error {error:.2e} > {TOLERANCE:.0e}"
    return error


def check_cauchy(ops, leading, heads, state_half, length, device="cpu", seed=0):
    v, z, w, grad = cauchy_inputs(leading, heads, state_half, length, seed, device)
    out, (grad_v, grad_w) = value_and_grads(lambda v, w: ops.cauchy_conj_triton(v, z, w), (v, w), grad)
    ref, (ref_v, ref_w) = value_and_grads(lambda v, w: kernel_ops.cauchy_conj_torch(v, z, w), (v, w), grad)
    return {name: assert_close(name, a, b) for name, a, b in
            (("value", out, ref), ("grad_v", grad_v, ref_v), ("grad_w", grad_w, ref_w))}


def check_vandermonde(ops, leading, heads, state_half, length, device="cpu", seed=0, **dt_range):
    c, x, grad = vandermonde_inputs(leading, heads, state_half, length, seed, device, **dt_range)
    out, (grad_c, grad_x) = value_and_grads(ops.vandermonde_conj_triton, (c, x), grad, length)
    ref, (ref_c, ref_x) = value_and_grads(kernel_ops.vandermonde_conj_torch, (c, x), grad, length)
    return {name: assert_close(name, a, b) for name, a, b in
            (("value", out, ref), ("grad_c", grad_c, ref_c), ("grad_x", grad_x, ref_x))}


# (leading dims, H, N, L, block, target programs): K = L//2 + 1 is rarely a multiple of the block;
# target programs 1 forces one split with several chunks, 4 several splits; 10 rows make two row groups.
CAUCHY_CASES = [
    ((2, 2), 3, 4, 30, 8, 4),  # K = 16, a multiple of the block; even L: a huge last node
    ((2, 2), 2, 8, 50, 16, 1),  # K = 26
    ((), 3, 5, 37, 8, 4),  # odd L, no leading dims, N not a power of two
    ((10,), 1, 2, 20, 8, 4),  # two row groups
]


@pytest.mark.parametrize("leading, heads, state_half, length, block, target", CAUCHY_CASES)
def test_cauchy_matches_torch(triton_ops, monkeypatch, leading, heads, state_half, length, block, target):
    small_blocks(triton_ops, monkeypatch, block, target)
    check_cauchy(triton_ops, leading, heads, state_half, length)


VANDERMONDE_CASES = [
    ((), 3, 4, 37, 16, 4),
    ((2,), 2, 8, 100, 32, 1),
    ((1,), 2, 4, 64, 16, 4),  # L a multiple of the block
    ((10,), 2, 3, 50, 16, 4),  # two row groups
]


@pytest.mark.parametrize("leading, heads, state_half, length, block, target", VANDERMONDE_CASES)
def test_vandermonde_matches_torch(triton_ops, monkeypatch, leading, heads, state_half, length, block, target):
    small_blocks(triton_ops, monkeypatch, block, target)
    check_vandermonde(triton_ops, leading, heads, state_half, length)


def test_vandermonde_long_length_matches_torch_and_float64(triton_ops, monkeypatch):
    """Phases Im(x) l of several hundred radians, amplitudes still ~1e-7 at the end (dt = 1e-3)."""
    small_blocks(triton_ops, monkeypatch, 1024, 64)
    length = 2**15 + 3
    check_vandermonde(triton_ops, (1,), 2, 4, length, dt_min=1e-3, dt_max=1e-3)
    c, x, _ = vandermonde_inputs((1,), 2, 4, length, dt_min=1e-3, dt_max=1e-3)
    exact = kernel_ops.vandermonde_conj_naive(c.to(torch.complex128), x.to(torch.complex128), length)
    assert relative_error(triton_ops.vandermonde_conj_triton(c, x, length).double(), exact) <= TOLERANCE


def test_non_contiguous_and_conjugated_inputs(triton_ops, monkeypatch):
    small_blocks(triton_ops, monkeypatch, 8, 4)
    v, z, w, _ = cauchy_inputs((2, 2), 3, 4, 30)
    v_strided = v.transpose(-1, -2).contiguous().transpose(-1, -2).conj()  # (.., H, N) view, lazy conj
    w_strided = torch.stack([w, w], -1)[..., 0]
    z_strided = torch.stack([z, z], -1)[:, 1]
    assert not (v_strided.is_contiguous() or w_strided.is_contiguous() or z_strided.is_contiguous())
    out = triton_ops.cauchy_conj_triton(v_strided, z_strided, w_strided)
    assert_close("cauchy value", out, kernel_ops.cauchy_conj_torch(v.conj().resolve_conj(), z, w))
    c, x, _ = vandermonde_inputs((2,), 3, 4, 40)
    out = triton_ops.vandermonde_conj_triton(c.transpose(-1, -2).contiguous().transpose(-1, -2), x.conj(), 40)
    assert_close("vandermonde value", out, kernel_ops.vandermonde_conj_torch(c, x.conj().resolve_conj(), 40))


def test_gradient_of_one_input_only(triton_ops, monkeypatch):
    small_blocks(triton_ops, monkeypatch, 8, 4)
    v, z, w, grad = cauchy_inputs((2, 2), 2, 4, 20)
    w_leaf = w.clone().requires_grad_()
    (grad_w,) = torch.autograd.grad(triton_ops.cauchy_conj_triton(v, z, w_leaf), w_leaf, grad)
    w_ref = w.clone().requires_grad_()
    (ref_w,) = torch.autograd.grad(kernel_ops.cauchy_conj_torch(v, z, w_ref), w_ref, grad)
    assert_close("grad_w", grad_w, ref_w)


def test_input_errors_name_the_fix(triton_ops, monkeypatch):
    v, z, w, _ = cauchy_inputs((2, 2), 2, 4, 20)
    with pytest.raises(TypeError, match="complex64.*kernel_backend=torch"):
        triton_ops.cauchy_conj_triton(v.to(torch.complex128), z, w)
    with pytest.raises(ValueError, match=r"v \(\.\.\., H, N\)"):
        triton_ops.cauchy_conj_triton(v[..., :3], z, w)
    with pytest.raises(ValueError, match="no gradient for the nodes z"):
        triton_ops.cauchy_conj_triton(v, z.clone().requires_grad_(), w)
    with pytest.raises(ValueError, match="no gradient for the nodes z"):
        kernel_ops.cauchy_conj_torch(v, z.clone().requires_grad_(), w)
    with pytest.raises(ValueError, match="length"):
        triton_ops.vandermonde_conj_triton(v, w, -1)
    monkeypatch.setattr(triton_ops, "INTERPRETED", False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1.*kernel_backend=torch"):
        triton_ops.vandermonde_conj_triton(v, w, 8)


def test_triton_on_cpu_without_interpreter_is_an_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="kernel_backend=triton cannot run.*TRITON_INTERPRET=1.*kernel_backend=torch"):
        kernel_ops.resolve_backend("triton", torch.device("cpu"))


@pytest.mark.parametrize("interpret", [None, "1"])
def test_auto_on_cpu_picks_the_fused_cpu_kernel(monkeypatch, interpret):
    if interpret is None:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    else:
        monkeypatch.setenv("TRITON_INTERPRET", interpret)
    assert kernel_ops.resolve_backend("auto", torch.device("cpu")) == "numba"
    assert kernel_ops.resolve_backend("torch", torch.device("cpu")) == "torch"


def test_unknown_backend_is_an_error():
    with pytest.raises(ValueError, match="kernel_backend='cuda'.*auto, torch, numba, triton"):
        kernel_ops.resolve_backend("cuda", torch.device("cpu"))


def test_backend_choice_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(kernel_ops, "_announced", set())
    with caplog.at_level(logging.INFO, logger=kernel_ops.__name__):
        for _ in range(3):
            kernel_ops.resolve_backend("auto", torch.device("cpu"))
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and messages[0].startswith("S4 kernel backend: numba (asked: auto"), messages


def test_dispatch_runs_the_backend_asked_for(triton_ops, monkeypatch):
    small_blocks(triton_ops, monkeypatch, 8, 4)
    v, z, w, _ = cauchy_inputs((2, 2), 2, 4, 20)
    assert kernel_ops.resolve_backend("triton", v.device) == "triton"
    assert torch.equal(kernel_ops.cauchy_conj(v, z, w, "triton"), triton_ops.cauchy_conj_triton(v, z, w))
    assert torch.equal(kernel_ops.cauchy_conj(v, z, w, "torch"), kernel_ops.cauchy_conj_torch(v, z, w))
    c, x, _ = vandermonde_inputs((), 2, 4, 20)
    assert torch.equal(kernel_ops.vandermonde_conj(c, x, 20, "triton"), triton_ops.vandermonde_conj_triton(c, x, 20))
    assert torch.equal(kernel_ops.vandermonde_conj(c, x, 20, "auto"), kernel_ops.vandermonde_conj_torch(c, x, 20))


# ---- compiled on a GPU, at model sizes ------------------------------------------------------------

MODEL_HEADS, MODEL_STATE_HALF = 256, 32


@pytest.mark.cuda
@pytest.mark.parametrize("length", [16384, 131072])
def test_cuda_cauchy_matches_torch_at_model_size(compiled_triton_ops, length):
    errors = check_cauchy(compiled_triton_ops, (2, 2), MODEL_HEADS, MODEL_STATE_HALF, length, device="cuda")
    print(f"cauchy L={length} relative errors: {errors}")


@pytest.mark.cuda
@pytest.mark.parametrize("length", [16384, 131072])
def test_cuda_vandermonde_matches_torch_at_model_size(compiled_triton_ops, length):
    errors = check_vandermonde(compiled_triton_ops, (2,), MODEL_HEADS, MODEL_STATE_HALF, length, device="cuda")
    print(f"vandermonde L={length} relative errors: {errors}")


@pytest.mark.cuda
def test_cuda_vandermonde_phase_accuracy_without_decay(compiled_triton_ops):
    """Undamped modes (Re x = 0) up to l = 131071: phases reach ~1e6 rad, so cos/sin must reduce exactly."""
    length = 131072
    c, x, grad = vandermonde_inputs((1,), 16, MODEL_STATE_HALF, length, device="cuda")
    x = torch.complex(torch.zeros_like(x.real), x.imag)
    out = compiled_triton_ops.vandermonde_conj_triton(c, x, length)
    assert_close("undamped value", out, kernel_ops.vandermonde_conj_torch(c, x, length))


@pytest.mark.cuda
def test_cuda_kernels_store_no_state_by_length_tensor(compiled_triton_ops):
    """Peak memory of forward + backward stays within a few outputs; an (H, N, K) tensor would be 8x one."""
    v, z, w, grad = cauchy_inputs((2, 2), MODEL_HEADS, MODEL_STATE_HALF, 131072, device="cuda")
    v.requires_grad_()
    w.requires_grad_()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    out = compiled_triton_ops.cauchy_conj_triton(v, z, w)
    out.backward(grad)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - baseline
    assert peak <= 2 * out.numel() * out.element_size(), f"peak {peak / 2**20:.0f} MiB for a {out.nbytes / 2**20:.0f} MiB output"


@pytest.mark.cuda
def test_cuda_kernels_are_deterministic(compiled_triton_ops):
    v, z, w, grad = cauchy_inputs((2, 2), MODEL_HEADS, MODEL_STATE_HALF, 16384, device="cuda")
    first = value_and_grads(lambda v, w: compiled_triton_ops.cauchy_conj_triton(v, z, w), (v, w), grad)
    second = value_and_grads(lambda v, w: compiled_triton_ops.cauchy_conj_triton(v, z, w), (v, w), grad)
    assert torch.equal(first[0], second[0]) and all(map(torch.equal, first[1], second[1]))


@pytest.mark.cuda
def test_cuda_auto_picks_triton(compiled_triton_ops):
    assert kernel_ops.resolve_backend("auto", torch.device("cuda")) == "triton"
    c, x, _ = vandermonde_inputs((), 8, MODEL_STATE_HALF, 1000, device="cuda")
    assert torch.equal(kernel_ops.vandermonde_conj(c, x, 1000, "auto"), compiled_triton_ops.vandermonde_conj_triton(c, x, 1000))


# ---- compiled for a GPU without one: code generation only -------------------------------------------

COMPILE_SCRIPT = """
import os, triton
from triton.backends.compiler import GPUTarget
from study.s4.sums import triton_gpu as ops
assert not ops.INTERPRETED
kernels = [
    (ops._cauchy_forward_kernel, 4, {"N": 32, "BLOCK_ROWS": 4, "BLOCK": ops.CAUCHY_BLOCK}),
    (ops._cauchy_backward_kernel, 4, {"N": 32, "CHUNKS": 16, "BLOCK_ROWS": 4, "BLOCK": ops.CAUCHY_BLOCK}),
    (ops._vandermonde_forward_kernel, 3, {"N": 32, "BLOCK_ROWS": 1, "BLOCK": ops.VANDERMONDE_BLOCK}),
    (ops._vandermonde_backward_kernel, 3, {"N": 32, "CHUNKS": 16, "BLOCK_ROWS": 1, "BLOCK": ops.VANDERMONDE_BLOCK}),
]
for kernel, pointers, constants in kernels:
    names = kernel.arg_names
    signature = {name: "*fp32" for name in names[:pointers]}
    signature.update({name: "i32" for name in names[pointers:] if name not in constants})
    signature.update({name: "constexpr" for name in constants})
    source = triton.compiler.ASTSource(fn=kernel, signature=signature, constexprs=constants)
    ptx = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": ops.NUM_WARPS}).asm["ptx"]
    assert "sin.approx" not in ptx and "cos.approx" not in ptx, kernel.__name__
print("compiled", len(kernels))
"""


def test_kernels_compile_for_an_h100_without_one(tmp_path):
    """The interpreter accepts code the compiler rejects: generate sm_90 code (no GPU needed), no approximate sin/cos."""
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", COMPILE_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "compiled 4" in result.stdout, result.stderr[-3000:]
