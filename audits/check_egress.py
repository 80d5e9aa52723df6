"""Check (P1, P2, P6): what left each client, by tensor name, size and form.

Every egress record is matched with what the rest of the run shows of the same message: an
update's tensors with setup.json's manifest, its manifest hash with setup.json's (which the
configuration check re-computes), the ledger entry it names with the ledger head the server
accepted that round (metrics.jsonl), the bytes of a round's updates with the bytes the round
counted; a secure-aggregation message with the round's masking record in metrics.jsonl and with
the size its content has (:mod:`audits.messages`). The SHA-256 of a payload cannot be
re-computed (no payload is kept anywhere): it must be a well-formed digest, and no two different
messages may share one.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from audits import messages as kinds
from audits.evidence import RunEvidence
from audits.groups import allowed_groups, tensor_group
from audits.result import CheckResult

NAME = "egress"
STATEMENT = (
    "Every message each client sent (from the egress record written by the transport) carried "
    "only the tensor groups its method shares (fedsa: A; fedit: A and B; ffa: B; local: "
    "nothing; the task head only in a run configured to share it), never any other tensor; "
    "every update was a ciphertext; each client sent one update per round it trained (an "
    "update re-sent after an interruption counts only when its privacy-ledger entry shows the "
    "round was paid for), naming setup.json's manifest hash and the ledger entry whose head the "
    "server accepted; every other message is one of secure aggregation's (no tensor, the size "
    "and form its content has, in a round metrics.jsonl shows masked, from a client that "
    "round names) or a Flower status report; every SHA-256 is a well-formed digest, none "
    "shared by two different messages."
)
REPORT_KIND = kinds.REPORT
# secure aggregation's protocol messages (public keys, shares encrypted to peers, revealed
# shares of mask seeds): they carry no tensor and nothing computed from the training data
SECAGG_KINDS = frozenset(kinds.PROTOCOL_KINDS)
REQUIRED_FIELDS = ("client", "round", "kind", "bytes", "sha256", "form", "tensors")
DIGEST = re.compile(r"[0-9a-f]{64}")
EMPTY_DIGEST = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# a SHA-256 digest is 64 uniformly random hex digits: fewer than 8 distinct ones happens with
# probability below 1e-18 (C(16,7)·(7/16)^64); such a value is a placeholder, not a digest
MIN_DISTINCT_DIGITS = 8


def check_egress(run: RunEvidence) -> CheckResult:
    result = CheckResult(NAME, STATEMENT)
    method = run.cfg("method")
    if run.config is None:
        result.error("config.json is missing or unreadable: the method and encryption are unknown")
        return result
    allowed = allowed_groups(method, run.cfg("head"))
    if allowed is None:
        result.error(
            f"unknown method {method!r} or head setting {run.cfg('head')!r}: cannot tell which "
            "tensors may leave a client"
        )
        return result
    encrypted = run.cfg("encryption") is True
    result.evidence.update(
        method=method,
        head=run.cfg("head") or "local",
        allowed_groups=sorted(allowed),
        encryption=encrypted,
        manifest=_manifest_names(run),
        clients={},
    )
    if not encrypted:
        result.fail("no encryption: config.json turns encryption off, so updates left in plaintext")
    manifest = _manifest_names(run)
    if manifest is None and allowed:
        result.error("setup.json has no shared-tensor manifest to compare the egress with")
    for cid in run.client_ids:
        result.evidence["clients"][cid] = _check_client(run, cid, allowed, manifest, result)
    _check_round_bytes(run, result)
    _check_accepted_heads(run, result)
    _check_protocol_rounds(run, result)
    _check_shared_digests(run, result)
    return result


def digest_problem(value: Any, size: Any) -> str | None:
    """Why ``value`` cannot be the SHA-256 of a message of ``size`` bytes (pure; None if it
    can). Only the form can be checked: no payload is kept to hash again."""
    if not isinstance(value, str) or not DIGEST.fullmatch(value):
        return f"{value!r} is not a SHA-256 digest (64 lowercase hex digits)"
    if len(set(value)) < MIN_DISTINCT_DIGITS:
        return (
            f"{value[:16]}… is a placeholder, not a digest (only {len(set(value))} distinct digits)"
        )
    if value == EMPTY_DIGEST and size != 0:
        return f"the digest of an empty message, for a message of {size!r} bytes"
    return None


def size_problem(kind: str, size: int, clients: int) -> str | None:
    """Why a ``kind`` message of ``size`` bytes cannot carry what that kind carries (pure)."""
    if kind == kinds.KEYS and size != kinds.ADVERT_BYTES:
        return (
            f"a masking key advert is {kinds.ADVERT_BYTES} bytes (two public keys and a "
            f"signature), this one {size}"
        )
    if kind == kinds.SURVIVORS and size != kinds.ED25519_SIGNATURE_BYTES:
        return (
            f"a survivor-set signature is {kinds.ED25519_SIGNATURE_BYTES} bytes (one Ed25519 "
            f"signature), this one {size}"
        )
    if kind == kinds.SHARES and not (
        size % kinds.SEALED_SHARE_BYTES == 0 and 1 <= size // kinds.SEALED_SHARE_BYTES <= clients
    ):
        return (
            f"encrypted shares come in {kinds.SEALED_SHARE_BYTES}-byte parts, one per client of "
            f"the round (at most {clients}), this message is {size} bytes"
        )
    if kind == kinds.REVEAL and not (
        size % kinds.SHARE_BYTES == 0 and 1 <= size // kinds.SHARE_BYTES <= clients
    ):
        return (
            f"a reveal holds {kinds.SHARE_BYTES}-byte shares, at most one per client of the "
            f"round ({clients}), this one is {size} bytes"
        )
    return None


def _manifest_names(run: RunEvidence) -> list[str] | None:
    manifest = (run.setup or {}).get("manifest")
    if not isinstance(manifest, list):
        return None
    return [m.get("name") for m in manifest if isinstance(m, dict)]


def _check_client(
    run: RunEvidence,
    cid: str,
    allowed: frozenset[str],
    manifest: list[str] | None,
    result: CheckResult,
) -> dict[str, Any]:
    records = run.egress.get(cid)
    trained = run.trained_rounds(cid)
    problem = run.problems.get(f"egress/{cid}.jsonl")
    summary: dict[str, Any] = {"messages": [], "total_bytes": 0}
    if records is None:
        if allowed and (trained is None or trained):
            result.fail(f"{cid}: egress record {problem or 'missing'}; what left it is unknown")
        records = []
    elif problem:
        result.fail(f"{cid}: egress record damaged: {problem}")
    encrypted = run.cfg("encryption") is True
    uploads: Counter[int] = Counter()
    paid: Counter[int] = Counter()  # uploads that name a ledger entry of their round
    rounds_of_entries = _ledger_entry_rounds(run, cid)
    reports = 0
    protocol_messages = 0
    for index, record in enumerate(records, start=1):
        missing = [f for f in REQUIRED_FIELDS if f not in record]
        if missing:
            result.fail(f"{cid}: egress message {index} lacks {', '.join(missing)}")
            continue
        tensors = record["tensors"] if isinstance(record["tensors"], list) else []
        groups = sorted({tensor_group(str(n)) for n in tensors})
        size = record["bytes"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            result.fail(f"{cid}: egress message {index} has no valid byte count ({size!r})")
        digest = digest_problem(record["sha256"], size)
        if digest:
            result.fail(f"{cid}: egress message {index} (round {record['round']}): {digest}")
        summary["messages"].append(
            {
                "round": record["round"],
                "kind": record["kind"],
                "bytes": record["bytes"],
                "form": record["form"],
                "groups": groups,
                "tensors": len(tensors),
                "transport": record.get("transport"),
            }
        )
        if isinstance(record["bytes"], int):
            summary["total_bytes"] += record["bytes"]
        where = f"{cid} round {record['round']}"
        if record["client"] != cid:
            result.fail(f"{where}: message names client {record['client']!r} in {cid}'s record")
        forbidden = [g for g in groups if g not in allowed]
        if forbidden:
            result.fail(f"{where}: tensors of group(s) {', '.join(forbidden)} left the client")
        if manifest is not None and tensors and list(tensors) != manifest:
            result.fail(f"{where}: tensor names differ from the shared-tensor manifest")
        if record["kind"] == REPORT_KIND:
            # Flower sites reply with a small plaintext report (status, epsilon, a status code
            # about the aggregate) next to each update. It may carry no tensor at all.
            if tensors:
                result.fail(f"{where}: a metrics report carried tensors")
            reports += 1
            continue
        if record["kind"] in SECAGG_KINDS:
            if tensors:
                result.fail(f"{where}: a secure-aggregation message carried tensors")
            form = kinds.KINDS[record["kind"]]["form"]
            if record["form"] != form:
                result.fail(
                    f"{where}: a {record['kind']} message recorded as {record['form']!r}; the "
                    f"protocol sends it as {form}"
                )
            problem = (
                size_problem(record["kind"], size, len(run.client_ids)) if _int(size) else None
            )
            if problem:
                result.fail(f"{where}: {problem}")
            protocol_messages += 1
            continue
        if encrypted and record["form"] != "ciphertext":
            result.fail(f"{where}: a {record['form']!r} message left with encryption on")
        if record["kind"] == "update":
            expected_hash = (run.setup or {}).get("manifest_hash")
            if expected_hash is not None and record.get("manifest_hash") != expected_hash:
                result.fail(
                    f"{where}: the update names manifest hash {record.get('manifest_hash')!r}, "
                    f"setup.json's is {expected_hash!r}"
                )
            uploads[record["round"]] += 1
            if rounds_of_entries.get(record.get("ledger_entry")) == record["round"]:
                paid[record["round"]] += 1
        else:
            result.fail(f"{where}: unexpected message kind {record['kind']!r}")
    last_round = max(
        (r["round"] for r in run.metrics or [] if isinstance(r.get("round"), int)), default=0
    )
    _check_uploads(cid, uploads, paid, trained, bool(allowed), result, last_round)
    summary["uploads_per_round"] = {str(r): n for r, n in sorted(uploads.items())}
    summary["secure_aggregation_messages"] = protocol_messages
    if reports:
        summary["metrics_reports"] = reports
        result.warn(
            f"{cid}: {reports} plaintext metrics report(s) (training status, epsilon, the "
            "aggregate's status code, no tensors) left the client; with report-accuracy they "
            "also carry held-out accuracy, which is outside the DP guarantee",
            code="plaintext-reports",
        )
    return summary


def _ledger_entry_rounds(run: RunEvidence, cid: str) -> dict[Any, Any]:
    """Entry hash -> round, from the client's privacy ledger (empty without one)."""
    ledger = run.ledgers.get(cid)
    entries = (ledger or {}).get("entries") if isinstance(ledger, dict) else None
    if not isinstance(entries, list):
        return {}
    return {e.get("hash"): e.get("round") for e in entries if isinstance(e, dict)}


