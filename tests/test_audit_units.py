"""Pure parts of the audits: the one-run ε lower bound, the HE security table, Poisson test."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audits.canary_bound import epsilon_lower_bound, p_value
from audits.check_encryption import fingerprint, security_ok
from audits.check_hazards import poisson_z
from audits.groups import ALLOWED_GROUPS, allowed_groups, tensor_group
from audits.result import CheckResult, verdict

pytestmark = pytest.mark.unit


def test_p_value_pure_dp_is_the_binomial_tail():
    # δ = 0: Theorem 3.1, P[Binomial(r, e^ε/(1+e^ε)) ≥ v]
    q = 1 / (1 + math.exp(-1.0))
    assert p_value(100, 10, 10, 1.0, 0.0) == pytest.approx(q**10)
    assert p_value(100, 10, 0, 1.0, 0.0) == 1.0


def test_all_correct_guesses_give_the_closed_form_bound():
    # r = v = 100 at δ = 0: q^100 = 0.05 -> q = 0.05^(1/100), ε = log(q / (1 - q)) ≈ 3.49
    q = 0.05 ** (1 / 100)
    expected = math.log(q / (1 - q))
    assert epsilon_lower_bound(1000, 100, 100, delta=0.0) == pytest.approx(expected, abs=1e-6)


def test_the_delta_term_only_loosens_the_bound():
    tight = epsilon_lower_bound(1000, 200, 180, delta=0.0)
    loose = epsilon_lower_bound(1000, 200, 180, delta=1e-5)
    assert 0 < loose <= tight
    # the δ term is 2·m·δ·α with α = max_i P[v−i ≤ W < v]/i: it grows with m·δ
    assert p_value(1000, 200, 180, 1.0, 1e-3) > p_value(1000, 200, 180, 1.0, 0.0)


def test_chance_level_guesses_certify_nothing():
    assert epsilon_lower_bound(1000, 500, 250, delta=1e-5) == 0.0
    assert epsilon_lower_bound(1000, 0, 0, delta=1e-5) == 0.0


@settings(max_examples=15, deadline=None)
@given(r=st.integers(1, 300), data=st.data())
def test_lower_bound_is_monotone_in_correct_guesses(r, data):
    v = data.draw(st.integers(0, r - 1))
    low = epsilon_lower_bound(1000, r, v, delta=1e-5)
    high = epsilon_lower_bound(1000, r, v + 1, delta=1e-5)
    assert 0 <= low <= high + 1e-9
    if low > 0:  # the bound is where the p-value crosses 5 %
        assert p_value(1000, r, v, low, 1e-5) < 0.05


def test_p_value_refuses_impossible_counts():
    with pytest.raises(ValueError):
        p_value(10, 5, 6, 1.0, 0.0)


@pytest.mark.parametrize(
    "n, bits, ok",
    [
        (4096, [60, 49], True),
        (4096, [60, 50], False),
        (8192, [60, 40, 40, 60], True),
        (2048, [30, 25], False),
        (1000, [20], False),
        (32768, [60] * 14, True),
    ],
)
def test_security_table(n, bits, ok):
    assert security_ok(n, bits)[0] is ok


def test_fingerprint_is_canonical():
    params = {"coeff_mod_bit_sizes": [60, 49], "poly_modulus_degree": 4096, "scale_bits": 40}
    same = dict(reversed(list(params.items())))
    assert fingerprint(params, 64, "ab") == fingerprint(same, 64, "ab")
    assert fingerprint(params, 64, "ab") != fingerprint(params, 65, "ab")


def test_poisson_z():
    assert poisson_z(1000, 1000, 0.1, 10) == 0.0
    assert abs(poisson_z(128 * 10, 480, 0.1, 10)) > 6  # fixed batches of 128 at n q = 48


def test_groups_are_restated_independently():
    assert tensor_group("encoder.layer.0.attention.self.query.lora_A.default.weight") == "A"
    assert tensor_group("encoder.x.lora_B.default.weight") == "B"
    assert tensor_group("head.classifier.weight") == "head"
    assert tensor_group("encoder.embeddings.word_embeddings.weight") == "other"
    assert tensor_group("encoder.x.query.vera_lambda_d_default") == "A"  # VeRA's A side
    assert tensor_group("encoder.x.query.vera_lambda_b_default") == "B"
    assert ALLOWED_GROUPS["fedsa"] == {"A"} and ALLOWED_GROUPS["local"] == set()
    assert not any("head" in g for g in ALLOWED_GROUPS.values())
    # the head leaves only a run configured to share it, and never a local run
    assert allowed_groups("fedit", "shared") == {"A", "B", "head"}
    assert allowed_groups("fedsa", None) == {"A"} and allowed_groups("local", "shared") == set()
    assert allowed_groups("fedsa", "everything") is None


def test_independent_of_the_sharing_policy_yet_in_agreement():
    from secure_fedsa.model.sharing import POLICIES, get_policy

    assert {m: set(p.shared) for m, p in POLICIES.items()} == {
        m: set(g) for m, g in ALLOWED_GROUPS.items()
    }
    for method in POLICIES:
        if method != "local":
            assert set(get_policy(method, "shared").shared) == allowed_groups(method, "shared")


def test_verdict_counts_errors_as_failures():
    ok, warned, err = CheckResult("a", ""), CheckResult("b", ""), CheckResult("c", "")
    warned.warn("x")
    err.error("could not read")
    assert verdict([ok]) == "pass"
    assert verdict([ok, warned]) == "warn"
    assert verdict([ok, warned, err]) == "fail"
    assert verdict([]) == "fail"


def test_an_undecided_check_makes_the_verdict_inconclusive_never_pass():
    ok, undecided, warned = CheckResult("a", "s"), CheckResult("b", "s"), CheckResult("c", "s")
    undecided.inconclusive("the test had no power")
    warned.warn("w")
    assert verdict([ok, undecided]) == "inconclusive"
    assert verdict([ok, undecided, warned]) == "warn"
    from audits.runner import _verdict_text

    assert _verdict_text("inconclusive", [ok, undecided]).startswith("INCONCLUSIVE: ")


def test_the_ledger_chain_is_recomputed_independently():
    """The audit's own hash matches the library's, and catches an edit the library would."""
    import json as _json
    import tempfile
    from pathlib import Path

    from audits.check_ledger import chain_problems
    from secure_fedsa.privacy.accounting import DPEvent
    from secure_fedsa.privacy.ledger import LedgerIdentity, PrivacyLedger

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.json"
        identity = LedgerIdentity.create(
            client_id="c", key_fingerprint=None, delta=1e-5, accountant="pld",
            dataset_size=1000, target_epsilon=8.0, noise_multiplier=1.0, clip=1.0,
        )  # fmt: skip
        ledger = PrivacyLedger.open(path, identity=identity)
        for r in (1, 2):
            ledger.record(r, DPEvent(1.0, 0.1, 5), clip=1.0, noise_source="os-csprng")
        doc = _json.loads(path.read_text())
    assert chain_problems(doc) == []
    doc["entries"][0]["steps"] = 4
    assert any("edited" in p for p in chain_problems(doc))
    del doc["entries"][0]
    assert any("does not follow" in p for p in chain_problems(doc))


# -- the canary test's ceiling, ε in context, message kinds, digests (issue 35) ------------------
def test_the_canary_ceiling_is_the_bound_of_all_guesses_right():
    from audits.canary_audit import GUESSES, certifiable_epsilon

    r = int(max(f_in + f_out for f_in, f_out in GUESSES) * 1000)
    per_k = 1 - 0.05 / len(GUESSES)
    alone = certifiable_epsilon(1000, delta=1e-5, analyses=("epsilon-delta",))["epsilon-delta"]
    assert alone == epsilon_lower_bound(1000, r, r, delta=1e-5, confidence=per_k)
    # the (ε, δ) analysis alone: the ceilings the guides quote, and no higher at any m
    assert round(alone, 1) == 4.6

    def steinke(m):
        return certifiable_epsilon(m, delta=1e-5, analyses=("epsilon-delta",))["epsilon-delta"]

    assert round(steinke(5000), 1) == 5.7
    assert steinke(20000) < steinke(10000) < 5.8


def test_the_vectorised_p_value_equals_the_loop():
    """p_value sums the window in the same order as the paper's loop."""
    from scipy import stats

    def looped(m, r, v, epsilon, delta):
        q = 1 / (1 + math.exp(-epsilon))
        beta = float(stats.binom.sf(v - 1, r, q))
        alpha, window = 0.0, 0.0
        for i in range(1, v + 1):
            window += float(stats.binom.pmf(v - i, r, q))
            alpha = max(alpha, window / i)
        return min(beta + alpha * delta * 2 * m, 1.0)

    for m, r, v, eps in ((1000, 100, 80, 1.0), (200, 50, 50, 3.0), (500, 20, 0, 0.5)):
        assert p_value(m, r, v, eps, 1e-5) == pytest.approx(looped(m, r, v, eps, 1e-5), rel=1e-12)


