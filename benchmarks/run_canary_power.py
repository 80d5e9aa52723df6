"""The run-level canary audit's power and false-positive rate, and the utility cost of canaries.

``power`` (default): tiny federations (tests/tiny_runs.py TINY_AUDIT: the encoder cut to one layer,
LoRA rank 16, 2 clients of about 80 training records, q = 1, 2 rounds of 2 steps, the default
10 000 canaries per client)
trained in this process with each privacy bug of tests/planted_bugs.py planted ``--bug-repeats``
times per ε, and ``--honest`` honest runs per ε; each is audited by ``audits.runner.audit_run``
and the run-canary-audit check's result, both analyses' ε lower bounds and ceilings are kept per
client. Honest runs give
the false-positive rate (a client's FAIL counts as a false positive).

``utility``: the same small federation with and without canaries (same seed, so the same data,
split and initialisation; the DP noise comes from the OS CSPRNG and differs between runs), each
client's accuracy on its own test split.

    python benchmarks/run_canary_power.py power --honest 20 --bug-repeats 5 --no-encryption \
        --out benchmarks/results/run-canary/power.json
    python benchmarks/run_canary_power.py utility --repeats 2 --no-encryption \
        --out benchmarks/results/run-canary/utility.json

Results are written after every run, so an interrupted benchmark keeps what it measured.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# this checkout's code and test helpers, whatever else is installed
sys.path[:0] = [str(Path(__file__).resolve().parent.parent / d) for d in ("", "tests")]

from planted_bugs import PLANTED  # noqa: E402
from tiny_runs import TINY_AUDIT  # noqa: E402

BUGS = ("sigma/7", "sigma/2", "no-clip", "accountant/2")
# the utility comparison: large enough that accuracy means something (about 1 200 training and
# 300 test records per client), small enough for a loaded 2-core machine; LoRA rank 16 gives the
# shared A tensors 12 288 values, as many as the default job's, so that the default 10 000
# canaries take the same share of them
UTILITY = dict(
    num_layers=1,
    lora_r=16,
    max_examples=3000,
    num_clients=2,
    partition="iid",
    rounds=3,
    local_steps=8,
    batch_size=256,
    physical_batch_size=128,
    max_length=32,
    eval_examples_per_round=50,
    seed=0,
)


def _train(config: Any, run_dir: Path, planted: str) -> float:
    from secure_fedsa.transports.federation import Progress, run_federation

    started = time.time()
    with PLANTED[planted]():
        run_federation(config, run_dir, Progress(message=lambda _: None))
    return time.time() - started


def _audited(run_dir: Path) -> dict[str, Any]:
    from audits.runner import audit_run

    started = time.time()
    report = audit_run(run_dir)
    check = next(c for c in report["checks"] if c["name"] == "run-canary-audit")
    seconds = round(time.time() - started, 2)
    clients = {
        cid: {k: v for k, v in entry.items() if k != "tried"}
        for cid, entry in check["evidence"].get("clients", {}).items()
    }
    for cid, entry in clients.items():
        entry["released_updates_lower_bound"] = _released_bound(run_dir / "clients" / cid, entry)
    return {"result": check["result"], "clients": clients, "audit_seconds": seconds}


def _released_bound(directory: Path, entry: dict[str, Any]) -> float:
    """For comparison only: the bound the same guesses give when the canaries are scored on the
    client's released (post-AdamW) updates instead of the noisy sums."""
    from audits.canary_audit import audit_scores
    from audits.check_run_canary import ANALYSES, canary_scores

    doc = json.loads((directory / "canaries.json").read_text())
    delta = json.loads((directory / "privacy_ledger.json").read_text())["identity"]["delta"]
    releases = [r["update"] for r in sorted(doc["releases"], key=lambda r: r["round"])]
    scores = canary_scores(releases, len(doc["bits"]))
    fractions = [tuple(f) for f in entry["guesses"]]
    audit = audit_scores(scores, doc["bits"], delta=delta, fractions=fractions, analyses=ANALYSES)
    return audit.lower_bound


def _save(path: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "runs": rows}, indent=1) + "\n")


def power(args: argparse.Namespace) -> None:
    from secure_fedsa.config import RunConfig

    plan = [(bug, eps) for eps in args.epsilons for bug in BUGS for _ in range(args.bug_repeats)]
    plan += [("honest", eps) for eps in args.epsilons for _ in range(args.honest)]
    rows: list[dict[str, Any]] = []
    meta = {"config": TINY_AUDIT, "encryption": not args.no_encryption, "load": os.getloadavg()}
    for number, (bug, eps) in enumerate(plan):
        config = RunConfig(
            **{**TINY_AUDIT, "epsilon": eps, "seed": number, "encryption": not args.no_encryption}
        )
        with tempfile.TemporaryDirectory() as tmp:
            seconds = _train(config, Path(tmp) / "run", bug)
            audit = _audited(Path(tmp) / "run")
        rows.append(
            {"planted": bug, "epsilon": eps, "seed": number, "train_seconds": round(seconds, 1)}
            | audit
        )
        print(json.dumps(rows[-1]), flush=True)
        _save(args.out, rows, meta)


def utility(args: argparse.Namespace) -> None:
    from secure_fedsa.config import RunConfig

    rows: list[dict[str, Any]] = []
    meta = {"config": UTILITY, "encryption": not args.no_encryption}
    for repeat in range(args.repeats):
        for eps in args.epsilons:
            for canaries in (0, args.canaries):
                config = RunConfig(
                    **UTILITY,
                    epsilon=eps,
                    canaries=canaries,
                    encryption=not args.no_encryption,
                )
                with tempfile.TemporaryDirectory() as tmp:
                    run = Path(tmp) / "run"
                    seconds = _train(config, run, "honest")
                    accuracy = {
                        d.name: json.loads((d / "evaluation.json").read_text())["accuracy"]
                        for d in sorted((run / "clients").iterdir())
                    }
                rows.append(
                    {
                        "repeat": repeat,
                        "epsilon": eps,
                        "canaries": canaries,
                        "accuracy": accuracy,
                        "train_seconds": round(seconds, 1),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
                _save(args.out, rows, meta)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("power", "utility"))
    parser.add_argument("--honest", type=int, default=20, help="honest runs per ε (power)")
    parser.add_argument(
        "--bug-repeats", type=int, default=1, help="runs per planted bug and ε (power)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs per ε (utility)")
    parser.add_argument("--canaries", type=int, default=TINY_AUDIT["canaries"])
    parser.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 8.0])
    parser.add_argument("--no-encryption", action="store_true", help="plaintext updates (faster)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    {"power": power, "utility": utility}[args.mode](args)


if __name__ == "__main__":
    main()