def _check_uploads(
    cid: str,
    uploads: Counter[int],
    paid: Counter[int],
    trained: dict[int, dict] | None,
    sharing: bool,
    result: CheckResult,
    last_round: int,
) -> None:
    if trained is None:
        result.error(f"{cid}: metrics.jsonl unreadable; cannot match uploads to trained rounds")
        return
    expected = set(trained) if sharing else set()
    for round_number in sorted(expected | set(uploads)):
        count = uploads.get(round_number, 0)
        if round_number in expected and count == 0:
            result.fail(f"{cid}: no egress record for round {round_number}, which it trained")
        elif round_number not in expected and round_number > last_round and sharing:
            result.warn(
                f"{cid}: {count} message(s) in round {round_number}, after the last round in "
                "metrics.jsonl (an interrupted round)",
                code="interrupted-round",
            )
        elif round_number not in expected:
            result.fail(
                f"{cid}: {count} message(s) in round {round_number}, which it did not train"
            )
        elif count > 1 and paid.get(round_number, 0) == count:
            result.note(
                f"{cid}: {count} uploads in round {round_number}, each paid for by a ledger "
                "entry of that round (re-sent after an interruption)"
            )
        elif count > 1:
            result.fail(
                f"{cid}: {count} uploads in round {round_number} (expected one; a re-sent update "
                "must name the ledger entry that paid for it)"
            )


