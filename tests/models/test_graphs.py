"""CUDA graphs (models/graphs.py): graphed calls equal eager ones; the CPU fallback; static buffers on CPU."""

from __future__ import annotations

import logging

import pytest
import torch

from models import graphs
from models.executor import Executor, ExecutorConfig
from models.graphs import GraphedExecutor, GraphedTactician, graphed
from models.strategist import Strategist, StrategistConfig
from models.tactician import Tactician, TacticianConfig

cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
HEADS = ("mouse_logits", "mouse_offsets", "click_logit", "key_logits", "held_logits")
WIDTHS = (5, 4, 3, 2)  # frame, goal, target, approach of tiny_executor()


def tiny_executor(**overrides) -> Executor:
    torch.manual_seed(0)
    config = dict(d_frame=5, goal_dim=4, d_target=3, d_model=16, n_layers=2, d_state=4, n_keys=4)
    config.update(mouse_bins_x=4, mouse_bins_y=3, n_held=2, mamba_path="reference")
    return Executor(ExecutorConfig(**{**config, **overrides})).eval()


def tiny_tactician() -> Tactician:
    torch.manual_seed(0)
    config = TacticianConfig(d_obj=6, n_max=8, goal_dim=4, d_ctx=3, d_model=16, n_heads=2, d_ff=32)
    return Tactician(config).eval()


def frames(n: int, device: str = "cpu", seed: int = 0) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, w, generator=g).to(device) for w in WIDTHS] for _ in range(n)]


