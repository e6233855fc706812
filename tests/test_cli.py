"""The `study` command: dispatch, info output, and clear errors for unknown commands and keys."""

import re

import pytest

from study.cli import COMMANDS, main


def test_info_prints_the_architecture_and_exact_parameter_count(capsys):
    assert main(["info", "model=sashimi-8"]) == 0
    output = capsys.readouterr().out
    assert re.search(r"total parameters +4,751,072\n", output)
    assert "centre stage (H=256, L=8192)" in output


def test_info_with_paper_era_output_layer(capsys):
    assert main(["info", "model=sashimi-2", "model.final_act=id"]) == 0
    assert "1,287,192" in capsys.readouterr().out


def test_unknown_command_and_unknown_key_are_clear_errors(capsys):
    assert main(["bogus"]) == 2
    assert "unknown command 'bogus'" in capsys.readouterr().err
    assert main(["info", "model.bogus=1"]) == 2
    assert "Key 'bogus' not in 'ModelConfig'" in capsys.readouterr().err


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    output = capsys.readouterr().out
    for name in COMMANDS:
        assert name in output


def test_bench_without_a_benchmark_name_prints_usage(capsys):
    assert main(["bench"]) == 2
    assert "model|data|train|generate|kernel" in capsys.readouterr().err