def _check_round_bytes(run: RunEvidence, result: CheckResult) -> None:
    """metrics.jsonl's upload bytes per round equal the sum of the egress records of the
    updates that round counted: each client's last update of the round (an earlier one was
    re-sent after an interruption, and the audit notes it above)."""
    for record in run.metrics or []:
        round_number, expected = record.get("round"), record.get("upload_bytes")
        if not isinstance(expected, int):
            continue
        last_update: dict[str, int] = {}
        other = 0
        for cid, records in run.egress.items():
            for m in records or []:
                if m.get("round") != round_number or not isinstance(m.get("bytes"), int):
                    continue
                if m.get("kind") == "update":
                    last_update[cid] = m["bytes"]
                elif m.get("kind") == REPORT_KIND:
                    other += m["bytes"]
        sent = sum(last_update.values()) + other
        if sent != expected:
            result.fail(
                f"round {round_number}: metrics report {expected} bytes uploaded, the egress "
                f"records {sent}"
            )


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_accepted_heads(run: RunEvidence, result: CheckResult) -> None:
    """The ledger head the server accepted from a client in a round (metrics.jsonl, taken from
    the header of the update it received) is named by an update in the client's egress record of
    that round: the record describes the message the server received."""
    for record in run.metrics or []:
        number = record.get("round")
        for cid, entry in (record.get("clients") or {}).items():
            head = (entry.get("ledger") or {}).get("head") if isinstance(entry, dict) else None
            if head is None:
                continue
            sent = [
                m.get("ledger_entry")
                for m in run.egress.get(cid) or []
                if m.get("kind") == kinds.UPDATE and m.get("round") == number
            ]
            if sent and head not in sent:
                result.fail(
                    f"{cid} round {number}: the server accepted an update paid for by ledger "
                    f"entry {str(head)[:16]}… (metrics.jsonl), but no update in the client's "
                    "egress record names it"
                )


