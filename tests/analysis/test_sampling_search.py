"""The sampling search's Optuna loop on synthetic audio: every trial stored and resumable, and no
deprecation warnings or Optuna log lines on the way."""

import warnings

import numpy as np
import pandas as pd

from analysis.sampling_search import RESULTS_NAME, SearchSettings, make_sampler, run_search

RATE = 16000


def tone(frequency: float, seconds: float = 0.25) -> np.ndarray:
    time = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * frequency * time)).astype(np.float32)


def test_the_tpe_sampler_is_built_without_deprecated_arguments():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_sampler(SearchSettings())


def test_search_stores_every_trial_quietly_and_resumes(tmp_path, capfd):
    settings = SearchSettings(trials=4, tpe_startup_trials=2)
    real = [tone(440.0)]

    def continuation_audio(temperature: float, top_p: float) -> list[np.ndarray]:
        noise = np.random.default_rng(0).normal(0, 0.1 * temperature, int(0.25 * RATE)).astype(np.float32)
        return [tone(440.0) + noise]

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        table = run_search(settings, continuation_audio, real, RATE, tmp_path)
    printed = capfd.readouterr()
    assert len(table) == 4 and len(pd.read_csv(tmp_path / RESULTS_NAME)) == 4
    assert printed.out.count("  trial ") == 4
    assert "[I " not in printed.err and "Trial 0 finished" not in printed.err
    again = run_search(SearchSettings(trials=5, tpe_startup_trials=2), continuation_audio, real, RATE, tmp_path)
    assert "4 trials stored, running 1 more" in capfd.readouterr().out and len(again) == 5
