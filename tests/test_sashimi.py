"""SaShiMi: parameter counts of the official presets, causality, gradients, optimizer groups, and
the recurrent face giving the same logits as the parallel one."""

import pytest
import torch

from study.model_config import ModelConfig
from study.sashimi import build_model, parameter_count, parameter_groups


@pytest.mark.parametrize("preset,final_act,expected", [
    ("sashimi-8", "glu", 4_751_072), ("sashimi-2", "glu", 1_460_120),
    ("sashimi-8", "id", 4_059_360), ("sashimi-2", "id", 1_287_192),
])
def test_parameter_counts_equal_the_official_models(preset, final_act, expected):
    assert parameter_count(build_model(preset, final_act=final_act, l_max=1024)) == expected


def test_number_of_classes_is_a_parameter():
    model = build_model("sashimi-2", n_classes=1024, l_max=256)
    assert model(torch.randint(0, 1024, (1, 256))).shape == (1, 256, 1024)


def small_model(**overrides):
    values = dict(n_layers=1, d_model=16, d_state=16, l_max=256)
    values.update(overrides)
    return build_model("sashimi-2", **values).eval()


@pytest.mark.parametrize("position", [0, 15, 16, 17, 63, 64, 200])
def test_outputs_never_depend_on_later_inputs(position):
    model = small_model()
    tokens = torch.randint(0, 256, (1, 256))
    changed = tokens.clone()
    changed[0, position] = (tokens[0, position] + 128) % 256
    with torch.no_grad():
        before, after = model(tokens), model(changed)
    assert torch.allclose(before[:, :position], after[:, :position], atol=1e-5)
    assert (before[:, position:] - after[:, position:]).abs().max() > 1e-3


def test_gradients_reach_every_parameter_and_are_finite():
    model = small_model().train()
    tokens = torch.randint(0, 256, (2, 256))
    logits = model(tokens)
    torch.nn.functional.cross_entropy(logits.reshape(-1, 256), tokens.reshape(-1)).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_optimizer_groups_follow_the_official_recipe():
    model = small_model()
    groups = parameter_groups(model, lr=0.004, weight_decay=0.1)
    group_of = {id(p): (g["lr"], g["weight_decay"]) for g in groups for p in g["params"]}
    assert len(group_of) == len(list(model.parameters()))
    for name, parameter in model.named_parameters():
        leaf = name.split(".")[-1]
        if leaf in ("inv_dt", "A_real", "A_imag", "B", "P"):
            assert group_of[id(parameter)] == (0.001, 0.0), name
        elif name.startswith("backbone.") and (leaf in ("bias", "m", "s") or "final_norm" in name):
            assert group_of[id(parameter)] == (0.004, 0.0), name
        else:  # the encoder, the decoder weight and bias, D, C, linear and pool weights
            assert group_of[id(parameter)] == (0.004, 0.1), name
    exempted = parameter_groups(model, lr=0.004, weight_decay=0.1, exempt_decoder_bias=True)
    group_of = {id(p): (g["lr"], g["weight_decay"]) for g in exempted for p in g["params"]}
    assert group_of[id(model.decoder.bias)] == (0.004, 0.0)
    assert group_of[id(model.decoder.weight)] == (0.004, 0.1)


def test_sample_length_must_divide_by_the_pooling():
    with pytest.raises(ValueError, match="not divisible by the total pooling factor 16"):
        build_model("sashimi-2", l_max=1000)


def assert_step_matches_forward(model, length, batch_size=1, tolerance=1e-4):
    tokens = torch.randint(0, model.config.n_classes, (batch_size, length))
    with torch.no_grad():
        expected = model(tokens)
    state = model.allocate_inference_cache(batch_size)
    storage = [tensor.data_ptr() for tensor in state.batched()]
    outputs = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one-sample ops gain nothing from threads and stall when a core is busy
    try:
        for t in range(length):
            outputs.append(model.step(tokens[:, t], state))
    finally:
        torch.set_num_threads(threads)
    error = (torch.stack(outputs, 1) - expected).abs().max().item()
    assert error <= tolerance, f"max |step - forward| = {error}"
    assert [tensor.data_ptr() for tensor in state.batched()] == storage  # updated in place, never reallocated
    assert state.position == length


def perturb_(model, scale=0.1):
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn_like(parameter) * parameter.abs().mean())


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["sashimi-2", "sashimi-8"])
@pytest.mark.parametrize("perturbed", [False, True])
def test_recurrent_face_equals_parallel_face_over_4096_samples(preset, perturbed):
    model = build_model(preset, l_max=4096).eval()
    if perturbed:
        perturb_(model)
    assert_step_matches_forward(model, 4096)


@pytest.mark.parametrize("overrides", [
    dict(norm="layer_norm"), dict(ssm_mode="diag", ssm_init="diag-lin"), dict(final_act="id"),
    dict(pool=[2, 4], expand=3), dict(dt_transform="exp"),
])
def test_step_matches_forward_for_model_variants(overrides):
    model = small_model(**overrides)
    perturb_(model)
    assert_step_matches_forward(model, 256, batch_size=2)


def test_block_checkpointing_gives_the_same_gradients():
    tokens = torch.randint(0, 256, (1, 256))
    gradients = []
    for checkpoint_blocks in (False, True):
        torch.manual_seed(5)
        model = small_model(checkpoint_blocks=checkpoint_blocks, dropout=0.1).train()
        torch.manual_seed(6)
        torch.nn.functional.cross_entropy(model(tokens).reshape(-1, 256), tokens.reshape(-1)).backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name, grad in gradients[0].items():
        assert torch.allclose(grad, gradients[1][name], atol=1e-6), name


def test_step_program_visits_each_level_as_the_pools_complete():
    backbone = build_model("sashimi-2", n_layers=1, d_model=8, d_state=8, l_max=64).backbone   # pool [4, 4]

    def program(phase):
        return [(op.kind, op.level, op.slot, op.completes) for op in backbone.step_program(phase)]

    # no pool completes: level 0 only, fed by the previous group's output
    assert program(0) == [("down", 0, 0, False), ("up", 0, 0, False), ("stage", 0, -1, False)]
    # the outer pool completes: level 1 runs first, then level 0 refills its up pool from it
    assert program(3) == [("down", 0, 3, True), ("down", 1, 0, False), ("up", 1, 0, False), ("stage", 1, -1, False),
                          ("up", 0, 3, True), ("stage", 0, -1, False)]
    # both complete: the centre, then level 1 and level 0 refill on the way out
    assert program(15) == [("down", 0, 3, True), ("down", 1, 3, True), ("stage", 2, -1, False),
                           ("up", 1, 3, True), ("stage", 1, -1, False), ("up", 0, 3, True), ("stage", 0, -1, False)]
    # every phase runs the outermost stage last, and each level's stage right after its up pool
    for phase in range(16):
        ops = backbone.step_program(phase)
        assert (ops[-1].kind, ops[-1].level) == ("stage", 0)
        assert all(ops[i + 1].kind == "stage" and ops[i + 1].level == op.level
                   for i, op in enumerate(ops) if op.kind == "up")
