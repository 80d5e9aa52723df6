"""P4 against someone who has every file of the run: the DP noise cannot be predicted from them.

Written as the attack it guards against: take a finished run directory, derive every seed its
files offer (config.json's seed, the per-client derivations, the generator state kept in
state.pt), replay the client's round through the library's own code with each of them, and try to
reproduce what the client trained. Against the product (noise and Poisson sampling from the OS
CSPRNG) the replay must fail. The same attack run against a federation whose noise *is* derived
from the seed (the test-only source) must succeed, which shows the attack has the power to catch
the bug it is written for.
"""

from __future__ import annotations

import json

import pytest
import torch
from tiny_runs import TINY_DP

from secure_fedsa.config import RunConfig
from secure_fedsa.privacy.randomness import (
    OS_CSPRNG,
    OSRandom,
    SeededTestRandom,
    gaussian,
    poisson_indices,
    uniforms,
)
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration

TINY = {**TINY_DP, "rounds": 1}
# what "reproduced" means: float rounding, far below one noisy step (~1e-3 with AdamW)
PREDICTED = 1e-5


def _number(cid: str) -> int:
    return int(cid.rsplit("-", 1)[-1])


def _trained(run_dir, cid):
    return torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)["trained"]


def _distance(a: dict, b: dict) -> float:
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _seeds_from_files(run_dir, cid: str) -> dict[str, int]:
    """Every seed an attacker can read or derive from the run's files for this client."""
    config = json.loads((run_dir / "config.json").read_text())
    seed, number = config["seed"], _number(cid)
    saved = torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)
    kept = torch.Generator()
    kept.set_state(saved["generator"])  # the no-DP shuffling generator state.pt keeps
    return {
        "config seed": seed,
        "seed*1000+client (the old derivation)": seed * 1000 + number,
        "client number": number,
        "generator kept in state.pt": int(torch.randint(0, 2**31, (1,), generator=kept)),
    }


def replay_attack(victim, work) -> dict[str, float]:
    """Replay round 1 with each seed from the victim's files; distance to what it trained."""
    config = RunConfig.from_dict(_config_of(victim))
    results = {}
    for name in _seeds_from_files(victim, "client-0"):
        replay = work / name.split(" ")[0].replace("*", "x")

        def source(cid: str, name: str = name) -> SeededTestRandom:
            return SeededTestRandom(_seeds_from_files(victim, cid)[name])

        run_federation(config, replay, dp_randomness=source)
        results[name] = max(
            _distance(_trained(victim, cid), _trained(replay, cid)) for cid in ("client-0",)
        )
    return results


def _config_of(run_dir) -> dict:
    data = json.loads((run_dir / "config.json").read_text())
    data.pop("secure_fedsa", None)
    return data


@pytest.fixture(scope="module")
def victims(tmp_path_factory, shared_run):
    """Two production runs with identical flags and seed (the first is the session's shared run
    of this configuration), and one made with seed-derived noise."""
    root = tmp_path_factory.mktemp("victims")
    config = RunConfig(**TINY)
    run_federation(config, root / "b")

    def bug(cid: str) -> SeededTestRandom:  # noise derived from the public seed
        return SeededTestRandom(config.seed * 1000 + _number(cid))

    run_federation(config, root / "seeded", dp_randomness=bug)
    return {"a": shared_run(config)[0], "b": root / "b", "seeded": root / "seeded"}


def test_noise_cannot_be_predicted_from_the_run_files(victims, tmp_path):
    distances = replay_attack(victims["a"], tmp_path)
    assert min(distances.values()) > 100 * PREDICTED, distances


def test_the_replay_attack_catches_seed_derived_noise(victims, tmp_path):
    distances = replay_attack(victims["seeded"], tmp_path)
    assert distances["seed*1000+client (the old derivation)"] < PREDICTED, distances


