"""Every registered model: shapes, gradients, odd sizes, pinned parameter counts, registry errors."""

from __future__ import annotations

import pytest
import torch

from crdetect import count_parameters, create_model, list_models
from crdetect.models import UnknownModelError

# Our exact counts, and the study's table they must match within 2 %.
PINNED = {
    "deepcr_unet": (467_233, 467_233),
    "unet": (517_793, 517_889),
    "cosmic_conn": (466_593, 466_593),
    "att_unet": (472_055, 465_953),
    "tunet_2": (638_449, 638_449),
    "tunet_3": (476_209, 476_209),
    "tunet_4": (450_073, 450_073),
    "tunet_9": (450_073, 450_073),
    "tunet_5": (496_537, 496_537),
    "tunet_6": (495_441, 495_441),
}


def test_registry_has_every_model_of_the_study():
    assert set(PINNED) <= set(list_models())
    assert list_models("tunet_*") == ["tunet_2", "tunet_3", "tunet_4", "tunet_5", "tunet_6", "tunet_9"]


@pytest.mark.parametrize("name", list_models())
def test_parameter_count_pinned_and_within_2_percent_of_the_study(name):
    ours, study = PINNED[name]
    assert count_parameters(create_model(name)) == ours
    assert abs(ours - study) / study < 0.02


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("shape", [(37, 51), (3, 5), (1, 1), (64, 64)])
def test_forward_backward_any_size(name, shape):
    torch.manual_seed(0)
    model = create_model(name)
    x = torch.randn(2, 1, *shape, requires_grad=True)
    y = model(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    y.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_transunet_position_embeddings_follow_the_input_size():
    model = create_model("tunet_4").eval()
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 256, 256)).shape[-2:] == (256, 256)  # the 16 x 16 grid
        assert model(torch.zeros(1, 1, 200, 96)).shape[-2:] == (200, 96)  # interpolated to 25 x 12


def test_transformer_hyperparameters_are_constructor_arguments():
    model = create_model("tunet_4", num_layers=2, num_heads=3, mlp_dim=32)
    assert len(model.blocks) == 2 and model.blocks[0].attn.num_heads == 3
    with pytest.raises(ValueError, match="divisible by num_heads"):
        create_model("tunet_4", num_heads=7)


def test_cosmic_conn_has_one_norm_module_per_convolution():
    """Cosmic-CoNN's own code reuses a norm object twice per block; ours must not share any."""
    model = create_model("cosmic_conn")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(norms) == len(convs) == 10
    assert len({id(n.weight) for n in norms}) == len(norms)


def test_attention_unet_gates_every_skip():
    model = create_model("att_unet")
    assert len(model.gates) == 2
    model(torch.randn(1, 1, 16, 16))
    assert all(g.last_alpha is not None and ((g.last_alpha >= 0) & (g.last_alpha <= 1)).all() for g in model.gates)


def test_unknown_model_suggests_close_names():
    with pytest.raises(UnknownModelError, match="Did you mean 'tunet_4'"):
        create_model("tunet4")


def test_bad_constructor_arguments_are_named():
    with pytest.raises(ValueError, match="unknown norm 'layer'"):
        create_model("unet", norm="layer")
    with pytest.raises(ValueError, match="cannot build model 'unet'"):
        create_model("unet", nonsense=3)


def test_every_transunet_builds_with_group_norm():
    """Issue #25: the study reports GroupNorm beating BatchNorm in the small TransUNets; their 60/76/20-channel
    layers could not take 8 groups. The largest group count up to 8 that divides the channels is used."""
    import torch

    from crdetect import create_model, list_models

    for name in list_models("tunet_*"):
        model = create_model(name, norm="group").eval()
        groups = {m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)}
        assert groups and max(groups) <= 8
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
        with torch.no_grad():
            assert model(torch.randn(1, 1, 64, 64)).shape == (1, 1, 64, 64)
    cosmic = create_model("cosmic_conn")  # unchanged: 8 groups everywhere
    assert {m.num_groups for m in cosmic.modules() if isinstance(m, torch.nn.GroupNorm)} == {8}
