"""A server that lies (issue 33), played through the round engine of the in-process transport,
with the real crypto: each attack rides on the engine's own messages, rewritten in transit.

1. A roster, signed with the federation's real server key, that swaps every peer's key for the
   server's own: the site refuses it before it advertises anything.
2. Different survivor sets told to different clients: the client shown the other set refuses to
   reveal, and no client reveals both kinds of share for V.
3. A round weaker than the site's pinned policy: refused before training, the ledger unchanged.
4. A signed client that multiplies its update by 4096 instead of its roster weight (what claiming
   weight 4096 has become: no weight is sent, the divisor is the roster's): every honest client
   rejects the aggregate (the drift bound), and the server's files say only that it was rejected
   (P6).

5. The drift bound ratchets: a client that steers the average to a poison at 1.8 rounds' change
   from the initial values, every round, is refused in rounds 1, 2 and 3 by every honest client,
   which stays in step and trains every round (the bound it replaced, grown from the initial
   values, loads round 3's aggregate). A site whose aggregate never arrived sits the next round
   out, judges that round's aggregate with its own wider bound, and is back in step after it.

Each has its power check: with the protection disabled on purpose the attack gets through.
"""

from __future__ import annotations

import contextlib
import json

import numpy as np
import pytest
from tiny_runs import TINY_DP

from secure_fedsa.config import RunConfig
from secure_fedsa.crypto.signing import Roster, SigningKey
from secure_fedsa.engine import messages as m
from secure_fedsa.engine.aggregation import ServerRound, signed_roster
from secure_fedsa.errors import CryptoError
from secure_fedsa.secagg.protocol import Reveal
from secure_fedsa.transports import inprocess
from secure_fedsa.transports.federation import run_federation

pytestmark = pytest.mark.integration

CONFIG = {**TINY_DP, "num_clients": 4, "max_examples": 1200, "rounds": 1}
V = "client-3"


def _rewriting(monkeypatch, rewrite) -> list[tuple[str, object]]:  # noqa: ANN001
    """Every request is passed through ``rewrite(address, request)`` (the lying server) before
    it reaches the site; returns every (address, reply) delivered."""
    real = inprocess.InProcessTransport.deliver
    replies: list[tuple[str, object]] = []

    def deliver(self, address, request):  # noqa: ANN001
        reply = real(self, address, rewrite(address, request))
        replies.append((address, reply))
        return reply

    monkeypatch.setattr(inprocess.InProcessTransport, "deliver", deliver)
    return replies


def _ledger_entries(run_dir) -> dict[str, int]:
    out = {}
    for cid in (f"client-{i}" for i in range(CONFIG["num_clients"])):
        path = run_dir / "clients" / cid / "privacy_ledger.json"
        out[cid] = len(json.loads(path.read_text())["entries"]) if path.exists() else 0
    return out


# --------------------------------------------------------------------------- 1. the roster
def test_a_server_signed_roster_that_swaps_peers_keys_is_refused_by_the_site(tmp_path, monkeypatch):
    real = ServerRound.keys_request

    def swapped(self, last_applied=0):  # noqa: ANN001
        honest = self.keys.roster
        own = SigningKey.generate("server-in-disguise").public_bytes
        keys = {c: own for c in honest.clients}
        roster = Roster(keys, honest.server, weights=honest.weights)
        return m.KeysRequest(
            self.number, self.session, *signed_roster(roster, self.keys.identity.key), last_applied
        )

    monkeypatch.setattr(ServerRound, "keys_request", swapped)
    with pytest.raises(CryptoError, match="substitutes peers' keys|pins"):
        run_federation(RunConfig(**CONFIG), tmp_path / "run")
    monkeypatch.setattr(ServerRound, "keys_request", real)


