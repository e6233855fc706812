"""`study bench kernel` on CPU: the table prints, settings are checked, the model part follows its API.

Timings are never asserted; the GPU figures come from `make gpu-check`.
"""

import dataclasses

import pytest
import torch

from study.bench import kernel as kernel_bench


def test_cpu_run_prints_the_torch_table(capsys):
    argv = ["heads=2", "lengths=64", "repeats=1", "warmup=0", "parts=kernel"]
    assert kernel_bench.main(argv) == 0
    out = capsys.readouterr().out
    assert "the Triton and GPU figures need a GPU" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("cauchy", "vandermonde"))]
    assert [(row[0], row[1], row[2], row[3]) for row in rows] == [
        ("cauchy", "2", "64", "torch"), ("vandermonde", "2", "64", "torch")]


@pytest.mark.parametrize("argv", [["heads"], ["speed=3"], ["backends=cuda"], ["lengths=long"], ["repeats=2,3"], ["parts=kernels"]])
def test_bad_settings_are_refused(argv, capsys):
    assert kernel_bench.main(argv) == 2
    assert "usage: study bench kernel" in capsys.readouterr().err


def test_model_part_follows_the_model_api():
    """A stand-in for study.sashimi: build_model(config) -> module mapping (B, L) tokens to (B, L, 256) logits."""

    @dataclasses.dataclass
    class Config:
        width: int = 8
        kernel_backend: str = "auto"

    built = []

    def build_model(config):
        built.append(config.kernel_backend)
        return torch.nn.Sequential(torch.nn.Embedding(256, config.width), torch.nn.Linear(config.width, 256))

    settings = kernel_bench.Settings(presets=("tiny",), precisions=("fp32", "bf16"), backends=("torch",), model_repeats=1)
    lines = kernel_bench.model_table(settings, torch.device("cpu"), {"tiny": Config()}, build_model, length=32)
    assert [line.split()[:3] for line in lines[2:]] == [["tiny", "fp32", "torch"], ["tiny", "bf16", "torch"]]
    assert built == ["torch", "torch"]
    with pytest.raises(ValueError, match="PRESETS has tiny"):
        kernel_bench.model_table(dataclasses.replace(settings, presets=("big",)), torch.device("cpu"),
                                 {"tiny": Config()}, build_model, length=32)


def test_with_backend_copies_dataclass_and_mapping_presets():
    @dataclasses.dataclass(frozen=True)
    class Config:
        kernel_backend: str = "auto"

    assert kernel_bench.with_backend(Config(), "triton") == Config("triton")
    preset = {"kernel_backend": "auto", "layers": 8}
    assert kernel_bench.with_backend(preset, "torch") == {"kernel_backend": "torch", "layers": 8}
    assert preset["kernel_backend"] == "auto"
