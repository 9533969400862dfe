"""Executor: step equals forward through the whole stack and heads, live API, mouse head, loss, config."""

from __future__ import annotations

import pytest
import torch

from models.errors import ConfigError
from models.executor import Executor, ExecutorConfig, StepOutput
from models.mouse import MouseHead

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
FIELDS = ("mouse_logits", "mouse_offsets", "click_logit", "key_logits")


def tiny(**overrides) -> Executor:
    torch.manual_seed(0)
    config = dict(
        d_frame=5,
        goal_dim=4,
        d_target=3,
        d_model=16,
        n_layers=2,
        d_state=4,
        n_keys=4,
        mouse_bins_x=4,
        mouse_bins_y=3,
    )
    return Executor(ExecutorConfig(**{**config, **overrides})).eval()


def sequence(batch=2, length=13, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    shapes = [(batch, length, 5), (batch, length, 4), (batch, length, 3), (batch, length, 2)]
    return [torch.randn(*shape, generator=g).to(device) for shape in shapes]


def test_output_shapes():
    out = tiny()(*sequence())
    assert out.mouse_logits.shape == (2, 13, 12) and out.mouse_offsets.shape == (2, 13, 12, 2)
    assert out.click_logit.shape == (2, 13) and out.key_logits.shape == (2, 13, 4)


@pytest.mark.parametrize("scan_chunk", [0, 4])
def test_stepping_frames_equals_forward_over_the_sequence(scan_chunk):
    model = tiny(scan_chunk=scan_chunk)
    inputs = sequence()
    with torch.no_grad():
        full, final = model(*inputs, return_state=True)
        state = model.reset(2)
        steps = []
        for t in range(inputs[0].shape[1]):
            out, state = model.step(*(x[:, t] for x in inputs), state)
            steps.append(out)
    for field in FIELDS:
        stepped = torch.stack([getattr(out, field) for out in steps], dim=1)
        torch.testing.assert_close(stepped, getattr(full, field), rtol=1e-5, atol=1e-5, msg=field)
    assert state.frames == final.frames == 13
    for a, b in zip(state.layers, final.layers):
        torch.testing.assert_close(a.ssm, b.ssm, rtol=1e-5, atol=1e-6)


def test_prefill_then_step_equals_forward():
    model = tiny()
    inputs = sequence(length=20)
    with torch.no_grad():
        full = model(*inputs)
        _, prefill = model(*(x[:, :15] for x in inputs), return_state=True)
        state = prefill
        for t in range(15, 20):
            out, state = model.step(*(x[:, t] for x in inputs), state)
            torch.testing.assert_close(out.mouse_logits, full.mouse_logits[:, t], rtol=1e-5, atol=1e-5)
        tail = model(*(x[:, 15:] for x in inputs), state=prefill)  # step() left the prefilled state as it was
    torch.testing.assert_close(tail.key_logits, full.key_logits[:, 15:], rtol=1e-5, atol=1e-5)


def test_live_api_passes_the_state_in_and_out():
    model = tiny()
    inputs = sequence(batch=1, length=4)
    with torch.no_grad():
        state = model.reset()
        for t in range(4):
            out, state = model.step(*(x[:, t] for x in inputs), state)
        expected = model(*inputs).click_logit[:, -1]
    torch.testing.assert_close(out.click_logit, expected, rtol=1e-5, atol=1e-5)
    assert state.frames == 4
    state = model.reset()
    assert state.frames == 0 and all(torch.all(s.ssm == 0) for s in state.layers)


def test_step_without_a_state_is_an_error():
    with pytest.raises(RuntimeError, match="reset"):
        tiny().step(*(x[:, 0] for x in sequence()), None)


def test_future_frames_do_not_change_past_outputs():
    model = tiny()
    inputs = sequence()
    changed = [x.clone() for x in inputs]
    changed[0][:, 7:] += 1.0
    with torch.no_grad():
        a, b = model(*inputs), model(*changed)
    torch.testing.assert_close(b.mouse_logits[:, :7], a.mouse_logits[:, :7], rtol=0, atol=0)


def test_wrong_input_width_is_an_error():
    frame, goal, target, approach = sequence()
    with pytest.raises(ValueError, match="goal"):
        tiny()(frame, goal[..., :3], target, approach)


def test_loss_components_and_gradients():
    model = tiny().train()
    inputs = sequence()
    out = model(*inputs)
    g = torch.Generator().manual_seed(1)
    mouse, click, key = (
        torch.rand(2, 13, 2, generator=g),
        torch.rand(2, 13, generator=g) > 0.5,
        torch.randint(0, 4, (2, 13)),
    )
    valid = torch.arange(13) < torch.tensor([[13], [9]])
    losses = model.loss(out, mouse, click, key, valid)
    assert set(losses) == {"loss", "mouse", "mouse_offset", "click", "key"}
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


def test_click_pos_weight_and_key_weights_weigh_the_rare_events():
    model = tiny().eval()
    out = model(*sequence())
    mouse = torch.rand(2, 13, 2)
    click = torch.zeros(2, 13, dtype=torch.bool)
    click[0, 3] = True
    key = torch.zeros(2, 13, dtype=torch.long)
    key[1, 5] = 2
    plain = model.loss(out, mouse, click, key)
    same = model.loss(out, mouse, click, key, click_pos_weight=1.0, key_weight=torch.ones(4))
    torch.testing.assert_close(plain["click"], same["click"])
    torch.testing.assert_close(plain["key"], same["key"])
    weighted = model.loss(
        out, mouse, click, key, click_pos_weight=10.0, key_weight=torch.tensor([1.0, 1, 50, 1])
    )
    # the one click frame's loss counts 10 times: the BCE mean grows by 9 / 26 of that frame's loss
    bce = torch.nn.functional.binary_cross_entropy_with_logits(out.click_logit[0, 3], torch.tensor(1.0))
    torch.testing.assert_close(weighted["click"], plain["click"] + 9 * bce / 26)
    # key: a weighted mean, so the pressed frame (weight 50 of 75) dominates
    ce = torch.nn.functional.cross_entropy(out.key_logits.reshape(-1, 4), key.reshape(-1), reduction="none")
    w = torch.ones(26)
    w[13 + 5] = 50.0
    torch.testing.assert_close(weighted["key"], (ce * w).sum() / w.sum())
    torch.testing.assert_close(weighted["mouse"], plain["mouse"])


def test_decode_greedy_and_sampled():
    model = tiny()
    with torch.no_grad():
        out = model(*sequence())
    greedy = model.decode(out)
    sampled = model.decode(out, sample=True, generator=torch.Generator().manual_seed(0))
    for action in (greedy, sampled):
        assert (
            action.mouse.shape == (2, 13, 2)
            and action.click.dtype == torch.bool
            and action.key.dtype == torch.long
        )
        assert (action.mouse >= 0).all() and (action.mouse <= 1).all()


def test_held_head_steps_as_forward_decodes_and_learns_the_bits():
    model = tiny(n_held=4)
    inputs = sequence(length=6)
    with torch.no_grad():
        full = model(*inputs)
        state = model.reset(2)
        for t in range(6):
            stepped, state = model.step(*(x[:, t] for x in inputs), state)  # fused, held columns last
    assert full.held_logits.shape == (2, 6, 4) and isinstance(stepped, StepOutput)
    torch.testing.assert_close(stepped.held_logits, full.held_logits[:, -1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stepped.key_logits, full.key_logits[:, -1], rtol=1e-5, atol=1e-5)
    assert torch.equal(model.decode(stepped).held, stepped.held_logits > 0)
    # bits 1 and 3 held on every frame: the loss falls as the head learns exactly those
    held = torch.full((2, 6), 0b1010)
    targets = (torch.rand(2, 6, 2), torch.zeros(2, 6, dtype=torch.bool), torch.zeros(2, 6, dtype=torch.long))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        parts = model.loss(model(*inputs), *targets, held=held)
        first = float(parts["held"].detach()) if first is None else first
        optimizer.zero_grad()
        parts["loss"].backward()
        optimizer.step()
    assert float(parts["held"].detach()) < first / 3
    decoded = model.decode(model(*inputs)).held
    assert decoded[..., [1, 3]].all() and not decoded[..., [0, 2]].any()


def test_held_head_needs_held_targets_and_is_absent_by_default():
    assert tiny()(*sequence()).held_logits is None and tiny().decode(tiny()(*sequence())).held is None
    model = tiny(n_held=3)
    out = model(*sequence())
    with pytest.raises(ValueError, match="held head"):
        model.loss(out, torch.rand(2, 13, 2), torch.zeros(2, 13, dtype=torch.bool), torch.zeros(2, 13).long())


# ------------------------------------------------------------------------------ step without autograd


def test_step_without_autograd_equals_the_module_path_and_decodes_alike():
    model = tiny()
    model.fit_mouse_bins(torch.rand(200, 2, generator=torch.Generator().manual_seed(0)) ** 2)  # uneven cells
    inputs = sequence(length=6)
    plain_state = fused_state = model.reset(2)
    for t in range(6):
        frame = [x[:, t] for x in inputs]
        plain, plain_state = model.step(*frame, plain_state)  # autograd on: module by module
        with torch.no_grad():
            fused, fused_state = model.step(*frame, fused_state)  # cached FusedWeights
    assert isinstance(fused, StepOutput) and not isinstance(plain, StepOutput)
    lazy = model.decode(fused)  # before mouse_offsets is read: the chosen cells' offsets only
    for field in FIELDS:
        torch.testing.assert_close(
            getattr(fused, field), getattr(plain, field).detach(), rtol=1e-5, atol=1e-5
        )
    eager = model.decode(plain)
    torch.testing.assert_close(lazy.mouse, eager.mouse, rtol=1e-5, atol=1e-6)
    assert torch.equal(lazy.key, eager.key) and torch.equal(lazy.click, eager.click)
    torch.testing.assert_close(model.decode(fused).mouse, lazy.mouse, rtol=1e-6, atol=1e-7)  # offsets read


def test_step_under_autograd_gives_gradients():
    model = tiny().train()
    state = model.reset(2)
    for t in range(3):
        out, state = model.step(*(x[:, t] for x in sequence()), state)
    (out.mouse_logits.logsumexp(-1) + out.mouse_offsets.sum((-2, -1)) + out.click_logit).sum().backward()
    assert all(p.grad is not None for p in model.layers.parameters()) and model.embed.weight.grad is not None


def _fit_both_normalizers(model):
    model.norm_frame.fit(torch.randn(50, 5) * 3 + 1)
    model.norm_target.fit(torch.randn(50, 3) + 2)


def _mute_a_column(model):
    with torch.no_grad():  # as training/tasks.py does
        model.norm_frame.mean[[0]] = 0.0
        model.norm_frame.std[[0]] = 1e6


def _replace_a_buffer(model):
    model.norm_target.mean = torch.full((3,), 0.5)


def _load_other_weights(model):
    torch.manual_seed(3)
    model.load_state_dict(Executor(model.config).state_dict())


def _sgd_step(model):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model(*sequence(length=3)).click_logit.sum().backward()
    optimizer.step()


@pytest.mark.parametrize(
    "change", [_fit_both_normalizers, _mute_a_column, _replace_a_buffer, _load_other_weights, _sgd_step]
)
def test_step_follows_changes_to_weights_and_statistics(change):
    model = tiny()
    inputs = sequence(length=4)
    with torch.no_grad():
        before = model(*inputs).mouse_logits[:, -1]
        _, state = model(*(x[:, :3] for x in inputs), return_state=True)
        model.step(*(x[:, 3] for x in inputs), state)  # builds the cached weights
    change(model)
    with torch.no_grad():
        expected = model(*inputs).mouse_logits[:, -1]
        _, state = model(*(x[:, :3] for x in inputs), return_state=True)
        out, _ = model.step(*(x[:, 3] for x in inputs), state)
    assert not torch.allclose(expected, before)
    torch.testing.assert_close(out.mouse_logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("name", "width", "batch"), [("goal", 3, 2), ("target", 3, 1)])
def test_step_input_errors_name_the_input(name, width, batch):
    model = tiny()
    state = model.reset(2)
    inputs = dict(zip(("frame", "goal", "target", "approach"), (x[:, 0] for x in sequence())))
    inputs[name] = inputs[name][:batch, :width]
    with torch.no_grad(), pytest.raises(ValueError, match=name):
        model.step(**inputs, state=state)


# ------------------------------------------------------------------------------------------- mouse head


def test_fitted_edges_are_increasing_span_the_region_and_follow_the_data():
    head = MouseHead(8, 10, 10)
    g = torch.Generator().manual_seed(0)
    positions = (0.5 + 0.05 * torch.randn(5000, 2, generator=g)).clamp(0, 1)  # cursor near the ship
    head.fit(positions)
    for edges in (head.x_edges, head.y_edges):
        assert edges[0] == 0 and edges[-1] == 1 and (edges.diff() > 0).all()
        widths = edges.diff()
        assert widths[4:6].max() < 0.05 < widths[0]  # fine cells where the data is, coarse elsewhere


def test_cell_and_position_round_trip():
    head = MouseHead(8, 6, 5)
    head.fit(torch.rand(1000, 2, generator=torch.Generator().manual_seed(0)))
    xy = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.31, 0.77], [0.5, 0.5]])
    cell, fraction = head.cell_of(xy)
    offsets = torch.zeros(4, 30, 2)
    offsets[torch.arange(4), cell] = torch.logit(fraction.clamp(1e-6, 1 - 1e-6))
    torch.testing.assert_close(head.position(cell, offsets), xy, rtol=0, atol=1e-5)


