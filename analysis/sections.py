"""The report's sections as lists of displayable objects (HTML, tables, images, audio, Missing), so the
notebook template stays one call per cell and every section is testable without running a notebook.

A section never raises for absent results: it returns a `Missing` saying what to run instead.
"""

import base64
import html
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from IPython.display import HTML, Audio, display

from analysis import plots
from analysis.checks import findings, findings_table
from analysis.examples import find_examples, read_mono, spectrogram
from analysis.export import write_table
from analysis.grids import grids
from analysis.missing import Missing
from analysis.reference_values import reference_table
from analysis.results import Results, finished, load_results
from analysis.sampling_results import load_sampling_results, score_components
from analysis.summaries import overview_table, package_table, reproducibility_table
from analysis.tables import workshop_table

MAX_EXAMPLES_PER_FOLDER = 32
MAX_EMBED_BYTES = 64 * 1024 * 1024
STYLE = ("<style>table.report-table{border-collapse:collapse;font-size:12px;margin:0.5em 0}"
         "table.report-table th,table.report-table td{border-bottom:1px solid #ddd;padding:2px 8px;"
         "text-align:left;vertical-align:top}"
         "div.report-scroll{max-width:100%;overflow-x:auto}"
         "table.report-wide td{white-space:nowrap}"
         "table.report-wide td:last-child{white-space:normal;overflow-wrap:anywhere;min-width:24em}</style>")
LEVEL_COLOURS = {"error": "#b00020", "warning": "#8a4b00", "missing": "#555555", "note": "#1f4e79"}


@dataclass
class ReportContext:
    """Everything a report shows: the loaded results, example folders, and where exports are written."""
    results: Results
    examples_dirs: list[Path] = field(default_factory=list)
    output_dir: Path | None = None

    @property
    def tables_dir(self) -> Path | None:
        return self.output_dir / "tables" if self.output_dir else None

    @property
    def figures_dir(self) -> Path | None:
        return self.output_dir / "figures" if self.output_dir else None


def build_context(runs_dir: str | Path, studies: list[str] | None = None, examples_dirs: list[str] | None = None,
                  output_dir: str | Path | None = None) -> ReportContext:
    """Load the studies; examples default to runs/<study>/examples of each loaded study that has one."""
    results = load_results(Path(runs_dir), studies or None)
    if examples_dirs:
        folders = [Path(folder) for folder in examples_dirs]
    else:
        folders = [study.path / "examples" for study in results.studies if (study.path / "examples").is_dir()]
    return ReportContext(results=results, examples_dirs=folders, output_dir=Path(output_dir) if output_dir else None)


def show(items: list) -> None:
    """Display each item in the running notebook (what every template cell calls)."""
    for item in items:
        display(item)


def heading(text: str, level: int = 3) -> HTML:
    return HTML(f"<h{level}>{html.escape(text)}</h{level}>")


def paragraph(text: str) -> HTML:
    return HTML(f"<p>{html.escape(text)}</p>")


def bullet_list(lines: list[str]) -> HTML:
    return HTML("<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul>")


def table_html(frame: pd.DataFrame, index: bool = True) -> HTML:
    """A whole table as HTML (no truncation of rows, columns or long cells, unlike a DataFrame repr)."""
    return HTML(frame.to_html(index=index, escape=True, na_rep="", border=0, classes="report-table"))


def wide_table_html(frame: pd.DataFrame) -> HTML:
    """A table too wide for the page: its last column (e.g. a command) wraps, and what is still too wide
    scrolls sideways inside its own box instead of being cut off."""
    table = frame.to_html(index=False, escape=True, na_rep="", border=0, classes="report-table report-wide")
    return HTML(f'<div class="report-scroll">{table}</div>')


@dataclass(frozen=True)
class EmbeddedImage:
    """A PNG shown inline as an <img> with a data URI and alternative text (kept in the HTML export)."""
    png: bytes
    alt: str

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        return f'<img alt="{html.escape(self.alt)}" src="data:image/png;base64,{data}"/>'


def figure_image(figure, name: str, context: ReportContext) -> EmbeddedImage:
    """The figure embedded as PNG, also saved under output_dir/figures/<name>.png when there is one."""
    if context.figures_dir is not None:
        plots.save_png(figure, context.figures_dir / f"{name}.png")
    return EmbeddedImage(plots.png_bytes(figure), alt=name.replace("_", " "))


def _exported(paths: dict[str, Path], context: ReportContext) -> HTML:
    shown = [str(path.relative_to(context.output_dir)) if context.output_dir else str(path) for path in paths.values()]
    return HTML("<p><small>exported: " + ", ".join(f"<code>{html.escape(text)}</code>" for text in shown) + "</small></p>")


