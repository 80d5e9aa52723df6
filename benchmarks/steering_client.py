"""How much one key-holding client with its true roster weight can hurt the others (issue 33,
"say how much, measured"): the known limit of the drift bound, played as the attacker.

    python benchmarks/steering_client.py [--seeds 1,2] [--fractions 0.4,0.9] [--args '...']

Each seed runs the default job in this process (3 clients, DP and CKKS and masking on): honest,
and once per fraction f with client-0 steering. Every round client-0 trains honestly, then
sends, in place of w_0 · A_0, the vector X = W · T − (W − w_0) · H that puts the average near
T = H − f · B · sign(A_0 − H): its own honest step reversed and scaled to a fraction f of the
drift bound B (H: the shared tensors everyone in step holds; W: the roster's total weight). It
cannot see the others' updates, so some aggregates may overshoot the bound and be refused
(a refused round moves nobody, which is harm too). Prints, per seed, the honest clients' final
accuracy (their own evaluation.json) in both runs, how many aggregates were refused, and the
paired mean difference per fraction (with its 95 % t interval over seeds when there are several).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import tempfile
from pathlib import Path

import numpy as np

from secure_fedsa.app.sweep.stats import t_critical
from secure_fedsa.config import RunConfig
from secure_fedsa.model.sharing import flatten, unflatten
from secure_fedsa.site import client as client_module
from secure_fedsa.site.aggregate_check import round_change_bound
from secure_fedsa.transports.federation import Progress, run_federation

ATTACKER = "client-0"


def _config(seed: int, extra: list[str]) -> RunConfig:
    from secure_fedsa.app.cli import build_parser
    from secure_fedsa.options import config_from_args

    return config_from_args(build_parser().parse_args(["run", "--seed", str(seed), *extra]))


def _steer(run_dir: Path, fraction: float, bound: float):  # noqa: ANN202
    """client-0's make_update, steering (see the module's docstring)."""
    real = client_module.Client.make_update

    def make_update(self, round_number, session, mask=None, *, weight):  # noqa: ANN001, ANN202
        if self.client_id == ATTACKER:
            held = self.start_shared
            own = flatten(self.trained, self.manifest)
            roster = json.loads((run_dir / "keys" / "roster.json").read_text())
            total = sum(roster["weights"].values())
            target = held - fraction * bound * np.sign(own - held)
            steering = (total * target - (total - weight) * held) / weight
            self.trained = {**self.trained, **unflatten(steering, self.manifest)}
        return real(self, round_number, session, mask, weight=weight)

    return make_update


def _run(config: RunConfig, run_dir: Path, steer: float | None) -> dict:
    real = client_module.Client.make_update
    if steer is not None:
        bound = round_change_bound(lr=config.lr, steps=config.local_steps)
        client_module.Client.make_update = _steer(run_dir, steer, bound)
    try:
        run_federation(config, run_dir, Progress(message=lambda _: None))
    finally:
        client_module.Client.make_update = real
    metrics = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    refused = sum(1 for m in metrics if (m.get("aggregate") or {}).get("status") == "rejected")
    finals = {
        p.parent.name: json.loads(p.read_text())["accuracy"]
        for p in sorted(run_dir.glob("clients/*/evaluation.json"))
    }
    honest = [v for c, v in finals.items() if c != ATTACKER]
    return {"honest": statistics.fmean(honest), "refused": refused, "rounds": len(metrics)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--fractions", default="0.4,0.9", help="f: the shares of B steered")
    parser.add_argument("--args", default="", help="extra `secure-fedsa run` flags")
    args = parser.parse_args()
    extra = shlex.split(args.args)
    fractions = [float(f) for f in args.fractions.split(",")]
    diffs: dict[float, list[float]] = {f: [] for f in fractions}
    print("| seed | f | honest clients: honest run | with client-0 steering | refused aggregates |")
    print("|---|---|---|---|---|")
    for seed in (int(s) for s in args.seeds.split(",")):
        config = _config(seed, extra)
        with tempfile.TemporaryDirectory() as tmp:
            honest = _run(config, Path(tmp) / "honest", None)
            for f in fractions:
                steered = _run(config, Path(tmp) / f"steered-{f}", f)
                diffs[f].append(steered["honest"] - honest["honest"])
                print(f"| {seed} | {f:g} | {honest['honest']:.3f} | {steered['honest']:.3f} | "
                      f"{steered['refused']} of {steered['rounds']} |", flush=True)  # fmt: skip
    for f, values in diffs.items():
        mean = statistics.fmean(values)
        text = f"{100 * mean:+.1f} points"
        if len(values) > 1:
            half = t_critical(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
            text = f"{100 * mean:+.1f} ± {100 * half:.1f} points (95 % t)"
        print(
            f"f = {f:g}: steered − honest (honest clients' mean accuracy): {text}, "
            f"{len(values)} seed(s)"
        )


if __name__ == "__main__":
    main()