# --------------------------------------------------------------------------- 2. dropout claims
def test_different_survivor_sets_get_no_reveal_that_unmasks_v(tmp_path, monkeypatch):
    """Every client's update arrived. The server tells client-2 "V dropped" (so client-2 would
    reveal V's mask-key share) and the others "V present" (its self-mask seed share)."""

    def lie(address, request):  # noqa: ANN001
        if address == "client-2" and isinstance(request, m.SurvivorsRequest | m.RevealRequest):
            present = tuple(c for c in request.present if c != V)
            fields = {"present": present, "dropped": (*request.dropped, V)}
            return type(request)(**{**request.__dict__, **fields})
        return request

    replies = _rewriting(monkeypatch, lie)
    with pytest.raises(CryptoError, match="signed the survivor set|did not sign"):
        run_federation(RunConfig(**CONFIG), tmp_path / "run")
    reveals = [r for _, r in replies if isinstance(r, Reveal)]
    b_of_v = [r.client for r in reveals if V in r.b_shares]
    s_of_v = [r.client for r in reveals if V in r.s_shares]
    assert not s_of_v  # nobody revealed V's mask key: client-2 refused
    assert len(b_of_v) < 3  # fewer than t shares of V's seed either (the run stopped)
    signatures = [(a, r) for a, r in replies if isinstance(r, m.SurvivorSignature)]
    assert {a for a, _ in signatures} == {f"client-{i}" for i in range(4)}


def test_without_the_consistency_check_the_split_view_reveals_both_of_vs_secrets(
    tmp_path, monkeypatch
):
    """Power check: with reveal believing whatever sets it is sent (the check disabled), the
    same lie gets V's mask-key share from client-2 next to seed shares from the others."""
    from secure_fedsa.secagg import protocol as secagg

    monkeypatch.setattr(secagg, "consistency_problem", lambda *a, **k: None)
    real_reveal = secagg.MaskingClient.reveal

    def trusting(self, received, *, present, dropped, signatures):  # noqa: ANN001
        self._signed = secagg.survivors_digest(self.session, self.round, present, dropped)
        return real_reveal(self, received, present=present, dropped=dropped,
                           signatures=signatures)  # fmt: skip

    monkeypatch.setattr(secagg.MaskingClient, "reveal", trusting)

    def lie(address, request):  # noqa: ANN001
        if address == "client-2" and isinstance(request, m.RevealRequest):
            present = tuple(c for c in request.present if c != V)
            dropped = (*request.dropped, V)
            return m.RevealRequest(request.round, request.session, present, dropped,
                                   request.shares, request.signatures)  # fmt: skip
        return request

    replies = _rewriting(monkeypatch, lie)
    with contextlib.suppress(Exception):  # the unmasking may fail; the reveals are what counts
        run_federation(RunConfig(**CONFIG), tmp_path / "run")
    reveals = [r for _, r in replies if isinstance(r, Reveal)]
    assert any(V in r.s_shares for r in reveals)
    assert any(V in r.b_shares for r in reveals)


# --------------------------------------------------------------------------- 3. site policy
def test_a_round_weaker_than_the_sites_policy_is_refused_before_training(tmp_path, monkeypatch):
    """Each site pins masking on (as a Flower site does by default); the run asks for none:
    every site refuses before any DP step, and no ledger records a thing."""
    from secure_fedsa.secagg.site_policy import PinnedPolicy
    from secure_fedsa.transports import federation

    monkeypatch.setattr(federation, "site_policy_for", lambda config: PinnedPolicy())
    run_dir = tmp_path / "run"
    run_federation(RunConfig(**{**CONFIG, "masking": False}), run_dir)
    (record,) = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    statuses = {c: e["status"] for c, e in record["clients"].items()}
    assert set(statuses.values()) == {m.REFUSED}, statuses
    assert all("masking off" in e["reason"] for e in record["clients"].values())
    assert set(_ledger_entries(run_dir).values()) == {0}
    assert "aggregate" not in record or record["aggregate"].get("status") != "applied"


def test_power_check_the_same_round_trains_when_the_site_pins_nothing(tmp_path):
    run_dir = tmp_path / "run"
    run_federation(RunConfig(**{**CONFIG, "masking": False}), run_dir)
    assert set(_ledger_entries(run_dir).values()) == {1}


# --------------------------------------------------------------------------- 4. weight 4096
def _steering(monkeypatch, weight: float) -> None:
    """client-0 encrypts an update that moves every value by ~90 % of the drift bound,
    multiplied by ``weight`` instead of its roster weight."""
    from secure_fedsa.site import client as client_module

    real = client_module.encode_update

    def encode(codec, values, claimed, **kwargs):  # noqa: ANN001
        if kwargs["key"].owner == "client-0":
            values = np.asarray(values) + 1e-4 * np.sign(np.arange(values.size) % 2 - 0.5)
            claimed = weight
        return real(codec, values, claimed, **kwargs)

    monkeypatch.setattr(client_module, "encode_update", encode)


