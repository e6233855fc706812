"""The workshop table, grids and exports against values computed by hand from the fixture."""

import math

import pandas as pd
import pytest

from analysis.export import to_latex, to_markdown, write_table
from analysis.grids import grids
from analysis.reference_values import WORKSHOP_METRICS, paper_figure, reference_table, workshop_metrics
from analysis.results import load_results
from analysis.tables import workshop_table

LN2 = math.log(2)


def test_reference_tables_are_the_published_figures():
    workshop = workshop_metrics()
    assert workshop.loc["final/test/bpb", "YouTubeMix - 8 layers"] == pytest.approx(2.063964605)
    assert workshop.loc["final/test/accuracy", "YouTubeMix - 8 layers"] == pytest.approx(0.4203284681)
    assert paper_figure("youtubemix-sashimi-8", "final/test/bpb").value == 1.294
    assert paper_figure("youtubemix-sashimi-2", "final/test/bpb").value == 1.446
    assert paper_figure("youtubemix-sashimi-8", "final/test/loss") is None
    assert paper_figure("bigband-sashimi-8", "final/test/bpb") is None
    table = reference_table()
    assert list(table.index) == list(WORKSHOP_METRICS)
    assert table.loc["final/test/bpb", "paper: SaShiMi (2 layers) test NLL (bits)"] == 1.446


def test_workshop_table_means_stds_and_differences(fixture):
    table = workshop_table(load_results(fixture.runs_dir))
    assert [column.label for column in table.columns] == ["youtubemix-sashimi-8", "bigband-sashimi-8",
                                                         "bigband-sashimi-2"]
    assert list(table.values.index) == list(WORKSHOP_METRICS)
    mix = table.values["youtubemix-sashimi-8"]
    assert mix.loc["final/test/bpb", "mean"] == pytest.approx(2.1)            # seeds 2.0, 2.1, 2.2
    assert mix.loc["final/test/bpb", "std"] == pytest.approx(0.1)             # sample std, ddof=1
    assert mix.loc["final/test/bpb", "n"] == 3
    assert mix.loc["final/test/bpb", "workshop_diff"] == pytest.approx(2.1 - 2.063964605)
    assert mix.loc["final/test/bpb", "paper_diff"] == pytest.approx(2.1 - 1.294)
    assert mix.loc["final/test/loss", "mean"] == pytest.approx(2.1 * LN2)
    assert mix.loc["final/test/accuracy", "mean"] == pytest.approx(0.42)
    assert mix.loc["final/test/accuracy", "workshop_diff"] == pytest.approx(0.42 - 0.4203284681)
    assert math.isnan(mix.loc["final/test/loss", "paper"])
    assert math.isnan(mix.loc["final/val/accuracy@10", "workshop"])           # not printed in the slides
    two = table.values["bigband-sashimi-2"]                                   # failed seed 2 left out
    assert two.loc["final/test/bpb", "n"] == 2
    assert two.loc["final/test/bpb", "mean"] == pytest.approx(3.2)
    assert two.loc["final/test/bpb", "std"] == pytest.approx(math.sqrt(0.02))
    assert two.loc["final/val/bpb", "workshop_diff"] == pytest.approx(3.6 - 3.624292135)
    eight = table.values["bigband-sashimi-8"]
    assert eight.loc["final/test/bpb", "n"] == 1 and math.isnan(eight.loc["final/test/bpb", "std"])


def test_workshop_table_flags_smoke_and_stand_in_columns(fixture):
    table = workshop_table(load_results(fixture.runs_dir))
    mix, eight, two = table.columns
    assert not mix.is_replication and eight.is_replication and two.is_replication
    assert "smoke scale" in mix.flags and "stand-in data (toy-piano for youtubemix)" in mix.flags
    assert "1 of 3 trials not finished, left out" in two.flags
    formatted = table.formatted()
    assert "youtubemix-sashimi-8 (n=3, official tokens) †" in formatted.columns
    assert formatted.loc["final/test/bpb", "youtubemix-sashimi-8 (n=3, official tokens) †"] == "2.1000 ± 0.1000"
    assert formatted.loc["final/test/bpb", "bigband-sashimi-8 (n=1, official tokens)"] == "3.2000"
    assert formatted.loc["final/test/bpb", "Δ paper (youtubemix-sashimi-8)"] == "+0.8060"
    assert formatted.loc["final/test/bpb", "workshop: YouTubeBigBand - 2 layers (official tokens)"] == "3.1636"
    assert any("NOT a replication" in note and "stand-in" in note for note in table.notes)
    assert any("youtubemix-sashimi-8 <- study replicate" in note and "'YouTubeMix - 8 layers'" in note
               for note in table.notes)