def _check_protocol_rounds(run: RunEvidence, result: CheckResult) -> None:
    """Each secure-aggregation message belongs to a round metrics.jsonl shows masked, from a
    client that round's masking names; every client the round masked with sent its advert and
    its shares."""
    rounds = {r.get("round"): r for r in run.metrics or [] if isinstance(r, dict)}
    last = max((n for n in rounds if isinstance(n, int)), default=0)
    sent: dict[tuple[Any, str, str], int] = Counter()
    for cid, records in run.egress.items():
        for m in records or []:
            if m.get("kind") in SECAGG_KINDS:
                sent[(m.get("round"), cid, m["kind"])] += 1
    for (number, cid, kind), count in sorted(sent.items(), key=str):
        record = rounds.get(number)
        if record is None:
            if isinstance(number, int) and number > last:
                continue  # an interrupted round (its update, if any, is flagged above)
            result.fail(f"{cid}: {count} {kind} message(s) in round {number!r}, which metrics "
                        "do not show")  # fmt: skip
            continue
        masking = record.get("masking") if isinstance(record.get("masking"), dict) else {}
        named = set(masking.get("participants") or []) | set(masking.get("masked_with") or [])
        named |= {d.get("client") for d in record.get("dropouts") or [] if isinstance(d, dict)}
        if masking.get("failed"):
            continue  # the round's masking failed part-way: whoever was asked may have sent
        if not masking:
            result.fail(
                f"{cid}: a {kind} message in round {number}, which metrics.jsonl shows unmasked"
            )
        elif cid not in named:
            result.fail(
                f"{cid}: a {kind} message in round {number}, whose masking does not name the client"
            )
    for number, record in rounds.items():
        masking = record.get("masking") if isinstance(record.get("masking"), dict) else {}
        for cid in masking.get("masked_with") or []:
            for kind in (kinds.KEYS, kinds.SHARES):
                if not sent.get((number, cid, kind)) and run.egress.get(cid) is not None:
                    result.fail(
                        f"{cid}: round {number} was masked with it, but its egress record has "
                        f"no {kind} message of that round"
                    )


def _check_shared_digests(run: RunEvidence, result: CheckResult) -> None:
    """No two different messages share a SHA-256. The same bytes sent again (same client, kind
    and size; same round, or a Flower report whose content repeats) may."""
    seen: dict[str, tuple[str, Any, Any, Any]] = {}
    for cid, records in run.egress.items():
        for m in records or []:
            digest = m.get("sha256")
            if not isinstance(digest, str):
                continue
            this = (cid, m.get("kind"), m.get("bytes"), m.get("round"))
            first = seen.setdefault(digest, this)
            if first == this or (first[:3] == this[:3] and this[1] == kinds.REPORT):
                continue
            result.fail(
                f"{cid} round {this[3]!r}: its {this[1]} message has the SHA-256 of {first[0]}'s "
                f"{first[1]} message of round {first[3]!r} ({digest[:16]}…), a different "
                "message: at least one digest was not computed from the bytes sent"
            )