def summary(context: ReportContext) -> list:
    """Where the results come from and the headline counts, or what is missing."""
    results = context.results
    items = [HTML(STYLE), paragraph(f"Generated {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} from {results.runs_dir.resolve()}.")]
    if not results.studies:
        return items + list(results.missing) + [reference_note()]
    trials = results.trials
    counts = trials["status"].value_counts().to_dict()
    items.append(paragraph(f"{len(results.studies)} studies ({', '.join(study.name for study in results.studies)}), "
                           f"{len(trials)} trials: " + ", ".join(f"{count} {status}" for status, count in counts.items())
                           + "."))
    not_replications = [column.label for column in workshop_table(results).columns if not column.is_replication]
    if not_replications or (trials["scale"] != "full").any():
        items.append(HTML('<p style="color:#b00020"><b>Not a replication:</b> smoke-scale or stand-in-data results '
                          "are pipeline checks; do not compare them with published numbers.</p>"))
    return items + list(results.missing)


def reference_note() -> HTML:
    return paragraph("The published reference figures are shown in the metrics section even without results.")


def overview(context: ReportContext) -> list:
    """What ran: per study the experiments, scale, data, hardware, dates and trial counts."""
    if not context.results.studies:
        return [Missing("studies to describe", "run `make replicate SCALE=smoke` (or any `study run ...`), "
                        "then `study report`")]
    return [table_html(overview_table(context.results))]


def warnings(context: ReportContext) -> list:
    """Every finding (errors, warnings, missing parts, notes), coloured by level."""
    found = findings(context.results)
    if not found:
        return [paragraph("No warnings: every trial finished at full scale on real data, and its results row "
                          "matches its run record.")]
    table = findings_table(found)
    counts = table["level"].value_counts()
    items = [paragraph(", ".join(f"{counts[level]} {level}" for level in LEVEL_COLOURS if level in counts) + ".")]
    rows = "".join(
        f'<tr><td style="color:{LEVEL_COLOURS[row.level]}"><b>{html.escape(row.level)}</b></td>'
        f"<td>{html.escape(row.study)}</td><td>{html.escape(row.trial)}</td><td>{html.escape(row.message)}</td>"
        f"<td>{html.escape(row.fix)}</td></tr>" for row in table.itertuples())
    items.append(HTML('<table class="report-table"><thead><tr><th>level</th><th>study</th><th>trial</th>'
                      f"<th>message</th><th>fix</th></tr></thead><tbody>{rows}</tbody></table>"))
    return items


def metrics(context: ReportContext) -> list:
    """The workshop's table for our columns beside the published values, then the references alone."""
    items = []
    table = workshop_table(context.results)
    if table.empty:
        items.append(Missing("results of a replication study (one that varies only the seed)",
                             "run `make replicate` and/or `make ablation` (SCALE=smoke for a pipeline check)"))
    else:
        formatted = table.formatted()
        items += [table_html(formatted), bullet_list(table.notes)]
        if context.tables_dir is not None:
            items.append(_exported(write_table(formatted, context.tables_dir, "workshop_table", numbers=table.tidy(),
                                               caption="Final metrics against the workshop's and the paper's",
                                               notes=table.notes), context))
    items += [heading("Published reference values", 4),
              paragraph("Workshop slides (2024, 'Music Generation via S4') and Goel et al. 2022, 'It's Raw!' "
                        "(arXiv 2202.09729): test NLL in bits per sample, comparable with test bpb."),
              table_html(reference_table().map(lambda value: "" if pd.isna(value) else f"{value:.4f}"))]
    return items


def grid_section(context: ReportContext) -> list:
    """For each grid study: metric per hyperparameter value (mean ± std over seeds) and its plot."""
    found = grids(context.results)
    if not found:
        return [Missing("hyperparameter grids", "run `make grids` (dropout, weight decay, lr, sample rate)")]
    items = []
    for grid in found:
        items.append(heading(f"{grid.study}: {', '.join(grid.keys)} ({grid.experiment}, scale {grid.scale})", 4))
        if grid.values.empty:
            items.append(Missing(f"finished trials of grid {grid.study}", f"wait for or rerun `study run {grid.study}`"))
            continue
        formatted = grid.formatted()
        items.append(table_html(formatted))
        if context.tables_dir is not None:
            numbers = grid.values.copy()
            numbers.columns = [f"{metric} {name}" for metric, name in numbers.columns]
            items.append(_exported(write_table(formatted, context.tables_dir, f"grid_{grid.study}",
                                               numbers=numbers.reset_index(), caption=f"Grid {grid.study}"), context))
        figure = plots.grid_figure(grid)
        if figure is not None:
            items.append(figure_image(figure, f"grid_{grid.study}", context))
    return items


def learning_curves(context: ReportContext) -> list:
    """val bpb and train loss per epoch for every trial, one figure per study."""
    histories = context.results.histories
    if histories.empty:
        return [Missing("learning curves (per-epoch history in run.json)",
                        "train at least one epoch: `study run <study>` records history in each run.json")]
    items = []
    for study, rows in histories.groupby("study", sort=True):
        figure = plots.learning_curves(rows, title=study)
        if figure is not None:
            items += [heading(study, 4), figure_image(figure, f"curves_{study}", context)]
    return items