def test_two_runs_with_identical_flags_and_seed_differ(victims):
    a, b = victims["a"], victims["b"]
    assert _config_of(a) == _config_of(b)
    for cid in ("client-0", "client-1"):
        assert _distance(_trained(a, cid), _trained(b, cid)) > 100 * PREDICTED
    # what --seed governs is still reproducible: the data split and the initial model
    setup_a = json.loads((a / "setup.json").read_text())
    setup_b = json.loads((b / "setup.json").read_text())
    assert setup_a["clients"] == setup_b["clients"]
    for cid in ("client-0", "client-1"):
        counts = [
            json.loads((run / "clients" / cid / "evaluation.json").read_text())["label_counts"]
            for run in (a, b)
        ]
        assert counts[0] == counts[1]
    # and the accounting: the same ε from the same events
    summary_a = json.loads((a / "summary.json").read_text())
    summary_b = json.loads((b / "summary.json").read_text())
    assert (
        summary_a["privacy"]["client-0"]["history"] == summary_b["privacy"]["client-0"]["history"]
    )


def test_the_ledger_records_the_noise_source(victims):
    for run, expected in (("a", OS_CSPRNG), ("seeded", "seeded-test-only")):
        ledger = json.loads((victims[run] / "clients/client-0/privacy_ledger.json").read_text())
        assert {e["noise_source"] for e in ledger["entries"]} == {expected}


def test_no_file_of_the_run_holds_dp_randomness(victims):
    """Nothing written names an RNG state for noise or sampling (only the no-DP shuffler's)."""
    run = victims["a"]
    saved = torch.load(run / "clients/client-0/state.pt", weights_only=True)
    # "optimizer": AdamW's moments with --optimizer-state kept (computed from the noisy
    # gradients, so no source of the noise), None by default; "clamped": a count;
    # "train_seconds": how long its last round trained (private, like the loss in "stats");
    # "judged_round", "judged_against": the drift bound's ratchet (a round number, and the
    # shared tensors the last aggregate was checked against)
    assert set(saved) == {
        "state", "trained", "trained_round", "stats", "generator", "trained_entry", "start_shared",
        "clamped", "optimizer", "train_seconds", "judged_round", "judged_against",
    }  # fmt: skip
    assert saved["optimizer"] is None and isinstance(saved["clamped"], int)
    for path in run.rglob("*.json*"):
        text = path.read_text()
        assert "noise_seed" not in text and "rng_state" not in text


# --------------------------------------------------------------------------- the generator itself
def test_os_random_is_fresh_on_every_call():
    source = OSRandom()
    assert source.random_bytes(32) != source.random_bytes(32)
    a = gaussian(source, (1000,), 1.0)
    b = gaussian(source, (1000,), 1.0)
    assert not torch.equal(a, b)


def test_uniforms_are_in_the_open_unit_interval_with_53_bits():
    u = uniforms(OSRandom(), 200_000)
    assert u.dtype.name == "float64" and u.min() > 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005
    # many distinct low-order bits: not a float32 or a coarse grid
    assert len(set((u * 2**53).astype("int64") % 1024)) > 1000


def test_gaussian_noise_has_the_requested_law():
    from scipy import stats

    noise = gaussian(OSRandom(), (200_000,), 2.5, dtype=torch.float64).numpy()
    assert abs(noise.mean()) < 0.03
    assert abs(noise.std() - 2.5) < 0.02
    # Kolmogorov-Smirnov against N(0, 2.5²): a wrong law is rejected at this sample size
    assert stats.kstest(noise / 2.5, "norm").pvalue > 1e-4
    assert gaussian(OSRandom(), (3, 4), 0.0).abs().max() == 0


def test_poisson_sampling_has_the_requested_rate():
    n, q, draws = 5000, 0.04, 50
    sizes = [len(poisson_indices(OSRandom(), n, q)) for _ in range(draws)]
    mean, sd = n * q, (n * q * (1 - q)) ** 0.5
    assert abs(sum(sizes) / draws - mean) < 4 * sd / draws**0.5
    assert len(set(sizes)) > 5  # not a fixed batch size


def test_the_seeded_source_is_reproducible_and_says_what_it_is():
    a, b = SeededTestRandom(7), SeededTestRandom(7)
    assert a.random_bytes(64) == b.random_bytes(64)
    assert a.name == "seeded-test-only" and "seed" not in repr(OSRandom())
