"""Seconds per round and peak memory of an in-process federation as the number of clients grows.

For each number of clients (10, 30 and 100 by default), one in-process run on Rotten Tomatoes
with log-normal client sizes and 100 test records per client, DP, CKKS and pairwise masking on,
a few rounds of a few local steps: the seconds each phase took (set-up, each round, the final
evaluation) and the process's peak resident memory (``resource.getrusage``). Each size runs in a
process of its own, so each peak is that run's alone; the table puts them side by side, with what
the clients hold (records, the frozen layers' cached hidden states, adapter tensors) so that
memory can be read against data.

    OMP_NUM_THREADS=1 python benchmarks/clients_scaling.py [--clients 10 30 100] [--rounds 2]
        [--local-steps 2] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 2**20


def _tensor_bytes(value) -> int:  # noqa: ANN001
    import torch

    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return getattr(value, "nbytes", 0)


def _held(clients: dict) -> dict[str, float]:
    """What the clients hold, in MB: their records (token ids and masks); the hidden states the
    frozen-layer cache keeps (once per distinct record) and what it would keep per client (as
    each client's datasets ask for them); their adapter tensors (state, trained, the round's
    start and what the last aggregate was judged against, counted once per distinct array)."""
    from secure_fedsa.model.frozen_prefix import CachedData

    records = per_client = adapters = 0
    stores, arrays, datasets = {}, {}, {}
    for client in clients.values():
        for split in (client.data.train, client.data.test, client.data.validation):
            records += _tensor_bytes(list(split.tensors))
        stores[id(client.prefix.store)] = client.prefix.store
        for cached in client.prefix._cache.values():  # (a shared prefix lists every client's)
            if isinstance(cached, CachedData):
                datasets[id(cached)] = cached
        adapters += _tensor_bytes(client.state)
        if client.trained is not client.state:
            adapters += _tensor_bytes(client.trained)
        judged = () if client.judged_against is None else (client.judged_against[1],)
        for array in (client.start_shared, *judged):
            arrays[id(array)] = array
    adapters += sum(a.nbytes for a in arrays.values())
    for cached in datasets.values():
        rows = cached.tensors[0]
        per_client += int(rows.done.sum()) * rows.shape[1] * rows.shape[2] * 4
    return {
        "records_mb": records / MB,
        "hidden_cache_mb": sum(s.nbytes for s in stores.values()) / MB,
        "hidden_per_client_mb": per_client / MB,
        "adapters_mb": adapters / MB,
        "frozen_prefix_objects": len(stores),
    }


def child(args: argparse.Namespace) -> dict:
    """One run with ``args.child`` clients; returns its timings and peak memory."""
    from secure_fedsa.config import RunConfig
    from secure_fedsa.transports.federation import Federation, Progress

    n = args.child
    config = RunConfig(
        dataset="rotten_tomatoes",
        num_clients=n,
        max_clients=max(64, n),
        client_sizes="lognormal",
        test_examples=100,
        rounds=args.rounds,
        local_steps=args.local_steps,
        batch_size=args.batch_size,
        physical_batch_size=args.batch_size,
        eval_examples_per_round=args.eval_examples,
        epsilon=8.0,
        seed=0,
    )
    marks: dict[str, float] = {}
    rounds: list[float] = []

    def started(number: int, total: int) -> None:
        marks["round"] = time.perf_counter()

    def done(number: int) -> None:
        rounds.append(time.perf_counter() - marks["round"])

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        fed = Federation(
            config,
            Path(tmp) / "run",
            progress=Progress(round_started=started, round_done=done),
        )
        setup = time.perf_counter() - start
        after_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        real_finish = fed.finish

        def finish(seconds: float) -> dict:
            marks["finish"] = time.perf_counter()
            return real_finish(seconds)

        fed.finish = finish  # type: ignore[method-assign]
        summary = fed.run()
        final = time.perf_counter() - marks["finish"]
        held = _held(fed.clients)
    train = sorted(len(c.data.train) for c in fed.clients.values())
    return {
        "clients": n,
        "setup_s": setup,
        "round_s": rounds,
        "final_s": final,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_after_setup_mb": after_setup,
        "train_records": sum(train),
        "train_min_median_max": [train[0], train[len(train) // 2], train[-1]],
        "rounds_completed": summary["rounds_completed"],
        **held,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 30, 100])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--local-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--eval-examples", type=int, default=20)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    common = [
        f"--rounds={args.rounds}",
        f"--local-steps={args.local_steps}",
        f"--batch-size={args.batch_size}",
        f"--eval-examples={args.eval_examples}",
    ]
    rows = []
    for n in args.clients:
        command = [sys.executable, __file__, f"--child={n}", *common]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{n} clients done", file=sys.stderr)
    print(
        "| clients | train records (min/median/max) | set-up s | s per round | final eval s "
        "| peak RSS MB | RSS after set-up MB | hidden states kept MB (as asked per client) "
        "| records MB | adapters MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        low, mid, high = r["train_min_median_max"]
        per_round = sum(r["round_s"]) / max(len(r["round_s"]), 1)
        print(
            f"| {r['clients']} | {r['train_records']} ({low}/{mid}/{high}) | {r['setup_s']:.1f} "
            f"| {per_round:.1f} | {r['final_s']:.1f} | {r['peak_rss_mb']:.0f} "
            f"| {r['rss_after_setup_mb']:.0f} | {r['hidden_cache_mb']:.0f} "
            f"({r['hidden_per_client_mb']:.0f}) "
            f"| {r['records_mb']:.1f} | {r['adapters_mb']:.1f} |"
        )
    print(
        "\ncommand: OMP_NUM_THREADS="
        + os.environ.get("OMP_NUM_THREADS", "")
        + " python benchmarks/clients_scaling.py "
        + shlex.join([f"--clients={' '.join(map(str, args.clients))}", *common])
    )
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