def _strings(value) -> list[str]:  # noqa: ANN001
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_a_client_claiming_weight_4096_is_rejected_by_every_honest_client(tmp_path, monkeypatch):
    _steering(monkeypatch, 4096.0)
    run_dir = tmp_path / "run"
    run_federation(RunConfig(**CONFIG), run_dir)
    (record,) = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert record["aggregate"]["status"] == "rejected"
    honest = [f"client-{i}" for i in range(1, 4)]
    assert set(honest) <= set(record["aggregate"]["rejected_by"])
    for cid in honest:  # the full reason stays in the client's own file
        notes = [json.loads(x) for x in (run_dir / "clients" / cid / "aggregates.jsonl").open()]
        assert notes[-1]["status"] == "rejected"
        assert any("moved" in p for p in notes[-1]["problems"])  # the drift bound
    # P6: no text the server side keeps quotes a decrypted number (its timings and byte counts
    # are numbers, and may contain the digits 4096 by chance: only strings are searched)
    server_side = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    server_side.append(json.loads((run_dir / "summary.json").read_text()))
    texts = [t for record in server_side for t in _strings(record)]
    assert texts and not any("4096" in t or "moved" in t for t in texts)


def test_power_check_the_honest_weight_is_applied(tmp_path, monkeypatch):
    """The roster fixes each client's public weight; the aggregate names its contributors and
    every client divides by their roster weights: applied by all."""
    from secure_fedsa.site.client import WEIGHT_UNIT

    run_dir = tmp_path / "run"
    run_federation(RunConfig(**CONFIG), run_dir)
    setup = json.loads((run_dir / "setup.json").read_text())
    roster = json.loads((run_dir / "keys" / "roster.json").read_text())
    assert roster["weights"] == {
        c: setup["clients"][c]["train"] / WEIGHT_UNIT for c in setup["clients"]
    }
    (record,) = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert record["aggregate"]["status"] == "applied"


# --------------------------------------------------------------------------- 5. the ratchet
RATCHET = {**TINY_DP, "num_clients": 3, "max_examples": 900, "rounds": 3, "masking": False}
HONEST = ["client-1", "client-2"]


def _metrics(run_dir) -> list[dict]:  # noqa: ANN001
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _shared(run_dir, cid: str) -> np.ndarray:  # noqa: ANN001
    import torch

    from secure_fedsa.model.sharing import Manifest, flatten

    setup = json.loads((run_dir / "setup.json").read_text())
    manifest = Manifest(tuple((e["name"], tuple(e["shape"])) for e in setup["manifest"]))
    saved = torch.load(run_dir / "clients" / cid / "state.pt", weights_only=True)
    return flatten(saved["state"], manifest)


