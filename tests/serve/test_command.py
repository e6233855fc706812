"""`study serve` and `study bench serve` from the command line: the settings they refuse, and a real server
process that loads the checkpoint, warms up, prints its URL and answers."""

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from study import cli

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    """`study serve ARGV` as the console runs it (the CLI prints errors and sets the exit code)."""
    return cli.main(["serve", *argv])


def test_refuses_a_public_bind_without_token_and_unknown_keys(checkpoint, capsys):
    assert main([f"checkpoint={checkpoint}", "host=0.0.0.0"]) == 2
    assert "token=SECRET" in capsys.readouterr().err
    assert main([f"checkpoint={checkpoint}", "colour=blue"]) == 2
    assert "colour" in capsys.readouterr().err
    assert main(["checkpoint=/nowhere/best.pt"]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert cli.main(["bench", "serve", "clients=0"]) == 2
    assert "clients" in capsys.readouterr().err


@pytest.mark.slow
def test_serve_command_prints_its_url_and_answers(checkpoint, tmp_path):
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "study.cli", "serve", f"checkpoint={checkpoint}", f"port={port}",
               "backend=numba", "threads=1", "max_streams=2"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        assert f"http://127.0.0.1:{port}/" in lines[-1], "".join(lines)
        assert any("engine warm" in line for line in lines)
        config = httpx.get(f"http://127.0.0.1:{port}/config", timeout=10).json()
        assert config["max_streams"] == 2 and config["token_required"] is False
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode is not None
