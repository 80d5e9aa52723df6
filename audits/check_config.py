"""Check: every config.json field the report relies on agrees with the records that fix it.

config.json is a statement about the run; the other files are what the run did. The method, head
and adapter decide which tensors may leave a client: setup.json's shared-tensor manifest is what
the clients encoded against and the server accepted (each update names its hash), so the tensor
groups the manifest holds must be exactly those the method and head allow, and its names and
shapes those of the adapter, rank, target modules and layers config.json names. The manifest
hash is re-computed here from the manifest (SHA-256 of the compact JSON of ``[[name, shape],
...]``). The protections (DP, encryption, masking, the evaluation release) must agree with the
list setup.json and summary.json recorded when the run was set up and finished, masking with what
metrics.jsonl shows of each round; the number of clients and rounds with setup.json and
metrics.jsonl.

Without this check an edited config.json changes what the audit accepts: ``method: fedit`` in a
fedsa run would make B an allowed release, ``masking: true`` in an unmasked run would make the
report state a trust model the run did not have.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Any

from audits.evidence import RunEvidence
from audits.groups import ADAPTER_MARKERS, adapter_module, allowed_groups, tensor_group
from audits.result import CheckResult

NAME = "configuration"
STATEMENT = (
    "Every config.json field the report relies on agrees with the records that fix it: the "
    "method and head with the tensor groups in setup.json's shared-tensor manifest (exactly "
    "those they allow, both ways), the adapter, rank, target modules and layers with the "
    "manifest's names and shapes, the manifest hash (re-computed from the manifest) with "
    "setup.json's, DP, encryption, masking and the evaluation release with the protections "
    "setup.json and summary.json recorded and with each round's masking in metrics.jsonl, and the "
    "number of clients and rounds with setup.json and metrics.jsonl."
)
# what RunConfig.protections writes into setup.json / summary.json for each protection that is
# off (the start of each line); re-stated here
PROTECTION_LINES = {
    "dp": "NO DIFFERENTIAL PRIVACY",
    "release_evaluation": "EVALUATION RELEASED",
    "encryption": "NO ENCRYPTION",
    "masking": "NO PAIRWISE MASKING",
}
LAYER = re.compile(r"\.layer\.(\d+)\.")


def manifest_digest(entries: list[dict[str, Any]]) -> str:
    """The manifest hash: SHA-256 of the compact JSON of ``[[name, shape], ...]`` (pure)."""
    payload = json.dumps([[e["name"], list(e["shape"])] for e in entries], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def check_configuration(run: RunEvidence) -> CheckResult:
    result = CheckResult(NAME, STATEMENT)
    if run.config is None:
        result.error("config.json is missing or unreadable: there is nothing to cross-check")
        return result
    if run.setup is None:
        result.error("setup.json is missing or unreadable: config.json cannot be cross-checked")
        return result
    entries = _manifest(run, result)
    if entries is not None:
        _check_groups(run, entries, result)
        _check_adapter(run, entries, result)
        _check_manifest_hash(run, entries, result)
    _check_protections(run, result)
    _check_masking(run, result)
    _check_sizes(run, result)
    return result


def _manifest(run: RunEvidence, result: CheckResult) -> list[dict[str, Any]] | None:
    manifest = run.setup.get("manifest") if run.setup else None
    well_formed = isinstance(manifest, list) and all(
        isinstance(e, dict)
        and isinstance(e.get("name"), str)
        and isinstance(e.get("shape"), list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in e["shape"])
        for e in manifest
    )
    if not well_formed:
        result.error("setup.json has no well-formed shared-tensor manifest (names and shapes)")
        return None
    return manifest  # type: ignore[return-value]


def _words(groups: set[str] | frozenset[str]) -> str:
    return ", ".join(sorted(groups)) or "nothing"


def _none(groups: set[str]) -> str:
    return ", ".join(sorted(groups)) or "none"


def _check_groups(run: RunEvidence, entries: list[dict[str, Any]], result: CheckResult) -> None:
    method, head = run.cfg("method"), run.cfg("head")
    allowed = allowed_groups(method, head)
    held = {tensor_group(e["name"]) for e in entries}
    result.evidence.update(
        method=method,
        head=head or "local",
        groups_the_method_allows=sorted(allowed) if allowed is not None else None,
        groups_in_the_manifest=sorted(held),
    )
    if allowed is None:
        result.error(f"unknown method {method!r} or head setting {head!r} in config.json")
        return
    if "other" in held:
        others = [e["name"] for e in entries if tensor_group(e["name"]) == "other"]
        result.fail(
            f"setup.json's manifest shares {len(others)} tensor(s) that are neither LoRA/VeRA A "
            f"or B nor the head (first: {others[0]})"
        )
    said = f"config.json says method {method!r} with head {head or 'local'!r}"
    if held - allowed - {"other"}:
        result.fail(
            f"{said}, which shares {_words(allowed)}, but setup.json's manifest (what every "
            f"update carried) also shares {_words(held - allowed - {'other'})}"
        )
    if allowed - held:
        result.fail(
            f"{said}, which shares {_words(allowed)}, but setup.json's manifest (what every "
            f"update carried) holds only {_words(held - {'other'})}: config.json does not "
            "describe this run"
        )


def _check_adapter(run: RunEvidence, entries: list[dict[str, Any]], result: CheckResult) -> None:
    adapter = run.cfg("adapter") or "lora"
    adapted = [e for e in entries if tensor_group(e["name"]) in ("A", "B")]
    modules = sorted({m for e in adapted if (m := adapter_module(e["name"])) is not None})
    result.evidence.update(adapter=adapter, adapted_modules=len(modules))
    if not adapted:
        return
    if adapter not in ADAPTER_MARKERS:
        result.error(f"unknown adapter {adapter!r} in config.json")
        return
    a_marker, b_marker = ADAPTER_MARKERS[adapter]
    foreign = [
        e["name"] for e in adapted if a_marker not in e["name"] and b_marker not in e["name"]
    ]
    if foreign:
        result.fail(
            f"config.json says adapter {adapter!r}, but setup.json's manifest shares tensors of "
            f"another adapter (first: {foreign[0]})"
        )
        return
    _check_rank(run, adapter, adapted, result)
    _check_targets(run, modules, result)
    _check_layers(run, modules, result)


def _check_rank(
    run: RunEvidence, adapter: str, adapted: list[dict[str, Any]], result: CheckResult
) -> None:
    if adapter == "vera":
        rank, key = run.cfg("vera_r"), "vera_r"
        found = {e["shape"][0] for e in adapted if ".vera_lambda_d" in e["name"]}
    else:
        rank, key = run.cfg("lora_r"), "lora_r"
        found = {e["shape"][0] for e in adapted if ".lora_A." in e["name"]}
        found |= {e["shape"][-1] for e in adapted if ".lora_B." in e["name"]}
    result.evidence.update(rank=rank, ranks_in_the_manifest=sorted(found))
    if found and found != {rank}:
        result.fail(
            f"config.json says {key} = {rank!r}, but the shapes in setup.json's manifest give "
            f"rank {_words({str(r) for r in found})}"
        )


def _check_targets(run: RunEvidence, modules: list[str], result: CheckResult) -> None:
    targets = run.cfg("target_modules")
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        result.error(f"config.json's target_modules {targets!r} is not a list of names")
        return

    def matches(module: str, target: str) -> bool:  # peft: the name or a dotted suffix
        return module == target or module.endswith("." + target)

    untargeted = [m for m in modules if not any(matches(m, t) for t in targets)]
    missing = [t for t in targets if not any(matches(m, t) for m in modules)]
    if untargeted:
        result.fail(
            f"config.json's target_modules {targets} do not name module {untargeted[0]!r}, "
            "whose adapter setup.json's manifest shares"
        )
    if missing:
        result.fail(
            f"config.json's target_modules name {', '.join(missing)}, but setup.json's "
            "manifest shares no adapter of such a module"
        )


def _check_layers(run: RunEvidence, modules: list[str], result: CheckResult) -> None:
    layers = sorted({int(m.group(1)) for name in modules if (m := LAYER.search(name + "."))})
    wanted, total = run.cfg("adapter_layers"), run.cfg("num_layers")
    result.evidence.update(adapter_layers=wanted, layers_in_the_manifest=layers)
    if not layers or not isinstance(wanted, int):
        return  # a model without "layer.N" names, or every layer adapted (version 2)
    if isinstance(total, int):
        top = list(range(max(total - wanted, 0), total))
        if layers != top:
            result.fail(
                f"config.json says the top {wanted} of {total} encoder layers are adapted "
                f"(layers {_words({str(n) for n in top})}), but setup.json's manifest shares "
                f"adapters of layers {_words({str(n) for n in layers})}"
            )
    elif len(layers) > wanted:
        result.fail(
            f"config.json says the top {wanted} encoder layers are adapted, but setup.json's "
            f"manifest shares adapters of {len(layers)} layers"
        )


def _check_manifest_hash(
    run: RunEvidence, entries: list[dict[str, Any]], result: CheckResult
) -> None:
    recomputed = manifest_digest(entries)
    recorded = run.setup.get("manifest_hash") if run.setup else None
    values = sum(math.prod(e["shape"]) for e in entries)
    result.evidence.update(manifest_hash=recomputed, shared_values=values)
    if recorded != recomputed:
        result.fail(
            f"setup.json's manifest hash {recorded!r} is not the hash of its manifest "
            f"({recomputed}): the manifest or the hash was changed"
        )
    shared = run.setup.get("shared_values") if run.setup else None
    if shared is not None and shared != values:
        result.fail(f"setup.json says {shared!r} shared values, its manifest holds {values}")


def _expected_off(run: RunEvidence) -> set[str]:
    """The protection lines RunConfig.protections gives for config.json's values."""
    off = set()
    if run.cfg("dp") is not True:
        off.add(PROTECTION_LINES["dp"])
    if run.cfg("release_evaluation") is True:
        off.add(PROTECTION_LINES["release_evaluation"])
    if run.cfg("encryption") is not True:
        off.add(PROTECTION_LINES["encryption"])
    elif run.cfg("masking", True) is False:
        off.add(PROTECTION_LINES["masking"])
    return off