def test_mouse_head_keeps_two_modes_apart():
    """Half the frames click (0.2, 0.8), half (0.8, 0.2), from the same input: decode lands on a mode."""
    torch.manual_seed(0)
    head = MouseHead(4, 8, 8)
    modes = torch.tensor([[0.2, 0.8], [0.8, 0.2]])
    targets = modes[torch.arange(64) % 2]
    head.fit(targets + 0.01 * torch.randn(64, 2))
    h = torch.ones(64, 4)
    optimizer = torch.optim.Adam(head.parameters(), lr=0.1)
    for _ in range(60):
        optimizer.zero_grad()
        ce, offset = head.loss(*head(h), targets)
        (ce + offset).backward()
        optimizer.step()
    with torch.no_grad():
        logits, offsets = head(h[:1])
        position = head.position(logits.argmax(-1), offsets)[0]
    assert torch.cdist(position[None], modes).min() < 0.03  # a regression would answer (0.5, 0.5)


# ----------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value"), [("d_model", 0), ("mamba_path", "fast"), ("n_keys", 0), ("mouse_bins_x", 0)]
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"ExecutorConfig.{field}: expected"):
        ExecutorConfig(**{field: value})


# ------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("path", ["reference", "auto"])
def test_step_equals_forward_on_cuda(path):
    if path == "auto":
        pytest.importorskip("mamba_ssm")
    model = tiny(d_model=64, mamba_path=path).cuda()
    inputs = sequence(length=32, device="cuda")
    with torch.no_grad():
        full = model(*inputs)
        state = model.reset(2)
        for t in range(32):
            out, state = model.step(*(x[:, t] for x in inputs), state)
    torch.testing.assert_close(out.mouse_logits, full.mouse_logits[:, -1], rtol=1e-3, atol=2e-3)
