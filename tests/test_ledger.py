"""The privacy ledger: survives restarts, refuses corrupt, edited or foreign files, never forgets.

Accounting is replace-one PLD (privacy/accounting.py); each ledger's head is anchored outside its
directory (privacy/anchor.py), so a rollback to an older copy or a rewrite is refused too.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from secure_fedsa.errors import BudgetExhausted, LedgerError
from secure_fedsa.privacy.accounting import DPEvent, epsilon
from secure_fedsa.privacy.ledger import (
    FORMAT_VERSION,
    MATCHED_FIELDS,
    LedgerIdentity,
    PrivacyLedger,
    check_budget,
    identity_hash,
)
from secure_fedsa.privacy.randomness import OS_CSPRNG

pytestmark = pytest.mark.unit

EVENT = DPEvent(noise_multiplier=1.0, sample_rate=0.04, steps=10)


def identity(**overrides) -> LedgerIdentity:
    base = {
        "client_id": "client-0",
        "key_fingerprint": "ab12cd34",
        "delta": 1e-5,
        "accountant": "pld",
        "dataset_size": 3200,
        "target_epsilon": 8.0,
        "noise_multiplier": 1.0,
        "clip": 1.0,
    }
    return LedgerIdentity.create(**{**base, **overrides})


@pytest.fixture
def path(tmp_path):
    return tmp_path / "privacy_ledger.json"


@pytest.fixture
def three_rounds(path):
    ledger = PrivacyLedger.open(path, identity=identity())
    for r in (1, 2, 3):
        ledger.record(r, EVENT, clip=1.0, noise_source=OS_CSPRNG)
    return ledger


def test_new_ledger_is_written_at_once_with_its_identity(path):
    ledger = PrivacyLedger.open(path, identity=identity())
    assert path.exists()
    doc = json.loads(path.read_text())
    assert doc["format_version"] == FORMAT_VERSION
    assert doc["entries"] == []
    ident = doc["identity"]
    assert ident["target_epsilon"] == 8.0  # the budget lives in the ledger
    assert set(ident["versions"]) == {"opacus", "torch", "secure_fedsa"}
    assert ledger.epsilon_spent == 0.0 and ledger.steps_total == 0 and ledger.events == ()
    assert ledger.head == identity_hash(ledger.identity)


def test_rounds_accumulate_and_survive_a_restart(path, three_rounds):
    expected = epsilon([EVENT] * 3, delta=1e-5)
    assert three_rounds.epsilon_spent == expected
    assert [e.round for e in three_rounds.entries] == [1, 2, 3]
    assert three_rounds.steps_total == 30
    eps = [e.epsilon for e in three_rounds.entries]
    assert eps == sorted(eps) and eps[0] > 0

    reopened = PrivacyLedger.open(path, identity=identity())
    assert reopened.entries == three_rounds.entries  # exact JSON round trip, floats included
    assert reopened.epsilon_spent == expected
    # continuing after the restart adds to what was spent, never starts again at zero
    after = reopened.record(4, EVENT, clip=1.0, noise_source=OS_CSPRNG)
    assert after == epsilon([EVENT] * 4, delta=1e-5) > expected
    assert PrivacyLedger.open(path, identity=identity()).steps_total == 40


def test_rounds_are_recorded_in_order_and_a_retried_round_is_charged_again(path, three_rounds):
    reopened = PrivacyLedger.open(path, identity=identity())
    before = path.read_bytes()
    for r in (2, 1, -1):
        with pytest.raises(LedgerError, match="in order"):
            reopened.record(r, EVENT, clip=1.0, noise_source=OS_CSPRNG)
    assert path.read_bytes() == before
    # round 3 trained again after a crash lost its result: charged a second time, never zero
    again = reopened.record(3, EVENT, clip=1.0, noise_source=OS_CSPRNG)
    assert again == epsilon([EVENT] * 4, delta=1e-5)
    assert [e.round for e in PrivacyLedger.open(path, identity=identity()).entries] == [1, 2, 3, 3]


def test_entries_form_a_hash_chain_anchored_in_the_identity(path, three_rounds):
    entries = three_rounds.entries
    assert entries[0].previous == identity_hash(three_rounds.identity)
    assert [e.previous for e in entries[1:]] == [e.hash for e in entries[:-1]]
    assert three_rounds.head == entries[-1].hash
    assert three_rounds.entry(entries[1].hash) == entries[1]
    assert three_rounds.entry("0" * 64) is None
    assert {e.noise_source for e in entries} == {OS_CSPRNG}


def test_float_values_round_trip_exactly(path):
    awkward = DPEvent(noise_multiplier=0.1 + 0.2, sample_rate=1 / 3, steps=7)
    ledger = PrivacyLedger.open(path, identity=identity(delta=1 / 3e5, clip=0.1 + 0.7))
    ledger.record(1, awkward, clip=0.1 + 0.7, noise_source=OS_CSPRNG)
    reopened = PrivacyLedger.open(path, identity=identity(delta=1 / 3e5, clip=0.1 + 0.7))
    assert reopened.events == (awkward,)
    assert reopened.identity == ledger.identity
    assert reopened.entries == ledger.entries


def test_infinite_epsilon_is_recorded_as_portable_json(path):
    ledger = PrivacyLedger.open(path, identity=identity())
    assert ledger.record(
        1,
        DPEvent(noise_multiplier=0.0, sample_rate=0.04, steps=1),
        clip=1.0,
        noise_source=OS_CSPRNG,
    ) == (math.inf)
    text = path.read_text()
    assert "Infinity" not in text and '"inf"' in text
    assert PrivacyLedger.open(path, identity=identity()).epsilon_spent == math.inf


def _rewrite(path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _edit_last(field, value):
    def edit(doc):
        doc["entries"][-1][field] = value

    return edit


def _set(key, value):
    def edit(doc):
        doc[key] = value

    return edit


def _delete_identity_field(doc):
    del doc["identity"]["delta"]


def _swap_rounds(doc):
    doc["entries"][0]["round"], doc["entries"][1]["round"] = 2, 1


def _drop_middle(doc):
    del doc["entries"][1]


def _consistent_forgery(doc):
    """Raise σ of round 1 and recompute every ε so the accounting itself is consistent."""
    from secure_fedsa.privacy.accounting import DPEvent as Event

    entries = doc["entries"]
    entries[0]["noise_multiplier"] = 4.0
    events = []
    for entry in entries:
        events.append(Event(entry["noise_multiplier"], entry["sample_rate"], entry["steps"]))
        entry["epsilon"] = epsilon(events, delta=1e-5)


def _forge_and_rechain(doc):
    """σ forged, every ε and the whole hash chain recomputed: a ledger sound on its own word."""
    from secure_fedsa.privacy.ledger import LedgerIdentity, canonical_hash

    _consistent_forgery(doc)
    link = identity_hash(LedgerIdentity(**doc["identity"]))
    for entry in doc["entries"]:
        entry["previous"] = link
        entry["hash"] = canonical_hash(entry)
        link = entry["hash"]


def _rechain_after_edit(doc):
    """An edit whose own hash is recomputed: the next entry's link no longer matches."""
    from secure_fedsa.privacy.ledger import canonical_hash

    entry = doc["entries"][1]
    entry["timestamp"] = "2020-01-01T00:00:00+00:00"
    entry["hash"] = canonical_hash(entry)


