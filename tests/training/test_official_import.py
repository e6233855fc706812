"""Importing official SaShiMi checkpoints: .pt and Lightning .ckpt layouts, the same logits as the original
weights, safe reading (no code runs), and clear refusals of truncated and foreign files."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from study.errors import CheckpointError
from study.model_config import ModelConfig
from study.sashimi import SaShiMi
from study.training.official import build_imported, map_official, read_official_state
from tests.training.official_fixture import official_state, to_v3_names

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small(**overrides) -> SaShiMi:
    torch.manual_seed(3)
    values = dict(n_layers=2, d_model=8, d_state=8, l_max=64, pool=[4, 2], expand=2)
    return SaShiMi(ModelConfig(**{**values, **overrides})).eval()


def logits(model: SaShiMi, length: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.config.n_classes, (2, length), generator=generator)
    with torch.no_grad():
        return model(tokens)


def imported(path, **settings) -> SaShiMi:
    state, _ = read_official_state(path)
    official = map_official(state, str(path), **settings)
    return build_imported(official, str(path))


class ExplodesWhenUnpickled:
    """An object whose unpickling would create a file: the safe reader must never run it."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_official_state_dict_imports_with_the_same_logits(tmp_path):
    model = small()
    path = tmp_path / "sashimi_toy.pt"
    torch.save(official_state(model), path)
    state, container = read_official_state(path)
    assert container == "state_dict" and len(state) == len(official_state(model))
    official = map_official(state, str(path))
    assert official.layout == "v4"
    config = official.config
    assert (config.n_layers, config.d_model, config.pool, config.expand, config.ff) == (2, 8, [4, 2], 2, 2)
    assert (config.final_act, config.norm, config.d_state, config.l_max, config.ssm_mode) == \
        ("glu", "transposed_ln", 8, 64, "nplr")
    assert torch.equal(logits(build_imported(official, str(path))), logits(model))


def test_lightning_checkpoint_with_omegaconf_hyper_parameters_is_read_without_running_anything(tmp_path):
    model = small(final_act="id", ff=0, n_layers=1)
    marker = tmp_path / "ran"
    hyper_parameters = OmegaConf.create({"model": {"_name_": "sashimi", "n_layers": 1}, "train": {"seed": 0}})
    path = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "global_step": 12, "pytorch-lightning_version": "1.9.0",
                "state_dict": official_state(model), "hyper_parameters": hyper_parameters,
                "callbacks": {"trap": ExplodesWhenUnpickled(marker)}}, path)
    with pytest.raises(Exception):
        torch.load(path, weights_only=True)  # what the plain safe load refuses
    state, container = read_official_state(path)
    assert not marker.exists()
    assert container == "lightning"
    model_back = imported(path)
    assert model_back.config.final_act == "id" and model_back.config.ff == 0 and model_back.config.n_layers == 1
    assert torch.equal(logits(model_back), logits(model))


def test_v3_names_are_renamed_as_the_official_converter_does(tmp_path):
    model = small(dt_transform="exp")
    path = tmp_path / "v3.pt"
    torch.save(to_v3_names(official_state(model)), path)
    state, _ = read_official_state(path)
    official = map_official(state, str(path), dt_transform="softplus")
    assert official.layout == "v3" and official.config.dt_transform == "exp"
    assert torch.equal(logits(build_imported(official, str(path))), logits(model))


def test_a_never_run_kernel_gets_c_tilde_from_its_c(tmp_path):
    model = small(n_layers=1)
    state = official_state(model)
    for name in [n for n in state if n.endswith("l_kernel")]:
        state[name] = torch.tensor(0)
        prefix = name[: -len(".layer.layer.kernel.l_kernel")]
        ours = prefix.replace("model.c_layers", "backbone.centre").replace("model.u_layers", "backbone.up_stages")
        kernel = model.get_submodule(f"{ours}.layer.kernel")
        state[f"{prefix}.layer.layer.kernel.C"] = torch.view_as_real(kernel.c_true().to(torch.complex64)).unsqueeze(0)
    path = tmp_path / "fresh.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="sample_len=131072"):
        imported(path)
    back = imported(path, sample_len=64)
    assert torch.allclose(logits(back), logits(model), atol=2e-4)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "sashimi.pt"
    torch.save(official_state(small()), path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        read_official_state(cut)


def test_foreign_checkpoint_is_refused_at_its_first_tensor(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"conv1.weight": torch.zeros(4, 3, 3, 3), "fc.weight": torch.zeros(10, 4)}, path)
    state, _ = read_official_state(path)
    with pytest.raises(CheckpointError, match="'conv1.weight' has no counterpart"):
        map_official(state, str(path))
    extra = official_state(small())
    extra["model.c_layers.0.layer.layer.kernel.omega"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="'model.c_layers.0.layer.layer.kernel.omega'"):
        map_official(extra, "x.pt")


def test_wrong_shape_is_named_by_its_official_name(tmp_path):
    state = official_state(small())
    state["model.c_layers.0.layer.layer.kernel.A_real"] = torch.zeros(8, 4)  # n_ssm = H instead of 1
    with pytest.raises(CheckpointError, match="'model.c_layers.0.layer.layer.kernel.A_real' has shape"):
        build_imported(map_official(state, "x.pt"), "x.pt")


def test_missing_tensor_is_refused():
    state = official_state(small())
    del state["model.u_layers.0.1.layer.layer.D"]
    with pytest.raises(CheckpointError, match="lacks the tensor"):
        build_imported(map_official(state, "x.pt"), "x.pt")


def test_official_weight_decay_rule_on_official_names_matches_our_groups():
    """The official add_optimizer_hooks(backbone) rule, applied to the official names: in model.*,
    a name ending in 'bias', a LayerNorm's tensors and TransposedLN's m, s take no decay; kernel tensors
    registered with lr (inv_dt, A_real, A_imag, B, P) take lr 0.001 and no decay; everything else decays."""
    from study.sashimi import parameter_groups
    model = small()
    state = official_state(model)
    official = map_official(state, "x.pt")
    ours_of = {official_name: ours for ours, official_name in official.official_names.items()}
    group_of = {id(p): (g["lr"], g["weight_decay"]) for g in parameter_groups(model, 0.004, 0.1) for p in g["params"]}
    parameters = dict(model.named_parameters())
    for name in state:
        if name.endswith("l_kernel"):
            continue
        leaf = name.rsplit(".", 1)[1]
        if ".kernel." in name and leaf in ("inv_dt", "A_real", "A_imag", "B", "P"):
            expected = (0.001, 0.0)
        elif name.startswith("model.") and (leaf == "bias" or name.startswith("model.norm.") or ".norm.norm." in name):
            expected = (0.004, 0.0)
        else:
            expected = (0.004, 0.1)
        assert group_of[id(parameters[ours_of[name]])] == expected, name
    assert math.isclose(sum(p.numel() for p in model.parameters()),
                        sum(t.numel() for n, t in state.items() if not n.endswith("l_kernel")))