def test_membership_bounds_follow_the_testing_region():
    from audits.executive import max_accuracy, max_true_positive_rate

    # ε = 0, δ = 0: no test beats chance
    for alpha in (0.001, 0.1, 0.5):
        assert max_true_positive_rate(0.0, 0.0, alpha) == pytest.approx(alpha)
    assert max_accuracy(0.0, 0.0) == pytest.approx(0.5)
    # δ = 0: the balanced accuracy is e^ε / (1 + e^ε)
    assert max_accuracy(1.0, 0.0) == pytest.approx(math.e / (1 + math.e))
    assert max_accuracy(8.0, 1e-5) > 0.999
    # at small ε and FPR the first constraint binds: TPR = e^ε FPR + δ
    assert max_true_positive_rate(1.0, 1e-5, 0.001) == pytest.approx(math.e * 0.001 + 1e-5)
    # at large ε the second: TPR = 1 − e^−ε (1 − δ − FPR)
    expected = 1 - math.exp(-8.0) * (1 - 1e-5 - 0.01)
    assert max_true_positive_rate(8.0, 1e-5, 0.01) == pytest.approx(expected)


def test_epsilon_in_context_says_what_it_means_and_cites_it():
    from audits.executive import epsilon_in_context

    weak = epsilon_in_context(8.0, 1e-5)
    assert "2 981 times more likely" in weak["meaning"] and "replace-one" in weak["meaning"]
    assert "Dwork & Roth 2014" in weak["meaning"] and "Kairouz" in weak["attacker"]
    assert "worst-case bound is weak" in weak["reading"] and "Nasr et al. 2021" in weak["reading"]
    strong = epsilon_in_context(1.0, 1e-5)
    assert "weak" not in strong["reading"] and strong["max_accuracy"] < 0.75