def _edit_identity_budget(doc):
    doc["identity"]["noise_multiplier"] = 9.0


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "truncated"),
        (lambda p: p.write_bytes(b""), "empty"),
        (lambda p: _rewrite(p, _edit_last("epsilon", 0.5)), "edited epsilon"),
        (lambda p: _rewrite(p, _edit_last("steps", 5)), "edited steps"),
        (lambda p: _rewrite(p, _edit_last("noise_multiplier", 2.0)), "edited sigma"),
        (lambda p: _rewrite(p, _set("format_version", FORMAT_VERSION + 1)), "format version"),
        (lambda p: _rewrite(p, _set("format", "something.else")), "format"),
        (lambda p: _rewrite(p, _delete_identity_field), "missing field"),
        (lambda p: _rewrite(p, _swap_rounds), "non-monotone rounds"),
        (lambda p: _rewrite(p, _edit_last("steps", "10")), "wrong type"),
        (lambda p: _rewrite(p, _edit_last("accountant", "prv")), "other accountant"),
        (lambda p: _rewrite(p, _set("entries", {})), "entries not a list"),
        (lambda p: _rewrite(p, _drop_middle), "entry removed"),
        (lambda p: _rewrite(p, _consistent_forgery), "sigma forged consistently"),
        (lambda p: _rewrite(p, _rechain_after_edit), "entry re-hashed"),
        (lambda p: _rewrite(p, _edit_identity_budget), "identity edited"),
        (lambda p: _rewrite(p, _edit_last("noise_source", "seeded")), "noise source edited"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_a_corrupt_ledger_is_refused_and_left_untouched(path, three_rounds, corrupt, reason):
    corrupt(path)
    before = path.read_bytes()
    with pytest.raises(LedgerError, match="corrupt or was edited"):
        PrivacyLedger.open(path, identity=identity())
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "field, value",
    [
        ("client_id", "client-1"),
        ("key_fingerprint", "ffff0000"),
        ("delta", 1e-6),
        ("accountant", "prv"),
        ("dataset_size", 3201),
        ("clip", 0.5),
        ("target_epsilon", 16.0),
    ],
)
def test_a_ledger_of_another_client_or_configuration_is_refused(path, three_rounds, field, value):
    assert field in MATCHED_FIELDS
    before = path.read_bytes()
    with pytest.raises(LedgerError) as info:
        PrivacyLedger.open(path, identity=identity(**{field: value}))
    message = str(info.value)
    assert repr(value) in message
    assert repr(getattr(three_rounds.identity, field)) in message
    if field == "target_epsilon":  # the budget: a resume can never change it
        assert "budget" in message and "authority" in message
    else:
        assert field in message and "fresh run directory" in message
    assert path.read_bytes() == before


