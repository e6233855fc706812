"""`study report` end to end: the executed notebook and its HTML, from the fixture and from nothing."""

import json
import sys
from pathlib import Path

import nbformat

from analysis.report import ensure_kernel, kernel_spec
from study.cli import main as study



def _errors(notebook_path) -> list[str]:
    notebook = nbformat.read(notebook_path, as_version=4)
    return [output.get("ename", "") for cell in notebook.cells if cell.cell_type == "code"
            for output in cell.outputs if output.output_type == "error"]


def test_report_from_the_fixture(fixture, tmp_path, capsys):
    out = tmp_path / "out"
    code = study(["report", "--runs", str(fixture.runs_dir), "--name", "fixture", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"notebook: {out / 'fixture' / 'report.ipynb'}" in printed and f"html: {out / 'fixture' / 'report.html'}" in printed
    assert _errors(out / "fixture" / "report.ipynb") == []
    html = (out / "fixture" / "report.html").read_text()
    for needle in ("2.1000 ± 0.1000", "3.2000 ± 0.1414", "2.0640", "+0.8060", "NOT a replication",
                   "repeat training material", "failed: training diverged", "<audio", "data:audio/x-wav;base64,",
                   "study train experiment=bigband-sashimi-2 scale=full seed=2", '<img alt="curves replicate"'):
        assert needle in html, needle
    assert html.count("<audio") == 2
    assert (out / "fixture" / "tables" / "workshop_table.tex").is_file()


def test_report_without_any_study_still_builds(tmp_path, capsys):
    out = tmp_path / "out"
    code = study(["report", "--runs", str(tmp_path / "runs"), "--out", str(out), "--print-table"])
    printed = capsys.readouterr().out
    assert code == 0 and "missing: results" in printed
    assert _errors(out / "all" / "report.ipynb") == []
    html = (out / "all" / "report.html").read_text()
    assert "does not exist" in html and "make replicate" in html and "generated examples" in html
    assert html.count("missing:") >= 7
    assert "2.0640" in html                                                    # published references shown


def test_the_kernel_runs_this_interpreter():
    name = ensure_kernel()
    from jupyter_client.kernelspec import KernelSpecManager
    spec = KernelSpecManager().get_kernel_spec(name)
    assert spec.argv[0] == sys.executable == kernel_spec()["argv"][0]
    assert json.loads((Path(spec.resource_dir) / "kernel.json").read_text())["language"] == "python"
