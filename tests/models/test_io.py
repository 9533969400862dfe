"""Save/load through safetensors + config.json: bit-exact round trips; one-line errors name file, tensor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from models.errors import CheckpointError
from models.executor import Executor, ExecutorConfig
from models.io import CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, load_model, save_model
from models.strategist import Strategist, StrategistConfig
from models.tactician import Tactician, TacticianConfig


def strategist() -> Strategist:
    return Strategist(
        StrategistConfig(d_in=6, d_model=32, n_heads=4, n_layers=2, d_ff=64, max_len=8, goal_dim=8)
    )


def tactician() -> Tactician:
    return Tactician(TacticianConfig(d_obj=5, n_max=10, goal_dim=8, d_ctx=3, d_model=32, n_heads=4, d_ff=64))


def executor(**overrides) -> Executor:
    config = dict(
        d_frame=5, goal_dim=8, d_target=5, d_model=16, n_layers=2, d_state=4, mouse_bins_x=4, mouse_bins_y=3
    )
    return Executor(ExecutorConfig(**{**config, **overrides}))


def run(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        if isinstance(model, Strategist):
            return model(torch.randn(2, 10, 6, generator=g)).mode_logits
        if isinstance(model, Tactician):
            valid = torch.tensor([[True] * 4, [True, False, False, False]])
            objects, goal = torch.randn(2, 4, 5, generator=g), torch.randn(2, 8, generator=g)
            return model(objects, valid, goal, torch.randn(2, 3, generator=g)).target_logits
        inputs = [torch.randn(2, 7, n, generator=g) for n in (5, 8, 5, 2)]
        return model(*inputs).mouse_logits


@pytest.mark.parametrize("make", [strategist, tactician, executor])
def test_round_trip_is_bit_exact(tmp_path: Path, make):
    torch.manual_seed(0)
    model = make().eval()
    with torch.no_grad():  # fitted statistics are buffers and must travel too
        for module in model.modules():
            if hasattr(module, "mean") and hasattr(module, "std"):
                module.mean.uniform_(-1, 1)
                module.std.uniform_(0.5, 2)
    if isinstance(model, Executor):
        model.fit_mouse_bins(torch.rand(500, 2) ** 2)
    save_model(tmp_path / "m", model)
    loaded = load_model(tmp_path / "m").eval()
    assert type(loaded) is type(model) and loaded.config == model.config
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    for key in original:
        assert original[key].dtype == restored[key].dtype and torch.equal(original[key], restored[key]), key
    assert torch.equal(run(loaded), run(model))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == [
        CONFIG_FILE,
        WEIGHTS_FILE,
    ]  # nothing pickled


def test_config_json_names_class_config_and_version(tmp_path: Path):
    save_model(tmp_path, executor())
    header = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert header["class"] == "Executor" and header["format_version"] == FORMAT_VERSION
    assert header["config"]["d_model"] == 16 and header["config"]["mamba_path"] == "auto"


def test_weights_from_one_mamba_path_load_in_the_other(tmp_path: Path):
    model = executor(mamba_path="reference").eval()
    save_model(tmp_path, model)
    loaded = load_model(tmp_path, config_overrides={"mamba_path": "auto"}).eval()
    assert loaded.config.mamba_path == "auto"
    assert torch.equal(run(loaded), run(model))  # auto is the reference path on CPU: same kernels, same bits


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_weights_saved_on_reference_path_run_on_kernels(tmp_path: Path):
    pytest.importorskip("mamba_ssm")
    model = executor(mamba_path="reference", d_model=64).cuda().eval()
    save_model(tmp_path, model)
    loaded = load_model(tmp_path, config_overrides={"mamba_path": "kernels"}, device="cuda").eval()
    inputs = [torch.randn(2, 40, n, device="cuda") for n in (5, 8, 5, 2)]
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(*inputs).mouse_logits, model(*inputs).mouse_logits, rtol=1e-3, atol=2e-3
        )


def test_shape_mismatch_names_file_and_tensor(tmp_path: Path):
    save_model(tmp_path, executor())
    header = json.loads((tmp_path / CONFIG_FILE).read_text())
    header["config"]["d_model"] = 24
    (tmp_path / CONFIG_FILE).write_text(json.dumps(header))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path)
    message = str(info.value)
    assert (
        "\n" not in message
        and WEIGHTS_FILE in message
        and "'embed.weight'" in message
        and "(16, 20)" in message
    )


def test_missing_and_unexpected_tensors_are_named(tmp_path: Path):
    save_model(tmp_path, strategist())
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    del tensors["norm.weight"]
    save_file(tensors, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=r"model\.safetensors: tensor 'norm\.weight' missing"):
        load_model(tmp_path)
    tensors["norm.weight"] = torch.ones(32)
    tensors["extra.weight"] = torch.ones(2)
    save_file(tensors, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'extra\.weight'"):
        load_model(tmp_path)


def test_bad_config_json_is_named(tmp_path: Path):
    save_model(tmp_path, tactician())
    header = json.loads((tmp_path / CONFIG_FILE).read_text())
    header["config"]["colour"] = "red"
    (tmp_path / CONFIG_FILE).write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=r"config\.json.*unknown field.*colour"):
        load_model(tmp_path)
    header["config"].pop("colour")
    header["config"]["d_model"] = 30
    (tmp_path / CONFIG_FILE).write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=r"config\.json.*TacticianConfig\.d_model: expected"):
        load_model(tmp_path)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"format_version": 99}, "format_version"),
        ({"format": "other"}, "format"),
        ({"class": "Critic"}, "class"),
    ],
)
def test_header_errors(tmp_path: Path, change, match):
    save_model(tmp_path, tactician())
    header = {**json.loads((tmp_path / CONFIG_FILE).read_text()), **change}
    (tmp_path / CONFIG_FILE).write_text(json.dumps(header))
    with pytest.raises(CheckpointError, match=match):
        load_model(tmp_path)


def test_expected_class_and_missing_folder(tmp_path: Path):
    save_model(tmp_path / "t", tactician())
    with pytest.raises(CheckpointError, match="expected class 'Executor'"):
        load_model(tmp_path / "t", expected_class="Executor")
    with pytest.raises(CheckpointError, match="missing"):
        load_model(tmp_path / "nowhere")


def test_only_policy_models_can_be_saved(tmp_path: Path):
    with pytest.raises(CheckpointError, match="expected one of"):
        save_model(tmp_path, torch.nn.Linear(2, 2))
