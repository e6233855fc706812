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
    code = study(["report", f"runs={fixture.runs_dir}", "name=fixture", f"out={out}"])
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
    code = study(["report", f"runs={tmp_path / 'runs'}", f"out={out}", "print_table=true"])
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


def test_a_failing_cell_gives_a_partial_report_and_says_where(tmp_path, capsys, monkeypatch):
    """Without a kernel: papermill is replaced by a stand-in that leaves a notebook and raises as it does."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    def failing_execution(template, output, **options):
        nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("sections.show(...)")]), output)
        raise PapermillExecutionError(3, 4, "sections.show(...)", "ValueError", "boom", [])

    monkeypatch.setattr(papermill, "execute_notebook", failing_execution)
    code = study(["report", f"runs={tmp_path}", f"out={tmp_path / 'out'}"])
    error = capsys.readouterr().err
    assert code == 1 and "report cell 4 raised ValueError: boom" in error and "partial report" in error
    assert (tmp_path / "out" / "all" / "report.html").is_file()
