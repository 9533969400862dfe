"""The policy models per call on the CPU at batch 1 and 1 thread: torch vs the `pilot export` ONNX graphs
(fp32 and int8) run by ONNX Runtime, and how often the int8 bundle decides like the fp32 one.

    .venv/bin/python benchmarks/bench_export.py                        # the shipped data/pretrained/arena
    .venv/bin/python benchmarks/bench_export.py --policy BUNDLE --json

The bundle is exported into a temporary folder. Strategist: one step on a full window (max_len cached
steps); Tactician: one forward over N_max slots, half of them objects; Executor: one step + decode. vs_torch:
the median per-call time over torch's, from this run. Agreement is over random observations.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import add_common_args, apply_threads, report, time_call
from bot.policy.bundle import PolicyBundle
from bot.policy.onnx_export import ExportConfig, agreement, export_bundle, random_steps

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("model", "runtime", "min_ms", "median_ms", "vs_torch", "kB")
RUNTIMES = ("torch", "onnx fp32", "onnx int8")


def calls(bundle: PolicyBundle) -> dict[str, Callable[[], Any]]:
    """One call of each model at batch 1 on fixed inputs, its state already warm."""
    g = torch.Generator().manual_seed(0)
    s, t, e = bundle.strategist, bundle.tactician, bundle.executor
    cache = s.reset(1)
    summary = torch.randn(1, s.config.d_in, generator=g)
    for _ in range(s.config.max_len):  # a full window: the steady state of a long episode
        _, cache = s.step(summary, cache)
    tc = t.config
    objects = torch.randn(1, tc.n_max, tc.d_obj, generator=g)
    valid = torch.arange(tc.n_max).unsqueeze(0) < tc.n_max // 2
    goal, context = torch.randn(1, tc.goal_dim, generator=g), torch.randn(1, tc.d_ctx, generator=g)
    ec = e.config
    frame = [torch.randn(1, w, generator=g) for w in (ec.d_frame, ec.goal_dim, ec.d_target, ec.approach_dim)]
    state = e.reset(1)
    for _ in range(8):
        _, state = e.step(*frame, state)
    return {
        "strategist": lambda: s.step(summary, cache),
        "tactician": lambda: t(objects, valid, goal, context),
        "executor": lambda: e.decode(e.step(*frame, state)[0]),
    }


def sizes_kb(folder: Path) -> dict[str, float]:
    """The weight file of each model in kB (model.safetensors or model.onnx)."""
    out = {}
    for name in ("strategist", "tactician", "executor"):
        files = [f for f in (folder / name).iterdir() if f.suffix in (".safetensors", ".onnx")]
        out[name] = round(sum(f.stat().st_size for f in files) / 1024, 1)
    return out


def measure(bundles: dict[str, tuple[PolicyBundle, Path]], number: int, repeats: int) -> list[dict]:
    rows = []
    with torch.inference_mode():  # as PolicyRunner.act calls the models
        timed = {runtime: calls(bundle) for runtime, (bundle, _) in bundles.items()}
    for model in ("strategist", "tactician", "executor"):
        base = None
        for runtime, (_, folder) in bundles.items():
            with torch.inference_mode():
                ms = time_call(timed[runtime][model], number=number, repeats=repeats, warmup=20)
            base = ms["median_ms"] if base is None else base
            row = {"model": model, "runtime": runtime, **{k: round(v, 4) for k, v in ms.items()}}
            rows.append({**row, "vs_torch": round(ms["median_ms"] / base, 2), "kB": sizes_kb(folder)[model]})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", type=Path, default=REPO / "data/pretrained/arena", help="a torch bundle")
    parser.add_argument("--number", type=int, default=200, help="calls per timing round")
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds")
    parser.add_argument("--frames", type=int, default=600, help="random frames for the decision agreement")
    add_common_args(parser)
    args = parser.parse_args(argv)
    args.threads = args.threads or 1  # batch 1 on a CPU shared with capture and detection: 1 thread
    load = apply_threads(args)
    with tempfile.TemporaryDirectory() as tmp:
        folders = {"torch": args.policy}
        for runtime, int8 in (("onnx fp32", False), ("onnx int8", True)):
            cfg = ExportConfig(args.policy, Path(tmp) / runtime.replace(" ", "-"), int8=int8, check_steps=0)
            folders[runtime] = export_bundle(cfg)
        bundles = {runtime: (PolicyBundle.load(folder), folder) for runtime, folder in folders.items()}
        rows = measure(bundles, args.number, args.repeats)
        steps = random_steps(args.frames)
        torch_b, fp32, int8 = (bundles[r][0] for r in RUNTIMES)
        extra = {
            "bundle": str(args.policy),
            "decisions equal, onnx fp32 vs torch": round(agreement(torch_b, fp32, steps), 4),
            "decisions equal, onnx int8 vs onnx fp32": round(agreement(fp32, int8, steps), 4),
            "frames (random observations, a summary each 30)": args.frames,
            "threads (torch, each ONNX Runtime session)": f"{torch.get_num_threads()}, 1",
            "load average at start": round(load, 2),
        }
    title = "Policy models per call, batch 1, CPU: torch vs ONNX Runtime fp32 / int8"
    report(title, rows, COLUMNS, args.json, **extra)


if __name__ == "__main__":
    main()
