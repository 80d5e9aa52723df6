"""Check (P2, P3): secure encryption parameters, a server bundle without secrets, one key set.

The parameters are re-checked against the 128-bit table of the HomomorphicEncryption.org
standard (re-stated here), the fingerprint is re-computed from the server bundle's public fields,
and every file that names a key fingerprint must name the same one.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from audits.evidence import RunEvidence
from audits.result import CheckResult

NAME = "encryption"
STATEMENT = (
    "Encryption was on; the CKKS parameters meet 128-bit security (HomomorphicEncryption.org "
    "standard); the server's key bundle holds no secret, public, Galois or relinearisation key; "
    "its fingerprint re-computes from its public fields; and the same key fingerprint appears "
    "in setup.json, summary.json and every client's privacy ledger."
)
# Ring degree N -> largest total coefficient-modulus bits for 128-bit classical security
# (ternary secret), HomomorphicEncryption.org security standard, Table 1.
MAX_MODULUS_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
SECRET_FIELDS = ("secret_key", "public_key", "galois_keys", "relin_keys")
BUNDLE_FORMAT, BUNDLE_VERSION = "secure_fedsa.keys", 1


def security_ok(poly_modulus_degree: Any, coeff_mod_bit_sizes: Any) -> tuple[bool, str]:
    """Whether (N, primes) meet 128-bit security, and why (pure)."""
    if poly_modulus_degree not in MAX_MODULUS_BITS_128:
        return False, f"ring degree N = {poly_modulus_degree!r} is not in the standard's table"
    if not isinstance(coeff_mod_bit_sizes, list) or not all(
        isinstance(b, int) and b > 0 for b in coeff_mod_bit_sizes
    ):
        return False, f"prime sizes {coeff_mod_bit_sizes!r} are malformed"
    bits, limit = sum(coeff_mod_bit_sizes), MAX_MODULUS_BITS_128[poly_modulus_degree]
    if bits > limit:
        return False, f"{bits} modulus bits at N = {poly_modulus_degree} exceed {limit} (128-bit)"
    return True, f"{bits} modulus bits at N = {poly_modulus_degree} (128-bit limit {limit})"


def fingerprint(params: dict, max_clients: Any, public_key_sha256: Any) -> str:
    """SHA-256 over the canonical JSON of format, version, parameters, client limit, pk digest."""
    record = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "params": params,
        "max_clients": max_clients,
        "public_key_sha256": public_key_sha256,
    }
    canonical = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(canonical).hexdigest()


def check_encryption(run: RunEvidence) -> CheckResult:
    result = CheckResult(NAME, STATEMENT)
    if run.config is None:
        result.error("config.json is missing or unreadable")
        return result
    if run.cfg("encryption") is not True:
        result.fail("no encryption: config.json turns encryption off")
        return result
    masking = run.cfg("masking", True) is not False
    result.evidence["pairwise_masking"] = masking
    if not masking:
        result.warn(
            "no pairwise masking: config.json turns it off, so a server that colludes with one "
            "client (which holds the shared CKKS key) can decrypt every individual update",
            code="no-masking",
        )
    bundle = run.server_keys
    result.evidence["server_bundle"] = run.server_keys_path
    if bundle is None:
        result.fail(f"server key bundle {run.problems.get('keys/server.keys', 'missing')}")
        return result
    present = [f for f in SECRET_FIELDS if f in bundle]
    if present:
        result.fail(f"the server bundle holds {', '.join(present)}: the server could decrypt")
    if bundle.get("kind") != "server" or bundle.get("format") != BUNDLE_FORMAT:
        result.fail(f"not a server bundle (kind {bundle.get('kind')!r})")
    params = bundle.get("params") if isinstance(bundle.get("params"), dict) else {}
    ok, why = security_ok(params.get("poly_modulus_degree"), params.get("coeff_mod_bit_sizes"))
    result.evidence.update(params=params, security=why)
    if not ok:
        result.fail(why)
    recomputed = fingerprint(params, bundle.get("max_clients"), bundle.get("public_key_sha256"))
    stated = bundle.get("fingerprint")
    result.evidence.update(fingerprint=stated, fingerprint_recomputed=recomputed)
    if recomputed != stated:
        result.fail("the server bundle's fingerprint does not match its parameters and public key")
    _check_consistent(run, stated, result)
    return result


def _check_consistent(run: RunEvidence, expected: Any, result: CheckResult) -> None:
    named: dict[str, Any] = {
        "setup.json": (run.setup or {}).get("key_fingerprint"),
    }
    if run.summary is not None:
        named["summary.json"] = run.summary.get("key_fingerprint")
    if run.cfg("dp") is True:
        for cid, ledger in run.ledgers.items():
            if ledger is not None:
                identity = ledger.get("identity") or {}
                named[f"clients/{cid} ledger"] = identity.get("key_fingerprint")
    for record_list in run.egress.values():  # updates' egress records name their key set
        for record in record_list or []:
            if record.get("kind") == "update" and "key_fingerprint" in record:
                named.setdefault("egress records", record["key_fingerprint"])
                if record["key_fingerprint"] != expected:
                    named["egress records"] = record["key_fingerprint"]
    result.evidence["fingerprints"] = named
    for where, value in named.items():
        if value != expected:
            result.fail(
                f"{where} names key {str(value)[:16]}…, the server bundle {str(expected)[:16]}…"
            )
