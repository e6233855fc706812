"""`study report` end to end: the executed notebook and its HTML, from the fixture and from nothing."""

import json
import re
import sys
from pathlib import Path

import nbformat

from analysis.report import ensure_kernel, kernel_spec
from analysis_fixture import default_trials, signature_of
from analysis.sampling_search import SearchSettings, resolve_checkpoint
from study.cli import main as study

CHROMIUM = Path("/usr/bin/chromium")



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
    assert html.count("<audio") == 4                       # prompt, real continuation, prompt + continuation, alone
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


def row_cells(html: str, table_after: str, row_header: str) -> list[str]:
    """The cells of the row headed `row_header` in the first table after the text `table_after`."""
    start = html.index(table_after)
    table = html[html.index("<table", start):html.index("</table>", start)]
    row = re.search(rf"<tr>\s*<th>{re.escape(row_header)}</th>(.*?)</tr>", table, re.S).group(1)
    return [re.sub(r"\s+", " ", cell).strip() for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]


def right_edges_at(html_path: Path, width: int) -> tuple[float, float]:
    """(right edge of the appendix's Trials table, width of the page) in Chromium at `width` pixels."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": 800})
            page.goto(html_path.as_uri())
            return page.evaluate("() => [document.querySelector('div.report-scroll').getBoundingClientRect().right,"
                                 " document.documentElement.clientWidth]")
        finally:
            browser.close()


def test_after_the_demo_report_and_search_find_its_runs_without_arguments(fixture, tmp_path, monkeypatch, capsys):
    """The fixture's runs/ stands for the demo's output: where the demo writes by default is where
    `study report` and the sampling search read by default, and the report shows it readably."""
    from study.demo import DEFAULT_RUNS
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STUDY_RUNS", raising=False)
    assert DEFAULT_RUNS.resolve() == fixture.runs_dir.resolve()
    settings = SearchSettings()
    seed_0 = next(trial for trial in default_trials() if trial.study == "replicate" and trial.seed == 0)  # lowest val bpb
    best = fixture.runs_dir / "replicate" / signature_of(seed_0) / "checkpoints" / "best.pt"
    assert resolve_checkpoint(settings.checkpoint, Path(settings.runs)).resolve() == best.resolve()
    assert study(["report"]) == 0
    html = (tmp_path / "reports" / "out" / "all" / "report.html").read_text()
    for study_name in ("replicate", "ablation", "grid-dropout"):
        assert f"<th>{study_name}</th>" in html, study_name
    # examples: the prompt boundary from the manifest, role labels, settings in short, no metadata dump
    assert 'alt="spectrogram of prompt00-sample00 (prompt + continuation), prompt ends at 0.25 s"' in html
    assert 'alt="spectrogram of prompt00-sample00 (continuation only)"' in html
    assert "temperature 0.9, top-p 0.95, seed 0, rank 1 of 1 · 0.50 s at 16000 Hz · prompt 0–0.25 s" in html
    assert "(continuations)" not in html and "sashimi-study/generation/1" not in html and "sum_nats" not in html
    # what ran: what each study varies, and seeds that do not read as a count of zero
    overview_columns = ["experiments", "scale", "data", "trials", "seeds", "varied"]
    ablation = dict(zip(overview_columns, row_cells(html, "What ran", "ablation")))
    assert ablation["varied"] == "model.n_layers (2, 8)" and ablation["seeds"] == "3 seeds: 0, 1, 2"
    assert dict(zip(overview_columns, row_cells(html, "What ran", "grid-dropout")))["varied"] == \
        "model.dropout (0.0, 0.1, 0.2)"
    assert dict(zip(overview_columns, row_cells(html, "What ran", "replicate")))["varied"] == "seed only"
    # metric rows: top-k accuracy by k
    metrics = html[html.index("Final metrics against"):]
    positions = [metrics.index(f"<th>final/test/accuracy@{k}</th>") for k in (3, 5, 10)]
    assert positions == sorted(positions)
    # the Trials table wraps its commands and scrolls rather than being cut off
    assert re.search(r'<div class="report-scroll"><table[^>]*report-wide[^>]*>\s*<thead>\s*<tr[^>]*>\s*<th>study</th>',
                     html)
    if CHROMIUM.exists():
        right, page = right_edges_at(tmp_path / "reports" / "out" / "all" / "report.html", 1400)
        assert right <= page
