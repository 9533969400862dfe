"""Mamba block: reference scan vs the recurrence written out in float64, step vs forward, the fused step and
its weight cache, gradients, paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models.errors import ConfigError, KernelUnavailableError
from models.kernels import INSTALL_HINT, kernels_available, resolve_mamba_path
from models.mamba import InferenceCache, MambaBlock, MambaConfig, MambaState
from models.scan import selective_scan

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def naive_scan(u, delta, A, B, C, h0=None):
    """Mamba's selective scan (https://arxiv.org/abs/2312.00752, Algorithm 2) one step at a time.

    u, delta (Bt, L, D); A (D, N); B, C (Bt, L, N).
    """
    h = torch.zeros(u.shape[0], u.shape[2], A.shape[1], dtype=u.dtype) if h0 is None else h0.clone()
    ys = []
    for t in range(u.shape[1]):
        dA = torch.exp(delta[:, t, :, None] * A)  # (Bt, D, N)
        dBu = delta[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        h = dA * h + dBu
        ys.append((h * C[:, t, None, :]).sum(-1))
    return torch.stack(ys, dim=1), h


def naive_block(block: MambaBlock, x: torch.Tensor) -> torch.Tensor:
    """The whole Mamba block in float64 with loops: conv tap by tap, scan step by step."""
    w = {name: value.detach().double() for name, value in block.state_dict().items()}
    c = block.config
    x = x.double()
    xs, z = (x @ w["in_proj.weight"].T).chunk(2, dim=-1)  # (B, L, Di)
    conv = torch.zeros_like(xs) + w["conv1d.bias"]
    for t in range(x.shape[1]):
        for tap in range(c.d_conv):
            source = t - (c.d_conv - 1) + tap
            if source >= 0:
                conv[:, t] += xs[:, source] * w["conv1d.weight"][:, 0, tap]
    u = F.silu(conv)
    dt, B, C = (u @ w["x_proj.weight"].T).split([c.rank, c.d_state, c.d_state], dim=-1)
    delta = F.softplus(dt @ w["dt_proj.weight"].T + w["dt_proj.bias"])
    y, _ = naive_scan(u, delta, -torch.exp(w["A_log"]), B, C)
    return ((y + u * w["D"]) * F.silu(z)) @ w["out_proj.weight"].T


def random_scan_inputs(
    batch=2, length=11, d_inner=5, d_state=3, dtype=torch.float64, delta_scale=0.5, seed=0
):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, d_inner, generator=g, dtype=dtype)
    delta = delta_scale * torch.rand(batch, length, d_inner, generator=g, dtype=dtype)
    A = -torch.rand(d_inner, d_state, generator=g, dtype=dtype) * d_state
    B = torch.randn(batch, length, d_state, generator=g, dtype=dtype)
    C = torch.randn(batch, length, d_state, generator=g, dtype=dtype)
    h0 = torch.randn(batch, d_inner, d_state, generator=g, dtype=dtype)
    return u, delta, A, B, C, h0


def small_block(**overrides) -> MambaBlock:
    torch.manual_seed(0)
    config = dict(d_model=8, d_state=4, d_conv=4, expand=2, path="reference")
    return MambaBlock(MambaConfig(**{**config, **overrides}))


# ------------------------------------------------------------------------------------------ the scan


@pytest.mark.parametrize("chunk", [1, 3, 4, 11, 0])
def test_scan_equals_naive_recurrence_float64(chunk):
    u, delta, A, B, C, h0 = random_scan_inputs()
    y, h = selective_scan(u, delta, A, B, C, h0, chunk=chunk)
    y_ref, h_ref = naive_scan(u, delta, A, B, C, h0)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-12)


def test_scan_with_steps_split_into_row_blocks_equals_naive():
    # B * D * N = 40 960 > 32 768: the stepped recurrence runs in row blocks (see scan._row_blocks)
    u, delta, A, B, C, h0 = random_scan_inputs(batch=5, length=9, d_inner=64, d_state=128)
    y, h = selective_scan(u, delta, A, B, C, h0, chunk=4)
    y_ref, h_ref = naive_scan(u, delta, A, B, C, h0)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-11)
    torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-11)
    inputs = [t.requires_grad_() for t in (u, delta, A, B, C, h0)]
    selective_scan(*inputs, chunk=4)[0].sum().backward()
    expected = [t.detach().clone().requires_grad_() for t in (u, delta, A, B, C, h0)]
    naive_scan(*expected)[0].sum().backward()
    for got, want in zip(inputs, expected):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-10, atol=1e-10)


def test_scan_fp32_close_to_float64_recurrence():
    u, delta, A, B, C, h0 = random_scan_inputs(batch=3, length=64, d_inner=16, d_state=8)
    y_ref, _ = naive_scan(u, delta, A, B, C, h0)
    y, _ = selective_scan(*(t.float() for t in (u, delta, A, B, C, h0)), chunk=5)
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)


def test_scan_stays_finite_when_large_deltas_reset_the_state():
    # delta * |A| up to 300 nats per step: a cumsum-of-log-decay factorisation would overflow fp32 here
    u, delta, A, B, C, h0 = random_scan_inputs(length=40, delta_scale=20.0)
    y_ref, _ = naive_scan(u, delta, A * 5, B, C, h0)
    y, _ = selective_scan(*(t.float() for t in (u, delta, A * 5, B, C, h0)), chunk=16)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), y_ref, rtol=1e-5, atol=1e-5)


def test_scan_analytic_backward_passes_gradcheck():
    inputs = [t.requires_grad_() for t in random_scan_inputs(batch=2, length=7, d_inner=3, d_state=2)]
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk=3), inputs)


# ----------------------------------------------------------------------------------------- the block


def test_block_reference_equals_naive_float64_block():
    block = small_block(scan_chunk=3)
    x = torch.randn(2, 13, 8, dtype=torch.float64)
    expected = naive_block(block, x)
    torch.testing.assert_close(block.double()(x), expected, rtol=0, atol=1e-12)


def test_block_fp32_close_to_naive_float64_block():
    block = small_block()
    x = torch.randn(2, 13, 8)
    torch.testing.assert_close(block(x).double(), naive_block(block, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("scan_chunk", [0, 3])
def test_step_by_step_equals_full_sequence(scan_chunk):
    block = small_block(scan_chunk=scan_chunk)
    x = torch.randn(3, 17, 8)
    with torch.no_grad():
        full, final = block(x, return_state=True)
        state = block.allocate_state(3)
        outputs = []
        for t in range(x.shape[1]):
            y, state = block.step(x[:, t], state)
            outputs.append(y)
    torch.testing.assert_close(torch.stack(outputs, dim=1), full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state.conv, final.conv, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(state.ssm, final.ssm, rtol=1e-5, atol=1e-6)


def test_prefill_then_step_and_forward_continuation():
    block = small_block(scan_chunk=4)
    x = torch.randn(2, 20, 8)
    with torch.no_grad():
        full = block(x)
        head, state = block(x[:, :12], return_state=True)
        tail = block(x[:, 12:], state=state)
        y, _ = block.step(x[:, 12], state)
    torch.testing.assert_close(torch.cat([head, tail], dim=1), full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(y, full[:, 12], rtol=1e-5, atol=1e-6)


def test_step_does_not_modify_the_given_state():
    block = small_block()
    state = block.allocate_state(1)
    with torch.no_grad():
        _, state = block.step(torch.randn(1, 8), state)
        conv, ssm = state.conv.clone(), state.ssm.clone()
        block.step(torch.randn(1, 8), state)
    assert torch.equal(state.conv, conv) and torch.equal(state.ssm, ssm)


def test_causal_future_input_does_not_change_past_output():
    block = small_block()
    x = torch.randn(1, 10, 8)
    changed = x.clone()
    changed[:, 6:] += 1.0
    torch.testing.assert_close(block(changed)[:, :6], block(x)[:, :6], rtol=0, atol=0)


def test_gradients_flow_to_every_parameter_and_input():
    block = small_block(scan_chunk=3)
    x = torch.randn(2, 9, 8, requires_grad=True)
    block(x).pow(2).mean().backward()
    for name, parameter in [("x", x), *block.named_parameters()]:
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_block_gradcheck_float64():
    block = small_block(d_model=4, d_state=2, scan_chunk=2).double()
    x = torch.randn(1, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


def test_parameter_names_and_shapes_match_mamba_ssm():
    d_model, d_state, d_conv, expand = 32, 16, 4, 2
    block = MambaBlock(MambaConfig(d_model=d_model, d_state=d_state, d_conv=d_conv, expand=expand))
    d_inner, rank = expand * d_model, 2  # dt_rank "auto" = ceil(32 / 16)
    expected = {  # mamba_ssm/modules/mamba_simple.py Mamba.__init__ with bias=False, conv_bias=True
        "in_proj.weight": (2 * d_inner, d_model),
        "conv1d.weight": (d_inner, 1, d_conv),
        "conv1d.bias": (d_inner,),
        "x_proj.weight": (rank + 2 * d_state, d_inner),
        "dt_proj.weight": (d_inner, rank),
        "dt_proj.bias": (d_inner,),
        "A_log": (d_inner, d_state),
        "D": (d_inner,),
        "out_proj.weight": (d_model, d_inner),
    }
    assert {k: tuple(v.shape) for k, v in block.state_dict().items()} == expected
    assert block.A_log._no_weight_decay and block.D._no_weight_decay


def test_initial_delta_lies_in_configured_range():
    block = MambaBlock(MambaConfig(d_model=64, dt_min=0.001, dt_max=0.1))
    dt = F.softplus(block.dt_proj.bias)
    assert dt.min() >= 0.001 * 0.999 and dt.max() <= 0.1 * 1.001


def test_reference_equals_independent_mambapy_with_copied_weights():
    mambapy = pytest.importorskip("mambapy.mamba")  # pure PyTorch, same parameter names as mamba-ssm
    ours = small_block(d_model=16, d_state=8)
    theirs = mambapy.MambaBlock(mambapy.MambaConfig(d_model=16, n_layers=1, d_state=8))
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 40, 16)
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-5, atol=1e-6)
    y_ours.square().sum().backward()
    y_theirs.square().sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ours.A_log.grad, theirs.A_log.grad, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ step without autograd


def other_weights(block: MambaBlock, seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return MambaBlock(block.config).state_dict()


def test_fused_step_equals_the_autograd_step():
    block = small_block(d_model=16)
    x = torch.randn(3, 6, 16)
    with torch.no_grad():
        _, state = block(x[:, :5], return_state=True)
        fused, fused_state = block.step(x[:, 5], state)  # autograd off: fused_step on cached weights
    plain, plain_state = block.step(x[:, 5], state)  # autograd on: module by module
    assert plain.requires_grad and not fused.requires_grad
    torch.testing.assert_close(fused, plain.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fused_state.ssm, plain_state.ssm.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fused_state.conv, plain_state.conv.detach(), rtol=1e-6, atol=1e-6)


def test_forward_continues_from_a_stepped_state():
    block = small_block(scan_chunk=3)
    x = torch.randn(2, 12, 8)
    with torch.no_grad():
        full = block(x)
        state = block.allocate_state(2)
        for t in range(7):
            _, state = block.step(x[:, t], state)
        tail = block(x[:, 7:], state=state)
    torch.testing.assert_close(tail, full[:, 7:], rtol=1e-5, atol=1e-6)


def test_step_under_autograd_gives_gradients():
    block = small_block()
    x = torch.randn(2, 8, requires_grad=True)
    with torch.no_grad():
        _, state = block(torch.randn(2, 5, 8), return_state=True)
    y, new_state = block.step(x, state)
    (y.square().sum() + new_state.ssm.sum()).backward()
    for name, parameter in [("x", x), *block.named_parameters()]:
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("change", ["load_state_dict", "adam", "to_float64", "new_parameter", "data"])
def test_fused_step_follows_every_parameter_change(change):
    block = small_block()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        _, state = block(x[:, :4], return_state=True)
        before, _ = block.step(x[:, 4], state)  # builds the cached weights
    if change == "load_state_dict":
        block.load_state_dict(other_weights(block))
    elif change == "adam":
        optimizer = torch.optim.Adam(block.parameters(), lr=0.1)
        block(x).square().mean().backward()
        optimizer.step()
    elif change == "to_float64":
        block.double()
        x, state = x.double(), MambaState(state.conv.double(), state.ssm.double())
    elif change == "new_parameter":
        block.D = torch.nn.Parameter(torch.randn_like(block.D))
    else:
        block.A_log.data = block.A_log.data + 1.0  # new storage behind the same Parameter
    with torch.no_grad():
        fused, _ = block.step(x[:, 4], state)
    expected, _ = block.step(x[:, 4], state)  # autograd on: reads the parameters themselves
    if change == "to_float64":  # same values, now computed in float64
        assert fused.dtype == torch.float64
    else:
        assert not torch.allclose(fused, before)
    torch.testing.assert_close(fused, expected.detach(), rtol=1e-6, atol=1e-6)


def test_inference_cache_rebuilds_only_when_a_source_changes():
    block = small_block()
    cache, builds = InferenceCache(), []

    def build():
        builds.append(1)
        return block.A_log * 2

    first = cache.get((block,), build)
    assert cache.get((block,), build) is first and len(builds) == 1
    with torch.no_grad():
        block.conv1d.bias.add_(1.0)  # any source, not only the ones `build` reads
    cache.get((block,), build)
    block.register_buffer("extra", torch.zeros(1))  # a new tensor joins the sources
    cache.get((block,), build)
    assert len(builds) == 3


# ----------------------------------------------------------------------------------- path selection


def test_auto_path_is_reference_on_cpu():
    assert resolve_mamba_path("auto", torch.device("cpu")) == "reference"
    assert resolve_mamba_path("reference", torch.device("cpu")) == "reference"


def test_asking_for_kernels_where_unusable_is_a_clear_error():
    block = small_block(path="kernels")
    with pytest.raises(KernelUnavailableError) as info:
        block(torch.randn(1, 3, 8))
    if not kernels_available():
        assert INSTALL_HINT in str(info.value)
    else:
        assert "CUDA" in str(info.value)


def test_input_shape_errors_name_the_argument_and_shape():
    block = small_block()
    with pytest.raises(ValueError, match=r"MambaBlock.forward: expected x of shape \(B, L >= 1, d_model=8\)"):
        block(torch.randn(2, 8))
    with pytest.raises(
        ValueError, match=r"MambaBlock.step: expected x of shape \(B, d_model=8\), got \(1, 3, 8\)"
    ):
        block.step(torch.randn(1, 3, 8), block.allocate_state(1))
    with pytest.raises(ValueError, match="d_model=8"):
        block(torch.randn(1, 0, 8))
    with pytest.raises(ValueError, match="selective_scan: expected u"):
        selective_scan(
            *(torch.zeros(1, 0, 4) for _ in range(2)), -torch.ones(4, 2), *(torch.zeros(1, 0, 2),) * 2
        )


@pytest.mark.parametrize(
    ("field", "value"),
    [("d_state", 0), ("path", "fast"), ("dt_max", 0.0001), ("expand", 1.5), ("scan_chunk", -1)],
)
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ConfigError, match=f"MambaConfig.{field}: expected"):
        MambaConfig(**{field: value})


# ---------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@cuda_only
def test_reference_path_on_cuda_step_equals_forward():
    block = small_block(d_model=32).cuda()
    x = torch.randn(2, 40, 32, device="cuda")
    with torch.no_grad():
        full = block(x)
        state = block.allocate_state(2)
        steps = []
        for t in range(x.shape[1]):
            y, state = block.step(x[:, t], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, dim=1), full, rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@cuda_only
def test_reference_path_equals_mamba_ssm_with_copied_weights(monkeypatch):
    mamba_ssm = pytest.importorskip("mamba_ssm")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    ours = MambaBlock(MambaConfig(d_model=64, path="reference")).cuda()
    theirs = mamba_ssm.Mamba(d_model=64, d_state=16, d_conv=4, expand=2, layer_idx=0).cuda()
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(2, 128, 64, device="cuda")
    x_ours, x_theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_theirs = ours(x_ours), theirs(x_theirs)
    torch.testing.assert_close(y_ours, y_theirs, rtol=6e-4, atol=2e-3)  # upstream fp32 kernel-vs-ref bar
    y_ours.square().mean().backward()
    y_theirs.square().mean().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1.2e-3, atol=4e-3)
    conv, ssm = theirs.allocate_inference_cache(2, 1, dtype=torch.float32)
    state = ours.allocate_state(2)
    with torch.no_grad():
        for t in range(8):
            y_theirs, conv, ssm = theirs.step(x[:, t : t + 1], conv, ssm)
            y_ours, state = ours.step(x[:, t], state)
            torch.testing.assert_close(y_ours, y_theirs.squeeze(1), rtol=6e-4, atol=2e-3)


@pytest.mark.gpu
@cuda_only
def test_kernels_path_equals_reference_path_and_shares_weights(monkeypatch):
    pytest.importorskip("mamba_ssm")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    reference = small_block(d_model=64, path="reference").cuda()
    kernels = MambaBlock(MambaConfig(d_model=64, d_state=4, path="kernels")).cuda()
    kernels.load_state_dict(reference.state_dict())
    x = torch.randn(2, 96, 64, device="cuda")
    with torch.no_grad():
        y_ref, s_ref = reference(x, return_state=True)
        y_ker, s_ker = kernels(x, return_state=True)
        torch.testing.assert_close(y_ker, y_ref, rtol=6e-4, atol=2e-3)
        torch.testing.assert_close(s_ker.ssm, s_ref.ssm, rtol=6e-4, atol=2e-3)
        step_ref, _ = reference.step(x[:, 0], s_ref)
        step_ker, _ = kernels.step(x[:, 0], s_ker)
        torch.testing.assert_close(step_ker, step_ref, rtol=6e-4, atol=2e-3)
