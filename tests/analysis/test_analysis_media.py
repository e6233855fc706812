"""Examples (WAV discovery, manifest labels, spectrograms), sampling search results and figures."""

from pathlib import Path

import numpy as np
import pandas as pd

from analysis import plots
from analysis.examples import find_examples, manifest_entries, read_mono, spectrogram
from analysis.grids import grids
from analysis.missing import Missing
from analysis.results import load_results
from analysis.sampling_results import load_sampling_results, score_components
from analysis_fixture import write_wav

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_examples_read_the_manifest_study_generate_writes(fixture):
    examples, notes = find_examples(fixture.examples_dir)
    assert notes == []
    by_name = {example.path.name: example for example in examples}
    assert set(by_name) == {"prompt00.wav", "prompt00-reference.wav", "prompt00-sample00.wav",
                            "prompt00-sample00-continuation.wav"}
    whole, alone = by_name["prompt00-sample00.wav"], by_name["prompt00-sample00-continuation.wav"]
    assert whole.prompt_seconds == 0.25 and whole.seconds == 0.5   # the prompt's length, not its timing
    assert alone.prompt_seconds is None                            # continuation only: no boundary
    assert whole.label == "prompt00-sample00 (prompt + continuation)"
    assert alone.label == "prompt00-sample00 (continuation only)"
    assert by_name["prompt00-reference.wav"].label == "prompt00 (real continuation)"
    assert by_name["prompt00.wav"].label == "prompt00 (prompt)"
    assert whole.settings == "temperature 0.9, top-p 0.95, seed 0, rank 1 of 1"      # top-k 0 (no cut) left out
    assert [example.path.name for example in examples] == [                          # the manifest's order
        "prompt00.wav", "prompt00-reference.wav", "prompt00-sample00.wav", "prompt00-sample00-continuation.wav"]


def test_examples_without_or_with_a_broken_manifest_are_still_found(tmp_path):
    (tmp_path / "a").mkdir()
    write_wav(tmp_path / "a" / "x.wav", 0.1, 220.0)
    (tmp_path / "a" / "manifest.json").write_text("{not json")
    write_wav(tmp_path / "y.wav", 0.1, 220.0)
    examples, notes = find_examples(tmp_path)
    assert [example.path.name for example in examples] == ["x.wav", "y.wav"]
    assert all(example.prompt_seconds is None for example in examples)
    assert len(notes) == 1 and "manifest" in notes[0] and "ignored" in notes[0]


def test_manifest_shapes():
    base = Path("/m")
    manifest = {"prompt_seconds": 2, "samples": [{"file": "a.wav", "label": "A"}, {"path": "b.wav"}],
                "c.wav": {"temperature": 0.9}, "continuations": ["d.wav"]}
    entries = manifest_entries(manifest, base)
    assert entries[base / "a.wav"] == {"prompt_seconds": 2, "label": "A", "role": ""}
    assert entries[base / "b.wav"]["prompt_seconds"] == 2
    assert entries[base / "c.wav"]["temperature"] == 0.9
    assert entries[base / "d.wav"]["role"] == "continuations"


def test_spectrogram_peaks_at_the_tone(tmp_path):
    write_wav(tmp_path / "tone.wav", 0.5, 1000.0)
    samples, sample_rate = read_mono(tmp_path / "tone.wav")
    result = spectrogram(samples, sample_rate)
    peak = result.frequencies_hz[result.decibels.mean(axis=1).argmax()]
    assert abs(peak - 1000.0) <= sample_rate / 512
    assert result.decibels.max() == 0.0 and result.decibels.min() >= -80.0
    assert result.decibels.shape == (257, len(result.times_seconds))


def test_sampling_results_load_sorted_or_are_missing(fixture, tmp_path):
    loaded = load_sampling_results(fixture.runs_dir / "replicate")
    assert loaded.iloc[0][["temperature", "top_p"]].tolist() == [0.9, 0.95]
    assert score_components(loaded) == ["score/noise", "score/repetition"]
    assert isinstance(load_sampling_results(fixture.runs_dir / "ablation"), Missing)
    bad = tmp_path / "study" / "sampling-search"
    bad.mkdir(parents=True)
    pd.DataFrame({"temperature": [1.0], "score": [0.1]}).to_csv(bad / "x.csv", index=False)
    missing = load_sampling_results(tmp_path / "study")
    assert isinstance(missing, Missing) and "top_p" in missing.what


def test_figures_render_to_png(fixture):
    results = load_results(fixture.runs_dir)
    (grid,) = grids(results)
    figures = [plots.learning_curves(results.histories, "all"), plots.grid_figure(grid),
               plots.sampling_heatmap(load_sampling_results(fixture.runs_dir / "replicate")),
               plots.spectrogram_figure(np.arange(3.0), np.arange(4.0), np.zeros((4, 3)), "x", 1.0)]
    assert all(plots.png_bytes(figure).startswith(PNG_SIGNATURE) for figure in figures)
    scattered = pd.DataFrame({"temperature": np.linspace(0.5, 1.2, 40), "top_p": np.linspace(0.8, 1.0, 40),
                              "score": np.arange(40.0)})
    assert plots.png_bytes(plots.sampling_heatmap(scattered)).startswith(PNG_SIGNATURE)
    assert plots.learning_curves(pd.DataFrame()) is None


def test_a_wide_positive_grid_is_drawn_on_a_log_axis(fixture):
    path = fixture.runs_dir / "grid-dropout" / "results.parquet"
    trials = pd.read_parquet(path).rename(columns={"model.dropout": "train.lr"})
    trials["train.lr"] = trials["train.lr"].map({0.0: 1e-4, 0.1: 1e-3, 0.2: 1e-2})
    trials.to_parquet(path)
    (grid,) = grids(load_results(fixture.runs_dir, ["grid-dropout"]))
    figure = plots.grid_figure(grid)
    assert figure.axes[0].get_xscale() == "log"
