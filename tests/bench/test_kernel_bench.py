"""`study bench kernel` on CPU: the table prints, settings are checked, the model part runs the real
training step, and the sums it times agree across backends. Timings are never asserted."""

import pytest
import torch

from study.bench import kernel as kernel_bench
from study.s4.sums import reference as kernel_ops


def test_cpu_run_prints_the_torch_table(capsys):
    argv = ["heads=[2]", "lengths=[64]", "repeats=1", "warmup=0", "parts=[kernel]"]
    assert kernel_bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "the Triton and GPU figures need a GPU" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("cauchy", "vandermonde"))]
    assert [(row[0], row[1], row[2], row[3]) for row in rows] == [
        ("cauchy", "2", "64", "torch"), ("vandermonde", "2", "64", "torch")]


@pytest.mark.parametrize("argv", [["heads"], ["speed=3"], ["backends=[cuda]"], ["lengths=[long]"], ["repeats=[2,3]"],
                                  ["parts=[kernels]"], ["--heads", "2"]])
def test_bad_settings_are_refused(argv, capsys):
    assert kernel_bench.main(argv) == 2
    assert "usage: study bench kernel" in capsys.readouterr().err


def test_model_part_runs_the_real_train_step_of_each_preset():
    settings = kernel_bench.Settings(presets=["sashimi-2"], precisions=["fp32"], backends=["torch"], model_repeats=1)
    lines = kernel_bench.model_table(settings, torch.device("cpu"), length=64,
                                     overrides={"d_model": 8, "d_state": 4, "n_layers": 1})
    assert [line.split()[:3] for line in lines[2:]] == [["sashimi-2", "fp32", "torch"]]
    assert float(lines[2].split()[3]) > 0


@pytest.mark.parametrize("sum_name", kernel_bench.SUMS)
def test_timed_sums_are_the_s4_sums(sum_name):
    """The bench's inputs feed the sums the layers use: the torch backend equals the naive sum."""
    length = 32
    leaves, run, grad = kernel_bench.sum_inputs(sum_name, 3, 4, length, torch.device("cpu"))
    value = run("torch", *leaves)
    assert value.shape == grad.shape
    if sum_name == "cauchy":
        omega = torch.exp(-2j * torch.pi * torch.arange(length // 2 + 1, dtype=torch.float64) / length)
        z = (2 * (1 - omega) / (1 + omega)).to(torch.complex64)
        expected = kernel_ops.cauchy_conj_naive(leaves[0], z, leaves[1])
    else:
        expected = kernel_ops.vandermonde_conj_naive(leaves[0], leaves[1], length)
    assert torch.allclose(value, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
