"""`study report`: execute the report notebook template for the chosen studies with papermill and
export it to HTML with nbconvert, under reports/out/<name>/.

It builds from whatever results exist (absent parts appear as 'missing: ...'); it never trains,
generates or modifies a run, and it registers its own Jupyter kernel for this interpreter if needed.
"""

import contextlib
import hashlib
import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import analysis
from analysis.export import to_markdown
from analysis.results import default_runs_dir, load_results
from analysis.tables import workshop_table
from study.command_args import parse_key_values
from study.errors import ConfigError
from study.files import write_atomic

PROJECT_ROOT = Path(analysis.__file__).resolve().parents[1]
TEMPLATE = PROJECT_ROOT / "reports" / "study_report.ipynb"
DEFAULT_OUT = Path("reports") / "out"
KERNEL_PREFIX = "sashimi-study"


class ReportError(RuntimeError):
    """The report could not be built; the message says why and what to do."""


@dataclass
class ReportPaths:
    """Where a built report lies: the executed notebook, its HTML, and the exported tables and figures."""
    directory: Path
    notebook: Path
    html: Path


def kernel_name() -> str:
    """A kernel name unique to this interpreter, so another environment's kernel can never shadow it."""
    return f"{KERNEL_PREFIX}-{hashlib.sha1(sys.executable.encode()).hexdigest()[:8]}"


def kernel_spec() -> dict:
    # log level ERROR: ipykernel warns on every start that a local kernel talks over TCP without encryption
    return {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                     "--IPKernelApp.log_level=ERROR"],
            "display_name": f"Python ({KERNEL_PREFIX}, {Path(sys.prefix).name})", "language": "python",
            "metadata": {"debugger": True}}


def ensure_kernel() -> str:
    """Register a Jupyter kernel running this very interpreter (in sys.prefix, else per user); its name."""
    try:
        import ipykernel  # noqa: F401
    except ImportError as error:
        raise ReportError("executing the report needs ipykernel in this environment: `make install` "
                          "(or pip install 'ipykernel==7.4.0')") from error
    from jupyter_core.paths import jupyter_data_dir

    name, spec = kernel_name(), kernel_spec()
    candidates = [Path(sys.prefix) / "share" / "jupyter" / "kernels" / name, Path(jupyter_data_dir()) / "kernels" / name]
    for folder in candidates:
        path = folder / "kernel.json"
        try:
            if path.is_file() and json.loads(path.read_text()).get("argv") == spec["argv"]:
                return name
            folder.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(spec, indent=1).encode())
            return name
        except (OSError, json.JSONDecodeError):
            continue
    raise ReportError(f"could not register a Jupyter kernel in {candidates[0]} or {candidates[1]}: neither is "
                      f"writable; run `{sys.executable} -m ipykernel install --sys-prefix --name {name}`")


@contextlib.contextmanager
def project_on_kernel_path():
    """Put this project first on the kernel's PYTHONPATH, so the notebook imports the same `analysis`."""
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *([previous] if previous else [])])
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


def export_html(notebook_path: Path, html_path: Path) -> Path:
    """The executed notebook as one self-contained HTML file (code hidden; images and audio embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(notebook_path, as_version=4))
    html_path.write_text(body, encoding="utf-8")
    return html_path


def build_report(runs_dir: Path, studies: list[str] | None = None, name: str | None = None,
                 examples_dirs: list[Path] | None = None, out_root: Path = DEFAULT_OUT,
                 template: Path = TEMPLATE, cell_timeout_seconds: int = 1800) -> ReportPaths:
    """Execute `template` into out_root/<name>/report.ipynb and export report.html beside it."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    template = Path(template)
    if not template.is_file():
        raise ReportError(f"report template {template} not found; restore it with `git checkout -- {template}` "
                          "or pass template=PATH")
    name = name or ("-".join(studies) if studies else "all")
    directory = Path(out_root) / name
    directory.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(directory=directory, notebook=directory / "report.ipynb", html=directory / "report.html")
    parameters = {"runs_dir": str(Path(runs_dir).resolve()), "studies": list(studies or []),
                  "examples_dirs": [str(Path(folder).resolve()) for folder in examples_dirs or []],
                  "output_dir": str(directory.resolve()), "report_name": name}
    kernel = ensure_kernel()
    logging.getLogger("papermill").setLevel(logging.WARNING)  # not its 'Executing notebook ...' lines
    failure = None
    with project_on_kernel_path():
        try:
            papermill.execute_notebook(str(template), str(paths.notebook), parameters=parameters, kernel_name=kernel,
                                       cwd=str(Path.cwd()), progress_bar=False, log_output=False,
                                       execution_timeout=cell_timeout_seconds, request_save_on_cell_execute=False)
        except PapermillExecutionError as error:
            failure = error
    export_html(paths.notebook, paths.html)
    if failure is not None:
        raise ReportError(f"report cell {failure.exec_count} raised {failure.ename}: {failure.evalue}; the partial "
                          f"report is at {paths.html}. Call the failing analysis.sections function directly to "
                          "debug it (every cell calls one).")
    return paths


def summary_markdown(runs_dir: Path, studies: list[str] | None = None) -> str:
    """The workshop's table of the studies as Markdown with its notes (for terminals and logs)."""
    results = load_results(Path(runs_dir), studies)
    table = workshop_table(results)
    lines = [str(missing) for missing in results.missing]
    if table.empty:
        lines.append("missing: results of a replication study (run `make replicate` and/or `make ablation`)")
        return "\n".join(lines) + "\n"
    return "\n".join(lines) + ("\n" if lines else "") + to_markdown(table.formatted(), table.notes)


def _list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


@dataclass
class ReportSettings:
    """Every key of `study report key=value ...`."""
    studies: str = ""                       # comma-separated study names; default: every study under runs
    runs: str = field(default_factory=lambda: str(default_runs_dir()))  # folder holding the studies ($STUDY_RUNS)
    name: str = ""                          # output goes to <out>/<name>/; default: the studies, or 'all'
    examples: str = ""                      # comma-separated folders of generated WAVs; default: runs/<study>/examples
    out: str = str(DEFAULT_OUT)             # output root
    template: str = str(TEMPLATE)           # notebook template to execute
    cell_timeout: int = 1800                # seconds any one cell may run
    print_table: bool = False               # also print the metrics table as Markdown

    def __post_init__(self):
        if self.cell_timeout <= 0:
            raise ConfigError(f"study report: cell_timeout={self.cell_timeout} must be positive (seconds)")


def main(argv: list[str]) -> int:
    settings = parse_key_values(ReportSettings, argv, "report", "study report studies=replicate,ablation name=paper")
    logging.getLogger("papermill").setLevel(logging.WARNING)
    studies = _list(settings.studies) or None
    runs = Path(settings.runs)
    examples = [Path(folder) for folder in _list(settings.examples)]
    try:
        paths = build_report(runs, studies, settings.name or None, examples, Path(settings.out),
                             Path(settings.template), settings.cell_timeout)
    except ReportError as error:
        print(f"study report: {error}", file=sys.stderr)
        return 1
    if settings.print_table:
        print(summary_markdown(runs, studies))
    print(f"notebook: {paths.notebook}")
    print(f"html: {paths.html}")
    return 0
