"""Time and peak memory of one training step: no DP, DP with Opacus hooks, DP with ghost clipping.

Each mode runs in its own subprocess (so peak RSS is its own), side by side in one invocation, on
the default model (all-MiniLM-L6-v2, 6 layers, LoRA r=8 on query/value, mean-pooling head) and
the default batch (128 examples, sequence length 40, physical batch 64). Timings on shared CPUs
jump by 2-4x between runs: compare the ratios within one run.

    python benchmarks/bench_dp.py [--steps 3] [--batch 128] [--physical 64] [--layers 6]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES = ("plain", "hooks", "ghost")


def _data(batch: int, length: int):
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    labels = torch.randint(0, 2, (batch,), generator=gen)
    return ids, mask, labels


def _step_plain(model, batch, physical):
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)

    def step():
        opt.zero_grad()
        n = batch[0].shape[0]
        for s in range(0, n, physical):
            part = [t[s : s + physical] for t in batch]
            loss = torch.nn.functional.cross_entropy(model(part[0], part[1]), part[2]) * (
                part[0].shape[0] / n
            )
            loss.backward()
        opt.step()

    return step


def _step_hooks(model, batch, physical):
    import torch
    from opacus import GradSampleModule
    from opacus.optimizers import DPOptimizer

    params = [p for p in model.parameters() if p.requires_grad]
    gsm = GradSampleModule(model, batch_first=True, loss_reduction="sum")
    opt = DPOptimizer(
        torch.optim.AdamW(params, lr=1e-3),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=batch[0].shape[0],
        loss_reduction="mean",
    )

    def step():
        opt.zero_grad()
        n = batch[0].shape[0]
        starts = list(range(0, n, physical))
        for i, s in enumerate(starts):
            part = [t[s : s + physical] for t in batch]
            loss = torch.nn.functional.cross_entropy(
                gsm(part[0], part[1]), part[2], reduction="sum"
            )
            loss.backward()
            if i < len(starts) - 1:
                opt.signal_skip_step(do_skip=True)
                opt.step()
                opt.zero_grad()
        opt.step()

    return step


def _step_ghost(model, batch, physical):
    import torch
    from opacus.grad_sample import GradSampleModuleFastGradientClipping
    from opacus.optimizers import DPOptimizerFastGradientClipping
    from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

    params = [p for p in model.parameters() if p.requires_grad]
    gsm = GradSampleModuleFastGradientClipping(
        model, batch_first=True, loss_reduction="mean", max_grad_norm=1.0, use_ghost_clipping=True
    )
    opt = DPOptimizerFastGradientClipping(
        torch.optim.AdamW(params, lr=1e-3),
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=batch[0].shape[0],
        loss_reduction="mean",
    )
    criterion = DPLossFastGradientClipping(
        gsm, opt, torch.nn.CrossEntropyLoss(reduction="mean"), loss_reduction="mean"
    )

    def step():
        # ghost clipping needs the whole logical batch in one pass (two backward passes inside)
        opt.zero_grad()
        loss = criterion(gsm(batch[0], batch[1]), batch[2])
        loss.backward()
        opt.step()

    return step


STEPS = {"plain": _step_plain, "hooks": _step_hooks, "ghost": _step_ghost}


def run_one(mode: str, steps: int, batch_size: int, physical: int, layers: int) -> dict:
    import torch

    from secure_fedsa.model import ModelSpec, build_model

    torch.set_num_threads(os.cpu_count() or 1)
    model = build_model(ModelSpec(num_layers=layers), num_labels=2, seed=0)
    batch = _data(batch_size, 40)
    step = STEPS[mode](model, batch, physical)
    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - start) / steps
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"mode": mode, "seconds_per_step": seconds, "peak_rss_mib": peak_mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--physical", type=int, default=64)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.steps, args.batch, args.physical, args.layers)))
        return
    rows = []
    for mode in MODES:
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--one",
                mode,
                "--steps",
                str(args.steps),
                "--batch",
                str(args.batch),
                "--physical",
                str(args.physical),
                "--layers",
                str(args.layers),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]["seconds_per_step"]
    print(
        f"command: python benchmarks/bench_dp.py --steps {args.steps} --batch {args.batch} "
        f"--physical {args.physical} --layers {args.layers}"
    )
    print("| mode | s/step | vs no DP | peak RSS MiB |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['mode']} | {r['seconds_per_step']:.2f} | "
            f"{r['seconds_per_step'] / base:.2f}x | {r['peak_rss_mib']:.0f} |"
        )


if __name__ == "__main__":
    main()