def sampling(context: ReportContext) -> list:
    """The temperature x top_p heatmap of each study's sampling search, with the best settings."""
    if not context.results.studies:
        return [Missing("sampling search results", "train a model, then run `make search` (study search-sampling)")]
    items, without = [], []
    for study in context.results.studies:
        loaded = load_sampling_results(study.path)
        if isinstance(loaded, Missing):
            without.append(study.name)
            continue
        items += [heading(f"{study.name}: {len(loaded)} sampling trials", 4),
                  figure_image(plots.sampling_heatmap(loaded, title=f"{study.name}: score (lower is better)"),
                               f"sampling_{study.name}", context)]
        columns = ["temperature", "top_p", "score", *score_components(loaded)]
        items += [paragraph("Lowest scores:"), table_html(loaded[columns].head(5).round(4), index=False)]
    if not items:
        return [Missing(f"sampling search results ({len(without)} studies searched, none found)",
                        "run `make search` (study search-sampling); it writes runs/<study>/sampling-search/")]
    if without:
        items.append(paragraph("No sampling search for: " + ", ".join(without) + "."))
    return items


def audio_examples(context: ReportContext) -> list:
    """Every WAV under the example folders: an embedded player and a spectrogram (prompt boundary marked)."""
    if not context.examples_dirs:
        return [Missing("generated examples",
                        "generate some with `study generate checkpoint=runs/<study>/<signature>/checkpoints/best.pt "
                        "prompt=...` into runs/<study>/examples/, or pass `study report examples=DIR`")]
    items = []
    for folder in context.examples_dirs:
        if not folder.is_dir():
            items.append(Missing(f"examples folder {folder}", "check examples=..., or generate into that folder"))
            continue
        examples, notes = find_examples(folder)
        items.append(heading(f"{folder}: {len(examples)} WAV files", 4))
        items += [paragraph(note) for note in notes]
        if not examples:
            items.append(Missing(f"WAV files in {folder}", "run `study generate ...` with this folder as output"))
        for example in examples[:MAX_EXAMPLES_PER_FOLDER]:
            items += example_items(example, context)
        if len(examples) > MAX_EXAMPLES_PER_FOLDER:
            items.append(paragraph(f"{len(examples) - MAX_EXAMPLES_PER_FOLDER} more files not embedded "
                                   f"(at most {MAX_EXAMPLES_PER_FOLDER} per folder)."))
    return items


def example_items(example, context: ReportContext) -> list:
    """A heading (name and role, settings in short), a player, and a spectrogram with the prompt boundary."""
    boundary = (f"prompt 0–{example.prompt_seconds:g} s, continuation after (dashed line)"
                if example.prompt_seconds is not None else "")
    facts = [example.settings, f"{example.seconds:.2f} s at {example.sample_rate} Hz"
             + ("" if example.channels == 1 else f", {example.channels} channels"), boundary]
    items = [HTML(f"<p><b>{html.escape(example.label)}</b><br/><small>"
                  f"{html.escape(' · '.join(fact for fact in facts if fact))}</small></p>")]
    if example.path.stat().st_size > MAX_EMBED_BYTES:
        return items + [paragraph(f"not embedded: {example.path} is larger than {MAX_EMBED_BYTES // 2**20} MiB")]
    items.append(Audio(filename=str(example.path), embed=True))
    samples, sample_rate = read_mono(example.path)
    result = spectrogram(samples, sample_rate)
    figure = plots.spectrogram_figure(result.times_seconds, result.frequencies_hz, result.decibels,
                                      title=example.label, boundary_seconds=example.prompt_seconds)
    alt = f"spectrogram of {example.label}" + (f", prompt ends at {example.prompt_seconds:g} s"
                                               if example.prompt_seconds is not None else "")
    items.append(EmbeddedImage(plots.png_bytes(figure, dpi=80), alt=alt))
    return items


def appendix(context: ReportContext) -> list:
    """Reproducibility: per trial signature, commit, data fingerprint, device and rerun command; packages."""
    if not context.results.studies:
        return [Missing("run records", "run a study; each trial writes run.json beside its checkpoints")]
    trials = reproducibility_table(context.results)
    items = [heading("Trials", 4), wide_table_html(trials)]
    if context.tables_dir is not None:
        context.tables_dir.mkdir(parents=True, exist_ok=True)
        trials.to_csv(context.tables_dir / "reproducibility.csv", index=False)
    packages = package_table(context.results)
    items.append(heading("Package versions across runs", 4))
    items.append(table_html(packages, index=False) if not packages.empty
                 else Missing("package versions", "run records written by `study train` list them"))
    finished_count = len(finished(context.results.trials))
    items.append(paragraph(f"{finished_count} finished trials; rerun any of them with its command above "
                           "(same signature, same run folder)."))
    return items