def _recorded_off(lines: Any) -> set[str] | None:
    if not isinstance(lines, list):
        return None
    found = set()
    for line in lines:
        found |= {start for start in PROTECTION_LINES.values() if str(line).startswith(start)}
    return found


def _check_protections(run: RunEvidence, result: CheckResult) -> None:
    expected = _expected_off(run)
    result.evidence["protections_off"] = sorted(expected)
    sources = {"setup.json": (run.setup or {}).get("protections_off")}
    if isinstance(run.summary, dict):
        sources["summary.json"] = run.summary.get("protections_off")
    for name, lines in sources.items():
        recorded = _recorded_off(lines)
        if recorded is None:
            result.fail(f"{name} records no list of the protections that were off")
        elif recorded != expected:
            result.fail(
                f"by config.json the protections off are: {_none(expected)}; "
                f"{name} recorded: {_none(recorded)}"
            )
    summary = run.summary if isinstance(run.summary, dict) else {}
    pairs = (
        ("method", run.cfg("method"), "method"),
        ("dp", run.cfg("dp") is True, "differential_privacy"),
        ("encryption", run.cfg("encryption") is True, "encryption"),
    )
    for key, said, field in pairs:
        if field in summary and summary[field] != said:
            result.fail(f"config.json says {key} = {said!r}, summary.json {summary[field]!r}")
    evaluation = summary.get("evaluation")
    if isinstance(evaluation, dict) and "released" in evaluation:
        released = run.cfg("release_evaluation") is True
        if evaluation["released"] is not released:
            result.fail(
                f"config.json says release_evaluation = {released}, summary.json says the "
                f"evaluation was {'released' if evaluation['released'] else 'kept private'}"
            )


