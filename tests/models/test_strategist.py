"""Strategist: shapes, causality, padding, KV-cache steps, nn.TransformerEncoderLayer equivalence, flash."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from models.errors import ConfigError
from models.layers import PreLNBlock, key_padding_mask
from models.strategist import IGNORE_INDEX, MODES, Strategist, StrategistConfig, window_mask

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny(**overrides) -> Strategist:
    torch.manual_seed(0)
    config = dict(d_in=6, d_model=32, n_heads=4, n_layers=2, d_ff=64, dropout=0.0, max_len=8, goal_dim=8)
    return Strategist(StrategistConfig(**{**config, **overrides})).eval()


def test_output_shapes_and_mode_order():
    model = tiny()
    out = model(torch.randn(3, 7, 6))
    assert out.mode_logits.shape == (3, 7, len(MODES)) and out.goal.shape == (3, 7, 8)
    assert MODES == ("FIGHT", "LOOT", "FLEE", "EXPLORE", "CAUTIOUS")


@pytest.mark.parametrize("length", [8, 20])  # within the window (is_causal) and beyond it (band mask)
def test_future_steps_do_not_change_past_outputs(length):
    model = tiny()
    x = torch.randn(2, length, 6)
    changed = x.clone()
    changed[:, 5:] = torch.randn_like(changed[:, 5:])
    with torch.no_grad():
        before, after = model(x), model(changed)
    torch.testing.assert_close(after.mode_logits[:, :5], before.mode_logits[:, :5], rtol=0, atol=0)
    assert not torch.allclose(after.mode_logits[:, 5:], before.mode_logits[:, 5:])


@pytest.mark.parametrize("length", [6, 8, 21])  # cache growing, exactly full, and sliding
def test_step_with_kv_cache_equals_forward(length):
    model = tiny()
    x = torch.randn(2, length, 6)
    with torch.no_grad():
        full = model(x)
        cache = model.reset(2)
        logits, goals = [], []
        for t in range(length):
            out, cache = model.step(x[:, t], cache)
            logits.append(out.mode_logits)
            goals.append(out.goal)
    assert cache.length == min(length, model.config.max_len)
    torch.testing.assert_close(torch.stack(logits, dim=1), full.mode_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.stack(goals, dim=1), full.goal, rtol=1e-5, atol=1e-5)


def test_step_continues_the_cache_from_reset():
    model = tiny()
    x = torch.randn(1, 3, 6)
    with torch.no_grad():
        cache = model.reset(1)
        for t in range(3):
            out, cache = model.step(x[:, t], cache)
        expected = model(x).mode_logits[:, -1]
    torch.testing.assert_close(out.mode_logits, expected, rtol=1e-5, atol=1e-5)
    assert cache.length == 3


def test_step_without_a_cache_is_an_error():
    with pytest.raises(RuntimeError, match="reset"):
        tiny().step(torch.randn(1, 6), None)


def test_right_padding_needs_no_mask_and_outputs_match_unpadded():
    model = tiny()
    lengths = [5, 8]
    x = torch.randn(2, 8, 6)
    valid = torch.arange(8) < torch.tensor(lengths).unsqueeze(1)  # (B, T)
    with torch.no_grad():
        batched = model(x, valid)
        for row, length in enumerate(lengths):
            alone = model(x[row : row + 1, :length])
            torch.testing.assert_close(
                batched.mode_logits[row, :length], alone.mode_logits[0], rtol=1e-5, atol=1e-6
            )
    assert torch.all(batched.mode_logits[0, 5:] == 0) and torch.all(batched.goal[0, 5:] == 0)


def test_left_padding_is_rejected():
    valid = torch.tensor([[False, True, True]])
    with pytest.raises(ValueError, match="right-padded"):
        tiny()(torch.randn(1, 3, 6), valid)


def test_training_windows_reach_sdpa_flash_eligible(monkeypatch):
    """CPU proxy for the GPU flash test: no mask, is_causal, q/k/v (B, H, T, Dh) with a unit last stride."""
    calls = []
    real_sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, **kwargs):
        calls.append((attn_mask, is_causal, q.shape, [t.stride(-1) for t in (q, k, v)]))
        return real_sdpa(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = tiny(max_len=8)
    model(torch.randn(2, 8, 6), torch.arange(8) < torch.tensor([[8], [5]]))  # padded, still no mask
    assert len(calls) == 2 and all(m is None and c and s == [1, 1, 1] for m, c, _, s in calls)
    assert calls[0][2] == (2, 4, 8, 8)
    calls.clear()
    model(torch.randn(2, 9, 6))  # longer than the window: a band mask, so no flash
    assert all(m is not None and not c for m, c, _, _ in calls)


def test_window_mask():
    mask = window_mask(5, 2, torch.device("cpu"))
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 1, 1]],
        dtype=torch.bool,
    )
    assert torch.equal(mask, expected)


def test_an_output_reads_exactly_its_receptive_field():
    model = tiny(max_len=4)  # 2 layers: the last step reads the last 2 * 3 + 1 = 7 steps
    assert model.config.receptive_field == 7
    x = torch.randn(1, 12, 6)
    base = model(x).mode_logits[0, -1]
    for t, inside in ((12 - 7, True), (12 - 8, False)):  # the oldest step read, and the one before it
        changed = x.clone()
        changed[0, t] += 5.0
        assert torch.allclose(model(changed).mode_logits[0, -1], base) != inside


def test_loss_ignores_padding_and_uses_label_smoothing():
    model = tiny()
    out = model(torch.randn(2, 4, 6))
    labels = torch.tensor([[0, 1, 2, IGNORE_INDEX], [3, 4, IGNORE_INDEX, IGNORE_INDEX]])
    smoothed, plain = model.loss(out, labels), model.loss(out, labels, label_smoothing=0.0)
    assert torch.isfinite(smoothed) and not torch.isclose(smoothed, plain)
    changed = out.mode_logits.detach().clone()
    changed[0, 3] += 100.0  # an ignored step
    assert torch.isclose(model.loss(type(out)(changed, out.goal), labels, 0.0), plain)
    smoothed.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


# --------------------------------------------------------- equivalence with nn.TransformerEncoderLayer


def nn_layer_and_copy(d_model=32, n_heads=4, d_ff=64) -> tuple[nn.TransformerEncoderLayer, PreLNBlock]:
    torch.manual_seed(1)
    layer = nn.TransformerEncoderLayer(
        d_model, n_heads, d_ff, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
    )
    block = PreLNBlock(d_model, n_heads, d_ff, dropout=0.0)
    with torch.no_grad():
        block.ln1.load_state_dict(layer.norm1.state_dict())
        block.ln2.load_state_dict(layer.norm2.state_dict())
        block.attn.qkv.weight.copy_(layer.self_attn.in_proj_weight)
        block.attn.qkv.bias.copy_(layer.self_attn.in_proj_bias)
        block.attn.proj.load_state_dict(layer.self_attn.out_proj.state_dict())
        block.mlp.fc1.load_state_dict(layer.linear1.state_dict())
        block.mlp.fc2.load_state_dict(layer.linear2.state_dict())
    return layer, block


@pytest.mark.parametrize("training", [True, False])  # python path / fused fast path of the nn layer
def test_preln_block_equals_nn_encoder_layer_causal(training):
    layer, block = nn_layer_and_copy()
    layer.train(training)
    block.train(training)
    x = torch.randn(3, 10, 32)
    causal = nn.Transformer.generate_square_subsequent_mask(10)
    with torch.set_grad_enabled(training):
        expected = layer(x, src_mask=causal, is_causal=True)
        got = block(x, is_causal=True)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_preln_block_equals_nn_encoder_layer_with_key_padding_and_same_gradients():
    layer, block = nn_layer_and_copy()
    x = torch.randn(3, 7, 32)
    valid = torch.arange(7) < torch.tensor([[7], [4], [2]])  # (B, S)
    x_nn, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected = layer(x_nn, src_key_padding_mask=~valid)
    got = block(x_ours, attn_mask=key_padding_mask(valid))
    torch.testing.assert_close(got[valid], expected[valid], rtol=1e-5, atol=1e-5)
    expected[valid].square().sum().backward()
    got[valid].square().sum().backward()
    torch.testing.assert_close(x_ours.grad, x_nn.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(
        block.attn.qkv.weight.grad, layer.self_attn.in_proj_weight.grad, rtol=1e-4, atol=1e-5
    )


def test_strategist_without_rope_equals_stack_of_nn_layers():
    model = tiny(use_rope=False, max_len=16)
    layers = []
    for block in model.blocks:
        layer = nn.TransformerEncoderLayer(
            32, 4, 64, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        with torch.no_grad():
            layer.norm1.load_state_dict(block.ln1.state_dict())
            layer.norm2.load_state_dict(block.ln2.state_dict())
            layer.self_attn.in_proj_weight.copy_(block.attn.qkv.weight)
            layer.self_attn.in_proj_bias.copy_(block.attn.qkv.bias)
            layer.self_attn.out_proj.load_state_dict(block.attn.proj.state_dict())
            layer.linear1.load_state_dict(block.mlp.fc1.state_dict())
            layer.linear2.load_state_dict(block.mlp.fc2.state_dict())
        layers.append(layer.eval())
    x = torch.randn(2, 12, 6)
    h = model.embed(model.norm_in(x))
    causal = nn.Transformer.generate_square_subsequent_mask(12)
    with torch.no_grad():
        for layer in layers:
            h = layer(h, src_mask=causal, is_causal=True)
        torch.testing.assert_close(model(x).mode_logits, model._heads(h).mode_logits, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"d_model": 30}, "d_model"),  # not a multiple of n_heads
        ({"d_model": 12, "n_heads": 4}, "d_model"),  # head_dim 3 is odd: no RoPE
        ({"dropout": 1.5}, "dropout"),
        ({"max_len": 0}, "max_len"),
        ({"n_modes": 1}, "n_modes"),
        ({"use_rope": 1}, "use_rope"),
    ],
)
def test_config_validation_names_the_field(overrides, field):
    with pytest.raises(ConfigError, match=f"StrategistConfig.{field}: expected"):
        StrategistConfig(**overrides)


# ---------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@cuda_only
def test_flash_attention_forced_in_bf16_forward_backward_and_step():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    torch.manual_seed(0)
    config = StrategistConfig(d_in=16, d_model=128, n_heads=2, n_layers=2, d_ff=256, max_len=60, goal_dim=32)
    model = Strategist(config).cuda().train()
    x = torch.randn(4, 60, 16, device="cuda")
    labels = torch.randint(0, 5, (4, 60), device="cuda")
    # sdpa_kernel(FLASH_ATTENTION) leaves no other backend: a call flash cannot serve raises instead
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x)
        loss = model.loss(out, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with (
        sdpa_kernel(SDPBackend.FLASH_ATTENTION),
        torch.autocast("cuda", dtype=torch.bfloat16),
        torch.no_grad(),
    ):
        cache = model.reset(4)
        for t in range(3):
            step_out, cache = model.step(x[:, t], cache)
    assert torch.isfinite(step_out.mode_logits).all()
