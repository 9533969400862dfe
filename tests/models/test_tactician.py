"""Tactician: shapes and masks, invariance to object order and to padding, "no target", loss, config."""

from __future__ import annotations

import pytest
import torch

from models.errors import ConfigError
from models.tactician import NO_TARGET, Tactician, TacticianConfig


def tiny(**overrides) -> Tactician:
    torch.manual_seed(0)
    config = dict(
        d_obj=5, n_max=10, goal_dim=8, d_ctx=3, d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0
    )
    return Tactician(TacticianConfig(**{**config, **overrides})).eval()


def inputs(batch=3, n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    objects = torch.randn(batch, n, 5, generator=g)
    valid = torch.rand(batch, n, generator=g) < 0.7
    valid[0] = True  # one full row
    valid[1] = False  # one row with no objects at all
    return objects, valid, torch.randn(batch, 8, generator=g), torch.randn(batch, 3, generator=g)


def test_shapes_and_masked_slots():
    objects, valid, goal, context = inputs()
    out = tiny()(objects, valid, goal, context)
    assert out.target_logits.shape == (3, 7) and out.approach.shape == (3, 2) and out.query.shape == (3, 32)
    assert torch.isinf(out.target_logits[:, 1:][~valid]).all()
    assert torch.isfinite(out.target_logits[:, 1:][valid]).all()
    assert torch.isfinite(out.target_logits[:, NO_TARGET]).all()
    assert torch.isfinite(out.approach).all() and torch.isfinite(out.query).all()


def test_frame_without_objects_chooses_no_target():
    objects, valid, goal, context = inputs()
    out = tiny()(objects, valid, goal, context)
    slot, features = Tactician.select(out, objects)
    assert slot[1] == NO_TARGET and torch.all(features[1] == 0)


def test_invariant_to_object_order():
    model = tiny()
    objects, valid, goal, context = inputs()
    permutation = torch.randperm(objects.shape[1], generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out = model(objects, valid, goal, context)
        shuffled = model(objects[:, permutation], valid[:, permutation], goal, context)
    slots = torch.cat([torch.tensor([NO_TARGET]), permutation + 1])
    torch.testing.assert_close(shuffled.target_logits, out.target_logits[:, slots], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(shuffled.approach, out.approach, rtol=1e-5, atol=1e-5)


def test_padded_objects_do_not_matter():
    model = tiny()
    objects, valid, goal, context = inputs()
    garbage = objects.clone()
    garbage[~valid] = 1e3 * torch.randn_like(garbage[~valid])
    more = torch.cat([objects, torch.randn(3, 2, 5)], dim=1)  # two more padded slots
    more_valid = torch.cat([valid, torch.zeros(3, 2, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        out = model(objects, valid, goal, context)
        out_garbage = model(garbage, valid, goal, context)
        out_more = model(more, more_valid, goal, context)
    torch.testing.assert_close(out_garbage.target_logits, out.target_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_more.target_logits[:, :7], out.target_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_more.approach, out.approach, rtol=1e-5, atol=1e-5)


def test_goal_changes_the_choice_scores():
    model = tiny()
    objects, valid, goal, context = inputs()
    with torch.no_grad():
        a = model(objects, valid, goal, context).target_logits
        b = model(objects, valid, -goal, context).target_logits
    assert not torch.allclose(a[valid.any(1)], b[valid.any(1)])


def test_select_gathers_the_chosen_object():
    model = tiny()
    objects, valid, goal, context = inputs()
    out = model(objects, valid, goal, context)
    slot, features = Tactician.select(out, objects)
    for row in range(3):
        expected = torch.zeros(5) if slot[row] == NO_TARGET else objects[row, slot[row] - 1]
        assert torch.equal(features[row], expected)


def test_loss_is_finite_with_masked_slots_and_trains():
    model = tiny()
    objects, valid, goal, context = inputs()
    target = torch.tensor([2, NO_TARGET, NO_TARGET])
    out = model(objects, valid, goal, context)
    loss = model.loss(out, target, approach=torch.zeros(3, 2))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        optimizer.zero_grad()
        model.loss(model(objects, valid, goal, context), target).backward()
        optimizer.step()
    assert torch.equal(model(objects, valid, goal, context).target_logits.argmax(-1), target)


def test_context_is_optional_when_d_ctx_is_zero():
    model = tiny(d_ctx=0)
    objects, valid, goal, _ = inputs()
    assert model(objects, valid, goal).target_logits.shape == (3, 7)
    with pytest.raises(ValueError, match="context"):
        tiny()(objects, valid, goal)


def test_wrong_input_shapes_are_errors():
    model = tiny()
    objects, valid, goal, context = inputs()
    with pytest.raises(ValueError, match="objects"):
        model(torch.randn(3, 11, 5), torch.ones(3, 11, dtype=torch.bool), goal, context)  # more than n_max
    with pytest.raises(ValueError, match="valid"):
        model(objects, valid.float(), goal, context)


@pytest.mark.parametrize(
    ("field", "value"), [("d_obj", 0), ("d_model", 30), ("dropout", -0.1), ("d_ctx", -1)]
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"TacticianConfig.{field}: expected"):
        TacticianConfig(**{field: value})