def test_columns_say_their_quantizer_and_mark_comparisons_across_quantizers(tmp_path):
    from dataclasses import replace

    from analysis_fixture import build_fixture, default_trials

    def torchaudio_for_bigband_2(rows):
        return [replace(row, quantizer=None) if row.experiment == "bigband-sashimi-2" and row.seed == 1 else row
                for row in rows]

    fixture = build_fixture(tmp_path, trials=torchaudio_for_bigband_2(default_trials()))
    table = workshop_table(load_results(fixture.runs_dir))
    by_label = {column.label: column for column in table.columns}
    # seed 1 of bigband-sashimi-2 was tokenised before data.quantizer existed (torchaudio): its own column
    official, other = by_label["bigband-sashimi-2 (official)"], by_label["bigband-sashimi-2 (torchaudio)"]
    assert official.seeds == [0] and other.seeds == [1]
    assert official.is_replication and not other.is_replication and not other.same_tokens_as_references
    formatted = table.formatted()
    header = "bigband-sashimi-2 (torchaudio) (n=1, torchaudio tokens) † ‡"
    assert formatted.loc["final/test/bpb", header] == "3.3000"
    # the difference is shown, marked as across quantizers, not hidden
    assert formatted.loc["final/test/bpb", "Δ workshop (bigband-sashimi-2 (torchaudio)) ‡"] == "+0.1364"
    assert any("torchaudio quantizer" in note and "different tokens" in note for note in table.notes)
    tidy = table.tidy()
    assert set(tidy[tidy.column == "bigband-sashimi-2 (torchaudio)"]["across_quantizers"]) == {True}
    assert set(tidy[tidy.column == "bigband-sashimi-8"]["quantizer"]) == {"official"}


def test_grid_studies_get_their_own_columns_only_on_request(fixture):
    results = load_results(fixture.runs_dir)
    labels = [column.label for column in workshop_table(results, include_grids=True).columns]
    assert "youtubemix-sashimi-8 [replicate]" in labels
    assert "youtubemix-sashimi-8 [grid-dropout] model.dropout=0.1" in labels


def test_grid_means_and_selection_on_validation(fixture):
    (grid,) = grids(load_results(fixture.runs_dir))
    assert grid.study == "grid-dropout" and grid.keys == ["model.dropout"]
    assert grid.values.loc[0.1, ("final/test/bpb", "mean")] == pytest.approx(2.605)
    assert grid.values.loc[0.1, ("final/test/bpb", "std")] == pytest.approx(math.sqrt(0.00005))
    assert grid.best == 0.0
    formatted = grid.formatted()
    assert formatted.loc[0.0, "selected (lowest val bpb)"] == "✓"
    assert formatted.loc[0.2, "final/val/bpb"] == "2.6050 ± 0.0071"


def test_exports_contain_the_values(fixture, tmp_path):
    table = workshop_table(load_results(fixture.runs_dir))
    formatted = table.formatted()
    markdown = to_markdown(formatted, table.notes)
    assert "| final/test/bpb | 2.1000 ± 0.1000 | 2.0640 | +0.0360 | 1.2940 | +0.8060 |" in markdown
    latex = to_latex(formatted, caption="Final metrics", notes=table.notes)
    for needle in (r"\toprule", r"\midrule", r"\bottomrule", r"2.1000 $\pm$ 0.1000", r"3.2000 $\pm$ 0.1414",
                   r"youtubemix-sashimi-8 (n=3, official tokens) $^\dagger$", r"\caption{Final metrics}", "% Ours: mean"):
        assert needle in latex
    paths = write_table(formatted, tmp_path / "tables", "workshop", numbers=table.tidy(), notes=table.notes)
    csv = pd.read_csv(paths["csv"])
    row = csv[(csv.column == "youtubemix-sashimi-8") & (csv.metric == "final/test/bpb")].iloc[0]
    assert row["mean"] == pytest.approx(2.1) and row["std"] == pytest.approx(0.1) and not row["replication"]
    assert "2.1000 ± 0.1000" in paths["md"].read_text() and r"\toprule" in paths["tex"].read_text()
