"""`study bench train`: the one training-step benchmark runs the recipe's optimizer groups and the
loop's train step; its recipe is the composed train config; its arguments are key=value."""

import math

import pytest
import torch

from study import cli
from study.bench import train as train_bench
from study.config import compose_config
from study.config import settings_from
from study.training.step import build_optimizer

TINY = {"d_model": 8, "d_state": 4, "n_layers": 1}


def test_recipe_is_the_composed_train_config():
    composed = settings_from(compose_config(["experiment=youtubemix-sashimi-8"])).train
    recipe = train_bench.recipe()
    assert tuple(recipe.betas) == tuple(composed.betas)
    for key in ("lr", "weight_decay", "gradient_clip", "precision", "schedule"):
        assert getattr(recipe, key) == getattr(composed, key), key


def test_optimizer_has_the_recipe_groups():
    from study.sashimi import build_model

    model = build_model("sashimi-2", l_max=64, **TINY)
    groups = {(group["lr"], group["weight_decay"]) for group in build_optimizer(model, train_bench.recipe()).param_groups}
    assert groups == {(0.001, 0.0), (0.004, 0.0)}  # SSM dt, A, B, P at 0.001; the rest at the recipe's lr


def test_measure_train_step_trains_and_reports_its_figures():
    result = train_bench.measure_train_step("sashimi-2", 64, "cpu", "torch", steps=2, warmup=1, overrides=TINY)
    assert result["steps"] == 2 and result["backend"] == "torch" and math.isfinite(result["last_loss"])
    assert result["tokens_per_second"] == pytest.approx(64 / result["seconds_per_step"])
    assert result["epoch_seconds_youtubemix"] == pytest.approx(train_bench.YOUTUBEMIX_TRAIN_WINDOWS * result["seconds_per_step"])
    assert result["last_loss"] < math.log(256) + 0.5


def test_bf16_on_a_cpu_is_refused_as_training_refuses_it():
    from study.errors import ConfigError

    with pytest.raises(ConfigError, match="bf16 needs CUDA"):
        train_bench.measure_train_step("sashimi-2", 64, "cpu", "torch", "bf16", steps=1, warmup=1, overrides=TINY)


@pytest.mark.parametrize("argv, message", [(["--scales", "smoke"], "not key=value"), (["precision"], "not key=value"),
                                           (["speed=1"], "Key 'speed' not in"), (["device=cuda"], "no CUDA GPU")])
def test_bad_arguments_exit_2(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["bench", "train", *argv]) == 2
    assert message in capsys.readouterr().err