def test_a_poison_refused_in_round_1_is_refused_in_round_3(tmp_path, monkeypatch):
    """client-0 holds a real key and its true roster weight. Every round it sends
    X = W · P − (W − w_0) · H in place of w_0 · A_0, with H what it holds and P = initial +
    1.8 · B · (±1): the average lands within (2/3) · B of P, more than B from what anyone holds
    and less than 3 · B from the initial values. Every honest client refuses it in every round
    (the drift bound, measured from what it holds) and stays in step: it trains every round
    and ends with the initial shared values. Power check: the bound the ratchet replaced (three
    rounds' change from the initial values) loads round 3's aggregate."""
    from secure_fedsa.model.sharing import unflatten
    from secure_fedsa.site import client as client_module
    from secure_fedsa.site.aggregate_check import Bounds, round_change_bound

    run_dir = tmp_path / "run"
    bound = round_change_bound(lr=RunConfig(**RATCHET).lr, steps=RATCHET["local_steps"])
    real_update, real_check = client_module.Client.make_update, client_module.aggregate_problems
    initial: dict[str, np.ndarray] = {}
    judged: list[dict] = []

    def make_update(self, round_number, session, mask=None, *, weight):  # noqa: ANN001
        if self.client_id == "client-0":
            held = initial.setdefault("values", self.start_shared.copy())
            roster = json.loads((run_dir / "keys" / "roster.json").read_text())
            total = sum(roster["weights"].values())
            pattern = np.where(np.arange(held.size) % 2 == 0, 1.0, -1.0)
            poison = held + 1.8 * bound * pattern
            steering = (total * poison - (total - weight) * self.start_shared) / weight
            self.trained = {**self.trained, **unflatten(steering, self.manifest)}
        return real_update(self, round_number, session, mask, weight=weight)

    def spy(total, ids, count, **kwargs):  # noqa: ANN001, ANN003
        judged.append({"total": total, "ids": ids, "count": count, **kwargs})
        return real_check(total, ids, count, **kwargs)

    monkeypatch.setattr(client_module.Client, "make_update", make_update)
    monkeypatch.setattr(client_module, "aggregate_problems", spy)
    run_federation(RunConfig(**RATCHET), run_dir)

    records = _metrics(run_dir)
    assert [r["aggregate"]["status"] for r in records] == ["rejected"] * 3
    for record in records:
        assert set(HONEST) <= set(record["aggregate"]["rejected_by"])
        assert all(record["clients"][c]["status"] == m.TRAINED for c in HONEST)  # in step
    for cid in HONEST:
        notes = [json.loads(x) for x in (run_dir / "clients" / cid / "aggregates.jsonl").open()]
        assert [n["status"] for n in notes] == ["rejected"] * 3
        assert all("moved" in n["problems"][0] for n in notes)
        assert np.array_equal(_shared(run_dir, cid), initial["values"])
    # every check was made with one round's bound from the initial values (what they held)
    assert len(judged) == 9 and all(j["rounds"] == 1 for j in judged)
    assert all(np.array_equal(j["reference"], initial["values"]) for j in judged)
    # power check: round 3's aggregate, judged by the bound grown from the initial values
    last = judged[-1]
    grown = {**last, "reference": initial["values"], "rounds": 3, "bounds": Bounds(bound)}
    assert real_check(grown.pop("total"), grown.pop("ids"), grown.pop("count"), **grown) == []


def test_a_site_that_missed_an_aggregate_sits_one_round_out_then_catches_up(tmp_path, monkeypatch):
    """client-2's evaluate of round 1 never arrives: it holds the initial values while the
    others load round 1's aggregate. In round 2 it does not train (an update from tensors a
    round old could push an honest aggregate past the bound of the sites in step); it judges
    round 2's aggregate with two rounds' bound and loads it, and in round 3 it trains again from
    what everyone holds. No aggregate is refused by anyone."""
    real = inprocess.InProcessTransport.deliver

    def deliver(self, address, request):  # noqa: ANN001
        if address == "client-2" and isinstance(request, m.EvaluateRequest) and request.round == 1:
            raise inprocess.Lost("lost in transit (simulated dropout)")
        return real(self, address, request)

    monkeypatch.setattr(inprocess.InProcessTransport, "deliver", deliver)
    run_dir = tmp_path / "run"
    run_federation(RunConfig(**RATCHET), run_dir)
    round1, round2, round3 = _metrics(run_dir)
    assert round1["dropouts"] == [
        {"client": "client-2", "phase": "evaluate", "reason": "lost in transit (simulated dropout)"}
    ]
    assert round2["clients"]["client-2"]["status"] == m.BEHIND
    assert "catches up" in round2["clients"]["client-2"]["reason"]
    assert round2["clients"]["client-2"]["aggregate"] == m.APPLIED
    assert round3["clients"]["client-2"]["status"] == m.TRAINED
    for record in (round1, round2, round3):
        assert record["aggregate"]["status"] == "applied", record["aggregate"]
    ledger = json.loads((run_dir / "clients" / "client-2" / "privacy_ledger.json").read_text())
    assert [e["round"] for e in ledger["entries"]] == [1, 3]  # nothing spent in round 2
    finals = [_shared(run_dir, c) for c in ("client-0", "client-1", "client-2")]
    assert all(np.array_equal(f, finals[0]) for f in finals)  # in step again