def test_the_planned_sigma_may_change_on_resume(path, three_rounds):
    # recalibration against the history changes σ; the budget does not change
    reopened = PrivacyLedger.open(path, identity=identity(noise_multiplier=1.3))
    assert reopened.identity == three_rounds.identity  # the stored identity is kept


def test_a_missing_ledger_is_never_recreated_for_a_client_that_trained(path):
    with pytest.raises(LedgerError, match="never created"):
        PrivacyLedger.open(path, identity=identity(), create=False)
    assert not path.exists()


def test_writes_leave_no_temporary_files(path, three_rounds):
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_failed_write_changes_neither_memory_nor_disk(path, three_rounds, monkeypatch):
    import secure_fedsa.privacy.ledger as ledger_module

    before = path.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(ledger_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        three_rounds.record(4, EVENT, clip=1.0, noise_source=OS_CSPRNG)
    assert three_rounds.last_round == 3
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_budget_check_refuses_the_round_that_would_exceed(path):
    ledger = PrivacyLedger.open(path, identity=identity())
    big = DPEvent(noise_multiplier=0.8, sample_rate=0.04, steps=40)
    exceeded, projected = ledger.would_exceed(big, budget=5.0)
    assert not exceeded and projected < 5.0  # ε ≈ 4.2 after one such round (RDP)
    assert check_budget(ledger, big, 5.0) == projected
    ledger.record(1, big, clip=1.0, noise_source=OS_CSPRNG)
    exceeded, projected = ledger.would_exceed(big, budget=5.0)
    assert exceeded and projected > 5.0  # ε ≈ 5.1 after two
    with pytest.raises(BudgetExhausted) as info:
        check_budget(ledger, big, 5.0)
    message = str(info.value)
    assert f"{ledger.epsilon_spent:.4g}" in message
    assert f"{projected:.4g}" in message and "budget ε = 5" in message
    assert ledger.last_round == 1  # checking never records


def test_calibrated_plan_is_carried_out_to_the_last_round(path):
    """σ calibrated for the whole plan passes the budget check in every planned round."""
    from secure_fedsa.privacy.accounting import calibrate_noise_multiplier

    rounds, steps, q = 4, 10, 0.04
    sigma = calibrate_noise_multiplier(
        target_epsilon=8.0, delta=1e-5, sample_rate=q, steps=rounds * steps
    )
    ledger = PrivacyLedger.open(path, identity=identity(noise_multiplier=sigma))
    event = DPEvent(noise_multiplier=sigma, sample_rate=q, steps=steps)
    for r in range(1, rounds + 1):
        check_budget(ledger, event, 8.0)
        ledger.record(r, event, clip=1.0, noise_source=OS_CSPRNG)
    assert 7.99 <= ledger.epsilon_spent <= 8.0
    with pytest.raises(BudgetExhausted):
        check_budget(ledger, event, 8.0)


def test_identity_and_arguments_are_validated(path):
    with pytest.raises(Exception, match="delta"):
        identity(delta=2.0)
    with pytest.raises(Exception, match="dataset_size"):
        identity(dataset_size=0)
    with pytest.raises(TypeError):
        PrivacyLedger.open(path, identity=dataclasses.asdict(identity()))
    ledger = PrivacyLedger.open(path, identity=identity())
    with pytest.raises(LedgerError, match="clip"):
        ledger.record(1, EVENT, clip=0.0, noise_source=OS_CSPRNG)
    with pytest.raises(LedgerError, match="noise_source"):
        ledger.record(1, EVENT, clip=1.0, noise_source="")
    with pytest.raises(Exception, match="DPEvent"):
        ledger.record(1, (1.0, 0.04, 10), clip=1.0, noise_source=OS_CSPRNG)
    with pytest.raises(Exception, match="budget"):
        ledger.would_exceed(EVENT, budget=0)
    assert ledger.last_round == 0


# --- anchors: a rollback of the whole directory, or a consistent rewrite -------------------------


def test_a_ledger_rolled_back_to_an_older_copy_is_refused(path, tmp_path):
    from secure_fedsa.privacy.anchor import AnchorStore

    anchors = AnchorStore(tmp_path / "anchors")
    ledger = PrivacyLedger.open(path, identity=identity(), anchors=anchors)
    ledger.record(1, EVENT, clip=1.0, noise_source=OS_CSPRNG)
    copy = path.read_bytes()  # the whole directory copied after round 1
    for r in (2, 3):
        ledger.record(r, EVENT, clip=1.0, noise_source=OS_CSPRNG)
    path.write_bytes(copy)  # ... and restored: a perfectly consistent, older ledger
    PrivacyLedger.read(path)  # on its own word it is fine
    with pytest.raises(LedgerError, match="rolled back to an older copy"):
        PrivacyLedger.read(path, anchors=anchors)
    with pytest.raises(LedgerError, match="rolled back"):
        PrivacyLedger.open(path, identity=ledger.identity, anchors=anchors)
    assert path.read_bytes() == copy  # left as it was


def test_a_ledger_rewritten_consistently_is_refused(path, tmp_path):
    from secure_fedsa.privacy.anchor import AnchorStore

    anchors = AnchorStore(tmp_path / "anchors")
    ledger = PrivacyLedger.open(path, identity=identity(), anchors=anchors)
    for r in (1, 2):
        ledger.record(r, EVENT, clip=1.0, noise_source=OS_CSPRNG)
    _rewrite(path, _forge_and_rechain)  # σ raised, ε and the whole chain recomputed
    PrivacyLedger.read(path)
    with pytest.raises(LedgerError, match="rewritten"):
        PrivacyLedger.read(path, anchors=anchors)


def test_a_trained_ledger_without_its_anchor_is_not_trusted(path, tmp_path):
    from secure_fedsa.privacy.anchor import AnchorStore

    ledger = PrivacyLedger.open(path, identity=identity(), anchors=AnchorStore(tmp_path / "a"))
    ledger.record(1, EVENT, clip=1.0, noise_source=OS_CSPRNG)
    with pytest.raises(LedgerError, match="has no anchor"):
        PrivacyLedger.read(path, anchors=AnchorStore(tmp_path / "elsewhere"))
    # carried along (the message says how), it is trusted again
    (tmp_path / "elsewhere").mkdir()
    for anchor in (tmp_path / "a").iterdir():
        (tmp_path / "elsewhere" / anchor.name).write_bytes(anchor.read_bytes())
    assert PrivacyLedger.read(path, anchors=AnchorStore(tmp_path / "elsewhere")).last_round == 1


def test_anchors_never_move_back_and_a_ledger_ahead_of_its_anchor_catches_up(path, tmp_path):
    from secure_fedsa.privacy.anchor import AnchorStore

    anchors = AnchorStore(tmp_path / "anchors")
    ledger = PrivacyLedger.open(path, identity=identity(), anchors=anchors)
    ledger.record(1, EVENT, clip=1.0, noise_source=OS_CSPRNG)
    key = identity_hash(ledger.identity)
    old = anchors.read(key)
    assert old.entries == 1 and old.head == ledger.head
    ledger.record(2, EVENT, clip=1.0, noise_source=OS_CSPRNG)
    with pytest.raises(LedgerError, match="refusing to move the ledger anchor back"):
        anchors.advance(old)
    # a crash between writing the ledger and its anchor leaves the ledger ahead: that is fine
    anchors.file(key).unlink()
    anchors.advance(old)
    reopened = PrivacyLedger.read(path, anchors=anchors)
    assert reopened.last_round == 2 and anchors.read(key).entries == 2


def test_no_two_ledgers_share_an_identity(path, tmp_path):
    first, second = identity(), identity()
    assert first.ledger_id != second.ledger_id
    assert identity_hash(first) != identity_hash(second)