def test_message_kinds_are_described_and_their_sizes_restated():
    from audits import messages
    from secure_fedsa.secagg.shamir import SHARE_BYTES

    assert set(messages.KINDS) == {"update", "secagg-keys", "secagg-shares", "secagg-survivors",
                                   "secagg-reveal", "report"}  # fmt: skip
    for about in messages.KINDS.values():
        assert {"name", "short", "carries", "to", "form", "why_safe"} <= set(about)
    # independent of the code under audit, yet in agreement with it
    assert messages.SHARE_BYTES == SHARE_BYTES
    assert messages.ADVERT_BYTES == 128 and messages.SEALED_SHARE_BYTES == 94
    assert messages.describe("telemetry")["why_safe"].startswith("not established")


def test_messages_are_summarised_per_kind_and_round():
    from audits.messages import summary

    def row(kind, number, size, form="plaintext"):
        return {"kind": kind, "round": number, "bytes": size, "form": form}

    records = {
        "a": [row("update", 1, 100, "ciphertext"), row("secagg-keys", 1, 128),
              row("update", 2, 100, "ciphertext"), row("secagg-keys", 2, 128),
              row("update", 3, 90, "ciphertext")],
        "b": [row("update", 1, 100, "ciphertext"), row("update", 2, 100, "ciphertext")],
    }  # fmt: skip
    got = summary(records)
    assert [(r["kind"], r["rounds"], r["messages_per_round"], r["bytes_each"]) for r in got] == [
        ("secagg-keys", [1, 2], 1, [128]),
        ("update", [1, 2], 2, [100]),  # rounds 1 and 2 alike: one row
        ("update", [3, 3], 1, [90]),
    ]
    assert got[1]["bytes_total"] == 400 and got[1]["forms"] == ["ciphertext"]


def test_a_digest_must_look_like_one():
    import hashlib

    from audits.check_egress import EMPTY_DIGEST, digest_problem

    assert digest_problem(hashlib.sha256(b"hello").hexdigest(), 5) is None
    assert "not a SHA-256" in digest_problem("0" * 63, 5)
    assert "not a SHA-256" in digest_problem("AB" * 32, 5)  # upper case is not what is written
    assert "placeholder" in digest_problem("0" * 64, 5)
    assert "placeholder" in digest_problem("0123" * 16, 5)
    assert "empty message" in digest_problem(EMPTY_DIGEST, 5)
    assert digest_problem(EMPTY_DIGEST, 0) is None


def test_protocol_message_sizes_follow_their_content():
    from audits.check_egress import size_problem

    assert size_problem("secagg-keys", 128, 3) is None
    assert "128 bytes" in size_problem("secagg-keys", 129, 3)
    assert size_problem("secagg-shares", 3 * 94, 3) is None
    assert size_problem("secagg-shares", 4 * 94, 3) is not None  # more peers than clients
    assert size_problem("secagg-reveal", 2 * 33, 3) is None
    assert size_problem("secagg-reveal", 2 * 33 + 1, 3) is not None


def test_the_manifest_hash_is_restated_independently_yet_in_agreement():
    from audits.check_config import manifest_digest
    from secure_fedsa.model.sharing import Manifest

    entries = (("encoder.layer.0.q.lora_A.default.weight", (8, 384)), ("head.w", (2,)))
    manifest = Manifest(entries)
    assert manifest_digest(manifest.to_list()) == manifest.digest
