"""Time and peak memory of a training step through the real engine: no DP, DP (hooks), DP (ghost),
and the cost of the secure noise generator inside a DP step.

Each measurement runs in its own subprocess (so peak RSS is its own). The modes are interleaved
(plain, hooks, ghost, plain, hooks, ghost, ...) and repeated, so a change of machine load hits
every mode alike; the table gives the median and the minimum over the repeats and the spread
(max / min). The machine's load average is printed at the start (and the end, where the
benchmark's own processes have raised it): a run started on a busy machine is marked as such.

Steps go through ``secure_fedsa.site.training`` exactly as a client's round does
(``train_plain`` / ``train_dp`` with noise and Poisson sampling from the OS CSPRNG), on the default
model (all-MiniLM-L6-v2, 6 layers, LoRA r=8 on query/value, mean-pooling head) and the default
batch (128 examples, length 40, physical batch 64; q = 1 so every step has exactly 128 examples).
The secure generator's share is measured in the same process: the noise for every trainable
tensor plus one Poisson draw, as ``train_dp`` makes them per step, against the step's time.

    python benchmarks/bench_dp.py [--steps 3] [--repeats 5] [--layers 6] [--lora-r 8]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MODES = ("plain", "hooks", "ghost")
LENGTH = 40
NOISE_REPEATS = 20
BUSY = 0.5  # 1-min load per CPU at the start above which the ratios are marked unreliable


def _data(batch: int):
    import torch
    from torch.utils.data import TensorDataset

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 20000, (batch, LENGTH), generator=gen)
    mask = torch.ones(batch, LENGTH, dtype=torch.long)
    labels = torch.randint(0, 2, (batch,), generator=gen)
    return TensorDataset(ids, mask, labels)


def _train(mode: str, model, data, steps: int, physical: int) -> None:
    import torch

    from secure_fedsa.privacy.randomness import OSRandom
    from secure_fedsa.site.training import DPSettings, train_dp, train_plain

    if mode == "plain":
        train_plain(
            model,
            data,
            steps=steps,
            batch_size=len(data),
            physical_batch_size=physical,
            lr=1e-3,
            generator=torch.Generator().manual_seed(0),
        )
        return
    train_dp(
        model,
        data,
        steps=steps,
        dp=DPSettings(noise_multiplier=1.0, clip=1.0, sample_rate=1.0),
        physical_batch_size=physical,
        lr=1e-3,
        randomness=OSRandom(),
        mode=mode,
    )


def _secure_randomness_seconds(model, n: int) -> tuple[float, float]:
    """(secure noise + one Poisson draw, torch.normal for the same values) per DP step."""
    import torch

    from secure_fedsa.privacy.randomness import OSRandom, gaussian, poisson_indices

    shapes = [p.shape for p in model.parameters() if p.requires_grad]
    source = OSRandom()
    times, plain = [], []
    for _ in range(NOISE_REPEATS):
        start = time.perf_counter()
        for shape in shapes:
            gaussian(source, shape, 1.0)
        poisson_indices(source, n, 1.0)
        times.append(time.perf_counter() - start)
        start = time.perf_counter()
        for shape in shapes:
            torch.normal(0.0, 1.0, size=shape)
        plain.append(time.perf_counter() - start)
    return statistics.median(times), statistics.median(plain)


def run_one(mode: str, steps: int, batch: int, physical: int, layers: int, lora_r: int) -> dict:
    import torch

    from secure_fedsa.model.encoder import ModelSpec, build_model

    torch.set_num_threads(os.cpu_count() or 1)
    model = build_model(ModelSpec(num_layers=layers, lora_r=lora_r), num_labels=2, seed=0)
    data = _data(batch)
    _train(mode, model, data, 1, physical)  # warm-up
    start = time.perf_counter()
    _train(mode, model, data, steps, physical)
    seconds = (time.perf_counter() - start) / steps
    row = {
        "mode": mode,
        "seconds_per_step": seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_values": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if mode != "plain":
        secure, plain = _secure_randomness_seconds(model, batch)
        row.update(secure_randomness_seconds=secure, torch_normal_seconds=plain)
    return row


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--physical", type=int, default=64)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--one", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = [str(args.steps), str(args.batch), str(args.physical), str(args.layers)]
    if args.one:
        row = run_one(args.one, args.steps, args.batch, args.physical, args.layers, args.lora_r)
        print(json.dumps(row))
        return
    load_start = os.getloadavg()[0]
    print(f"load at start: {_load()}")
    rows: dict[str, list[dict]] = {m: [] for m in MODES}
    for repeat in range(args.repeats):
        for mode in MODES:  # interleaved: every mode sees the same drift in load
            command = [sys.executable, __file__, "--one", mode, "--steps", sizes[0]]
            command += ["--batch", sizes[1], "--physical", sizes[2], "--layers", sizes[3]]
            command += ["--lora-r", str(args.lora_r)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            rows[mode].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"  repeat {repeat + 1}/{args.repeats} {mode}: "
                  f"{rows[mode][-1]['seconds_per_step']:.2f} s/step", file=sys.stderr)  # fmt: skip
    print(f"load at end:   {_load()}")
    command = (
        f"python benchmarks/bench_dp.py --steps {args.steps} --repeats {args.repeats} "
        f"--batch {args.batch} --physical {args.physical} --layers {args.layers} "
        f"--lora-r {args.lora_r}"
    )
    print(f"command: {command}")
    if load_start > BUSY * (os.cpu_count() or 1):
        print(
            f"NOTE: the machine was busy at the start (1-min load {load_start:.2f}): other work "
            "shared the CPUs, so these ratios are not publishable; rerun on an idle machine"
        )
    print(f"trainable values: {rows['plain'][0]['trainable_values']}")
    median = {m: statistics.median(r["seconds_per_step"] for r in rows[m]) for m in MODES}
    print("\n| mode | median s/step | min s/step | spread (max/min) | vs no DP | peak RSS MiB |")
    print("|---|---|---|---|---|---|")
    for mode in MODES:
        times = [r["seconds_per_step"] for r in rows[mode]]
        rss = max(r["peak_rss_mib"] for r in rows[mode])
        print(
            f"| {mode} | {median[mode]:.2f} | {min(times):.2f} | {max(times) / min(times):.2f} | "
            f"{median[mode] / median['plain']:.2f}x | {rss:.0f} |"
        )
    print("\n| DP mode | secure noise + sampling s/step | share of the DP step | "
          "torch.normal s/step (old PRNG) |")  # fmt: skip
    print("|---|---|---|---|")
    for mode in MODES[1:]:
        secure = statistics.median(r["secure_randomness_seconds"] for r in rows[mode])
        plain = statistics.median(r["torch_normal_seconds"] for r in rows[mode])
        print(f"| {mode} | {secure:.4f} | {secure / median[mode]:.1%} | {plain:.4f} |")


if __name__ == "__main__":
    main()