def tactician_inputs(n: int = 8, device: str = "cpu", seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    valid = torch.arange(n) < torch.randint(1, n + 1, (1, 1), generator=g)
    return tuple(
        x.to(device)
        for x in (
            torch.randn(1, n, 6, generator=g),
            valid,
            torch.randn(1, 4, generator=g),
            torch.randn(1, 3, generator=g),
        )
    )


def assert_heads_close(got, want, atol: float) -> None:
    for name in HEADS:
        a, b = getattr(got, name), getattr(want, name)
        if b is None:
            assert a is None, name
            continue
        assert a.device == b.device, name
        torch.testing.assert_close(a, b, rtol=0, atol=atol, msg=name)


def run_both(eager: Executor, graph, inputs, state_e=None, state_g=None):
    """Step eager and graphed side by side over `inputs`; compare every frame; return both states."""
    state_e = eager.reset(1) if state_e is None else state_e
    state_g = graph.reset(1) if state_g is None else state_g
    with torch.inference_mode():
        for x in inputs:
            out_e, state_e = eager.step(*x, state_e)
            out_g, state_g = graph.step(*x, state_g)
            assert_heads_close(out_g, out_e, atol=1e-5)
    return state_e, state_g


# ------------------------------------------------------------------------------------- CPU: fallback


def test_factory_without_cuda_returns_the_models_as_given(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(graphs, "_logged", set())
    models = {"strategist": Strategist(StrategistConfig(d_model=16, n_layers=1, d_ff=32, n_heads=2))}
    models |= {"tactician": tiny_tactician(), "executor": tiny_executor()}
    with caplog.at_level(logging.INFO, logger="models.graphs"):
        out = graphed(models, "cuda")
        graphed(models, "cuda")
    assert all(out[name] is model for name, model in models.items())
    assert [r.getMessage() for r in caplog.records].count(
        "CUDA graphs: off (torch.cuda.is_available() is False); the models run eagerly where they are"
    ) == 1
    executor = out["executor"]  # eager: the same numbers as ever
    state = executor.reset(1)
    with torch.inference_mode():
        first, _ = executor.step(*frames(1)[0], state)
        again, _ = models["executor"].step(*frames(1)[0], state)
    assert_heads_close(first, again, atol=0.0)


def test_factory_on_a_cpu_device_returns_the_models_as_given():
    models = {"executor": tiny_executor(), "other": object()}
    out = graphed(models, "cpu")
    assert out == models and out is not models


# ------------------------------------------------------------------- CPU: static buffers, no capture


def test_static_buffers_equal_eager_steps_over_60_frames():
    model = tiny_executor()
    graph = GraphedExecutor(model, "cpu", capture=False)
    assert graph.model is model  # already on the device: no copy
    state_e, state_g = run_both(model, graph, frames(60))
    assert state_g.frames == state_e.frames == 60
    for a, b in zip(state_g.layers, state_e.layers):
        torch.testing.assert_close(a.ssm, b.ssm, rtol=0, atol=1e-5)
        torch.testing.assert_close(a.conv, b.conv, rtol=0, atol=1e-5)
        assert a.conv.stride(1) == 1  # allocate_state's layout: stride 1 over channels


def test_a_returned_state_is_never_modified_and_older_states_branch():
    model = tiny_executor()
    graph = GraphedExecutor(model, "cpu", capture=False)
    inputs = frames(12)
    _, mid_g = run_both(model, graph, inputs[:6])
    kept = [layer.ssm.clone() for layer in mid_g.layers]
    mid_e, _ = run_both(model, graph, inputs[:6])  # the eager state at frame 6 (graph restarted)
    run_both(model, graph, inputs[6:], state_e=mid_e, state_g=mid_g)  # not the last state: copied in
    assert all(torch.equal(a.ssm, b) for a, b in zip(mid_g.layers, kept))
    run_both(model, graph, inputs[6:], state_e=mid_e, state_g=mid_g)  # the same branch again


def test_a_prefilled_state_from_forward_continues():
    model = tiny_executor()
    graph = GraphedExecutor(model, "cpu", capture=False)
    history = [torch.cat(x, dim=0).unsqueeze(0) for x in zip(*frames(20, seed=1))]  # (1, 20, w) each
    with torch.no_grad():
        _, state = model(*history, return_state=True)
    run_both(model, graph, frames(8), state_e=state, state_g=state)


def test_decode_and_other_attributes_are_the_given_executors():
    model = tiny_executor()
    graph = GraphedExecutor(model, "cpu", capture=False)
    with torch.inference_mode():
        out, _ = graph.step(*frames(1)[0], graph.reset(1))
        eager, _ = model.step(*frames(1)[0], model.reset(1))
    assert graph.config is model.config and graph.mouse is model.mouse
    action, want = graph.decode(out), model.decode(eager)
    torch.testing.assert_close(action.mouse, want.mouse, rtol=0, atol=1e-5)
    assert torch.equal(action.key, want.key) and torch.equal(action.held, want.held)


def test_changed_weights_are_picked_up():
    model, other = tiny_executor(), tiny_executor()
    torch.manual_seed(1)
    other = Executor(other.config).eval()
    graph = GraphedExecutor(model, "cpu", capture=False)
    run_both(model, graph, frames(3))
    model.load_state_dict(other.state_dict())
    run_both(other, graph, frames(3))


def test_bad_inputs_raise_named_errors():
    graph = GraphedExecutor(tiny_executor(), "cpu", capture=False)
    frame, goal, target, approach = frames(1)[0]
    with pytest.raises(ValueError, match=r"expected goal \(1, 4\), got \(1, 5\)"):
        graph.step(frame, torch.zeros(1, 5), target, approach, graph.reset(1))
    with pytest.raises(ValueError, match="expected batch_size 1, got 2"):
        graph.reset(2)
    with pytest.raises(RuntimeError, match="expected the state"):
        graph.step(frame, goal, target, approach, None)
    with pytest.raises(ValueError, match="expected the state of reset"):
        graph.step(frame, goal, target, approach, tiny_executor(d_state=8).reset(1))
    with pytest.raises(ValueError, match="expected a CUDA device to capture on"):
        GraphedExecutor(tiny_executor(), "cpu", capture=True)
    with pytest.raises(ValueError, match=r"expected the model in eval\(\) mode"):
        GraphedExecutor(tiny_executor().train(), "cpu", capture=False)
    with torch.inference_mode():
        made_in_inference = tiny_executor()
    with pytest.raises(ValueError, match="outside torch.inference_mode"):
        GraphedExecutor(made_in_inference, "cpu", capture=False)


def test_tactician_static_buffers_equal_eager_and_one_graph_per_shape(monkeypatch):
    model = tiny_tactician()
    graph = GraphedTactician(model, "cpu", capture=False)
    with torch.inference_mode():
        for seed in range(4):
            for n in (8, 3):
                got, want = graph(*tactician_inputs(n, seed=seed)), model(*tactician_inputs(n, seed=seed))
                for name in ("target_logits", "approach", "query"):
                    torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=1e-5)
    assert len(graph._graphs()[1]) == 2
    monkeypatch.setattr(graphs, "MAX_SHAPES", 2)
    with torch.inference_mode():  # a third shape runs eagerly
        got, want = graph(*tactician_inputs(5)), model(*tactician_inputs(5))
    torch.testing.assert_close(got.target_logits, want.target_logits, rtol=0, atol=1e-5)
    assert len(graph._graphs()[1]) == 2 and graph.config is model.config


# ------------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@cuda_only
@pytest.mark.parametrize("path", ["reference", "auto"])
def test_graphed_step_equals_eager_step_and_forward_on_cuda(path):
    if path == "auto":
        pytest.importorskip("mamba_ssm")
    model = tiny_executor(d_model=64, mamba_path=path).cuda()
    graph = GraphedExecutor(model, "cuda")
    assert graph.capture and graph.model is model
    inputs = frames(64, "cuda")
    mid_e, mid_g = run_both(model, graph, inputs[:32])  # within 1e-5 at every frame
    run_both(model, graph, inputs[32:], state_e=mid_e, state_g=mid_g)  # chained: the state stays put
    run_both(model, graph, inputs[32:], state_e=mid_e, state_g=mid_g)  # an older state: copied in
    with torch.inference_mode():
        full = model(*[torch.cat(x, dim=0).unsqueeze(0) for x in zip(*inputs)])  # (1, 64, w) each
        state, out = graph.reset(1), None
        for x in inputs:
            out, state = graph.step(*x, state)
    # forward() runs cuDNN's conv in TF32: the tolerance of test_executor.py's step-vs-forward GPU test
    torch.testing.assert_close(out.mouse_logits, full.mouse_logits[:, -1], rtol=1e-3, atol=2e-3)


@pytest.mark.gpu
@cuda_only
def test_graphed_step_with_a_cpu_executor_returns_cpu_outputs():
    model = tiny_executor(d_model=64)
    graph = GraphedExecutor(model, "cuda")
    assert graph.model is not model and next(model.parameters()).device.type == "cpu"
    state_e, state_g = model.reset(1), graph.reset(1)
    with torch.inference_mode():
        for x in frames(50):
            out_e, state_e = model.step(*x, state_e)
            out_g, state_g = graph.step(*x, state_g)
            assert_heads_close(out_g, out_e, atol=1e-4)  # CPU vs GPU products: another summation order
    assert state_g.layers[0].ssm.is_cuda and graph.decode(out_g).mouse.device.type == "cpu"


@pytest.mark.gpu
@cuda_only
def test_graph_is_recaptured_when_weights_change():
    model = tiny_executor(d_model=64).cuda()
    torch.manual_seed(3)
    other = Executor(model.config).cuda().eval()
    graph = GraphedExecutor(model, "cuda")
    run_both(model, graph, frames(5, "cuda"))
    model.load_state_dict(other.state_dict())
    run_both(other, graph, frames(5, "cuda"))


@pytest.mark.gpu
@cuda_only
def test_graphed_tactician_and_factory_on_cuda():
    strategist = Strategist(StrategistConfig(d_model=16, n_layers=1, d_ff=32, n_heads=2)).eval()
    models = graphed({"strategist": strategist, "tactician": tiny_tactician().cuda()}, "cuda")
    assert models["strategist"] is strategist and isinstance(models["tactician"], GraphedTactician)
    eager = models["tactician"].tactician
    with torch.inference_mode():
        for seed in range(50):
            inputs = tactician_inputs(8, "cuda", seed)
            got, want = models["tactician"](*inputs), eager(*inputs)
            for name in ("target_logits", "approach", "query"):
                torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=0, atol=1e-5)