def _check_masking(run: RunEvidence, result: CheckResult) -> None:
    """Masking on (with encryption and a method that shares): every update of every round was
    masked, as metrics.jsonl records it; masking off: no round was."""
    if "masking" not in (run.config or {}):
        result.note("config.json predates masking: the run's rounds were not masked")
    masked = run.cfg("encryption") is True and run.cfg("masking") is True
    sharing = bool(allowed_groups(run.cfg("method"), run.cfg("head")))
    result.evidence["masking"] = masked
    for record in run.metrics or []:
        number = record.get("round")
        masking = record.get("masking") if isinstance(record.get("masking"), dict) else {}
        masked_with = masking.get("masked_with") if isinstance(masking, dict) else None
        masked_with = set(masked_with) if isinstance(masked_with, list) else set()
        contributors = (record.get("aggregate") or {}).get("contributors")
        sent = set(contributors) if isinstance(contributors, list) else set()
        if masked and sharing and sent - masked_with:
            result.fail(
                f"config.json says masking on, but metrics.jsonl shows round {number}'s "
                f"update(s) of {_words(sent - masked_with)} unmasked"
            )
        if not masked and masked_with:
            result.fail(
                f"config.json says masking off, but metrics.jsonl shows round {number} masked "
                f"with {_words(masked_with)}"
            )


def _check_sizes(run: RunEvidence, result: CheckResult) -> None:
    clients = (run.setup or {}).get("clients")
    number = run.cfg("num_clients")
    if isinstance(clients, dict) and isinstance(number, int) and len(clients) != number:
        result.fail(f"config.json says {number} clients, setup.json sets up {len(clients)}")
    rounds = run.cfg("rounds")
    done = [r.get("round") for r in run.metrics or [] if isinstance(r.get("round"), int)]
    if isinstance(rounds, int) and done and max(done) > rounds:
        result.fail(f"config.json plans {rounds} rounds, metrics.jsonl records round {max(done)}")
