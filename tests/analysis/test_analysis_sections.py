"""Report sections called directly (no notebook): content from the fixture, Missing without results."""

import json

from IPython.display import Audio

from analysis import sections
from analysis.missing import Missing
from analysis.report import TEMPLATE

SECTIONS = (sections.summary, sections.overview, sections.warnings, sections.metrics, sections.learning_curves,
            sections.grid_section, sections.sampling, sections.audio_examples, sections.appendix)


def _html(items) -> str:
    return "\n".join(item._repr_html_() for item in items if hasattr(item, "_repr_html_"))


def test_sections_from_the_fixture(fixture, tmp_path):
    context = sections.build_context(fixture.runs_dir, output_dir=tmp_path / "out")
    assert context.examples_dirs == [fixture.examples_dir]
    content = {section.__name__: section(context) for section in SECTIONS}
    assert "Not a replication" in _html(content["summary"])
    overview = _html(content["overview"])
    assert "toy-piano (stand-in for youtubemix)" in overview and "cuda: NVIDIA H100 80GB HBM3" in overview
    metrics = _html(content["metrics"])
    assert "2.1000 ± 0.1000" in metrics and "3.2000 ± 0.1414" in metrics and "NOT a replication" in metrics
    assert "repeat training material" in _html(content["warnings"])
    assert sum(isinstance(item, sections.EmbeddedImage) for item in content["learning_curves"]) == 3
    assert "2.4050 ± 0.0071" in _html(content["grid_section"])
    assert "No sampling search for: ablation, grid-dropout." in _html(content["sampling"])
    audio = [item for item in content["audio_examples"] if isinstance(item, Audio)]
    assert len(audio) == 4 and all(item.data[:4] == b"RIFF" for item in audio)   # prompt, real continuation, prompt + continuation, continuation alone
    appendix = _html(content["appendix"])
    assert "study train experiment=bigband-sashimi-2 scale=full seed=2" in appendix and "0123456789ab" in appendix
    exported = sorted(path.name for path in (tmp_path / "out").rglob("*") if path.is_file())
    assert {"workshop_table.csv", "workshop_table.md", "workshop_table.tex", "grid_grid-dropout.tex",
            "reproducibility.csv", "sampling_replicate.png", "curves_replicate.png"} <= set(exported)


def test_every_section_says_what_is_missing_without_results(tmp_path):
    context = sections.build_context(tmp_path / "runs")
    for section in SECTIONS:
        items = section(context)
        assert items, section.__name__
        if section not in (sections.warnings, sections.summary):
            assert isinstance(items[0], Missing), section.__name__
            assert str(items[0]).startswith("missing: ")
    assert "2.0640" in _html(sections.metrics(context))                        # references shown regardless


def test_template_cells_stay_thin():
    notebook = json.loads(TEMPLATE.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert "parameters" in code[0]["metadata"]["tags"]
    for cell in code[1:]:
        lines = [line for line in "".join(cell["source"]).splitlines() if line.strip()]
        assert len(lines) <= 3 and all(line.startswith(("sections.", "from analysis", "context =")) for line in lines)
