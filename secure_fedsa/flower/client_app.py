"""The ClientApp: one site's Client, driven by the ServerApp's messages.

Each message runs in a fresh ClientApp process (Flower's subprocess isolation), so the site is
rebuilt from its files every time: its data file, its ``client.keys`` and its state directory
(``state.pt`` and ``privacy_ledger.json``, written by :class:`secure_fedsa.client.Client`).
Every reply is recorded in ``<state-dir>/egress/<client>.jsonl`` before it is returned, in the
same format as the in-process transport: the update as ``form: ciphertext`` with its tensor
names, the small report as ``kind: report`` with no tensors. The report holds the training
status, ε and, about the aggregate, only a status code (applied / rejected / none): nothing
computed from decrypted values goes back to the server unless the run config sets
``report-accuracy = true`` (then held-out accuracy, a documented leak channel). The training loss
is never sent. Why an aggregate was rejected, and the site's accuracy, stay on the site
(``<state-dir>/aggregates.jsonl`` and ``<state-dir>/summary.json``).

``train``: train one round (DP-SGD), reply with the encrypted, signed update and a report.
``evaluate``: verify, decrypt, check and apply the aggregate if one came (or keep the previous
shared tensors), evaluate, and on the final round export the (DP) adapter to
``<state-dir>/adapter``, finish it with ``finish-steps`` (no DP, after the site's last release;
into ``<state-dir>/finished-adapter``) and evaluate the full test split (and validation split,
if any) of the site's final model.
"""

from __future__ import annotations

import json
import os
import time

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from secure_fedsa.client import finish_export
from secure_fedsa.crypto.masking import chunk_mask
from secure_fedsa.crypto.signing import Identity, load_identity
from secure_fedsa.egress import EgressLog
from secure_fedsa.errors import BudgetExhausted, ConfigError
from secure_fedsa.flower import protocol as p
from secure_fedsa.flower import secagg_records as sr
from secure_fedsa.model_card import write_site_cards
from secure_fedsa.node import Site, SiteSpec, build_site
from secure_fedsa.secagg import MaskingClient, RoundFailed, fixed_threshold

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = ClientApp()


def _deployment(message: Message, context: Context) -> tuple[p.Deployment, SiteSpec]:
    deployment = p.Deployment.from_run_config(dict(context.run_config))
    expected = message.content[p.CONFIG]["config-digest"]
    if p.config_digest(deployment.config) != expected:
        raise ConfigError(
            "this site derives a different configuration from the run config than the server "
            "(different secure_fedsa versions?)"
        )
    return deployment, p.site_spec(dict(context.node_config))


def _site(message: Message, context: Context) -> tuple[Site, p.Deployment, EgressLog]:
    deployment, spec = _deployment(message, context)
    site = build_site(deployment.config, spec)
    return site, deployment, EgressLog(spec.state_dir / "egress")


def _identity(message: Message, context: Context) -> tuple[p.Deployment, Identity, EgressLog]:
    """What secure aggregation's phases need: the site's identity, not its model or data."""
    deployment, spec = _deployment(message, context)
    if spec.identity is None:
        raise ConfigError("the site needs its signing identity (node config identity=PATH)")
    identity = load_identity(spec.identity)
    if identity.key.owner != spec.name:
        raise ConfigError(
            f"the identity file belongs to {identity.key.owner!r}, this site is {spec.name!r}"
        )
    return deployment, identity, EgressLog(spec.state_dir / "egress")


def _secagg_reply(
    message: Message,
    context: Context,
    egress: EgressLog,
    client: MaskingClient,
    kind: str,
    record: ConfigRecord,
    data: bytes,
) -> Message:
    """A secure-aggregation reply: the round's secrets kept in memory for the next phase, the
    reply recorded in the egress log, then returned."""
    sr.keep(context, client)
    egress.record(
        client.client_id,
        round_number=int(message.content[p.CONFIG]["round"]),
        kind=kind,
        payload=data,
        encrypted=kind == "secagg-shares",  # each share is encrypted to its recipient
        tensors=[],
        transport=p.TRANSPORT,
    )
    return Message(RecordDict({p.SECAGG: record}), reply_to=message)


@app.query("secagg_keys")
def secagg_keys(message: Message, context: Context) -> Message:
    """Phase 1: verify the server's roster, make the round's key pairs, advertise them."""
    _, identity, egress = _identity(message, context)
    settings = message.content[p.CONFIG]
    roster = sr.received_roster(settings, identity)
    client = MaskingClient(
        identity.key.owner, identity.key, roster, str(settings["session"]), int(settings["round"])
    )
    advert = client.advertise()
    data = advert.c_pk + advert.s_pk + advert.signature
    return _secagg_reply(
        message, context, egress, client, "secagg-keys", sr.advert_record(advert), data
    )


def _kept(message: Message, context: Context):  # noqa: ANN202
    """A later phase's start: the site's identity and the masking client it kept this round."""
    deployment, identity, egress = _identity(message, context)
    settings = message.content[p.CONFIG]
    client = sr.restore(context, identity.key, str(settings["session"]), int(settings["round"]))
    return deployment, identity, egress, client


@app.query("secagg_shares")
def secagg_shares(message: Message, context: Context) -> Message:
    """Phase 2: check every peer's advert, reply with this site's shares encrypted to each."""
    deployment, identity, egress, client = _kept(message, context)
    adverts = sr.adverts_from(message.content.config_records[p.SECAGG])
    threshold = fixed_threshold(deployment.config.masking_threshold, deployment.round_clients)
    out = client.share(adverts, threshold=threshold)  # the site's own threshold, not the server's
    data = b"".join(out[peer] for peer in sorted(out))
    return _secagg_reply(
        message, context, egress, client, "secagg-shares", sr.shares_record(out), data
    )


@app.query("secagg_reveal")
def secagg_reveal(message: Message, context: Context) -> Message:
    """Phase 4: reveal the shares unmasking needs (never both kinds for one client)."""
    _, identity, egress, client = _kept(message, context)
    settings = message.content[p.CONFIG]
    reveal = client.reveal(
        sr.shares_from(message.content.config_records[p.SECAGG]),
        present=list(settings["present"]),
        dropped=list(settings["dropped"]),
    )
    data = b"".join([*reveal.b_shares.values(), *reveal.s_shares.values()])
    # kept again: what was revealed is remembered for the rest of the round
    return _secagg_reply(
        message, context, egress, client, "secagg-reveal", sr.reveal_record(reveal), data
    )


def _report(egress: EgressLog, site: Site, round_number: int, values: dict) -> ConfigRecord:
    """The report that goes back with a reply; recorded in the egress log first."""
    values = {k: v for k, v in values.items() if v is not None}
    payload = json.dumps(values, sort_keys=True).encode()
    egress.record(
        site.client.client_id,
        round_number=round_number,
        kind="report",
        payload=payload,
        encrypted=False,
        tensors=[],
        transport=p.TRANSPORT,
    )
    return ConfigRecord(values)


@app.train()
def train(message: Message, context: Context) -> Message:
    site, deployment, egress = _site(message, context)
    client = site.client
    round_number = int(message.content[p.CONFIG]["round"])
    session = str(message.content[p.CONFIG]["session"])
    # the masks first: a site that cannot mask does not train (nothing spent for nothing)
    mask = (
        _mask(message, context, client.identity.key, deployment, session, round_number)
        if site.manifest.size > 0
        else None
    )
    content = RecordDict()
    report: dict = {"client-id": client.client_id}
    try:
        result = client.train(round_number)
    except BudgetExhausted as exc:
        report.update(status="budget exhausted", reason=str(exc))
    else:
        stats = result.stats
        report.update(
            status="trained",
            resumed=result.resumed,
            steps=None if stats is None else int(stats.steps),
            epsilon=result.epsilon,
        )
        if site.manifest.size > 0:
            payload = client.make_update(round_number, session, mask)
            egress.record(
                client.client_id,
                round_number=round_number,
                kind="update",
                payload=payload,
                encrypted=deployment.config.encryption,
                tensors=client.manifest.names,
                transport=p.TRANSPORT,
                key_fingerprint=client.codec.fingerprint,
                manifest_hash=client.manifest.digest,
                ledger_entry=client.trained_entry,
            )
            array = Array(
                dtype=p.ARRAY_DTYPE, shape=(len(payload),), stype=p.ARRAY_STYPE, data=payload
            )
            content[p.UPDATE] = ArrayRecord({p.UPDATE: array})
    content[p.REPORT] = _report(egress, site, round_number, report)
    return Message(content, reply_to=message)


@app.evaluate()
def evaluate(message: Message, context: Context) -> Message:
    site, deployment, egress = _site(message, context)
    client = site.client
    settings = message.content[p.CONFIG]
    round_number = int(settings["round"])
    record = message.content.array_records.get(p.AGGREGATE)
    array = None if record is None else record.get(p.AGGREGATE)
    status = p.AGGREGATE_NONE
    if array is not None:
        problems = (
            [f"unexpected aggregate array type {array.stype!r}"]
            if array.stype != p.ARRAY_STYPE
            else client.apply_aggregate(array.data, round_number, str(settings["session"]))
        )
        status = p.AGGREGATE_REJECTED if problems else p.AGGREGATE_APPLIED
        _note(client.directory / "aggregates.jsonl", {"round": round_number, "status": status,
                                                       "problems": problems})  # fmt: skip
    limit = deployment.config.eval_examples_per_round
    accuracy = client.evaluate(limit)
    validated = len(client.data.validation) > 0
    report: dict = {
        "client-id": client.client_id,
        "epsilon": client.epsilon_spent,
        "aggregate": status,
    }
    if deployment.report_accuracy:
        report["accuracy"] = accuracy
        if validated:
            report["validation-accuracy"] = client.evaluate(limit, split="validation")
    if bool(settings["final"]):
        labels = list(site.label_names)
        steps = deployment.config.finish_steps
        client.export(client.directory / "adapter", labels)  # the DP model
        # finishing: after the site's last release, never sent (docs/privacy.md, "Finishing")
        finished = client.finish(steps) if steps else None
        if finished is not None:
            finish_export(client, client.directory, labels, finished, steps)
        final = client.evaluate(state=finished)
        final_validation = (
            client.evaluate(split="validation", state=finished) if validated else None
        )
        released = final if deployment.report_accuracy else None
        write_site_cards(client.directory, client.client_id, deployment.config, released)
        report["final"] = True
        if deployment.report_accuracy:
            report["final-accuracy"] = final
            report["final-validation-accuracy"] = final_validation
        summary = {
            "round": round_number,
            "accuracy": final,
            "accuracy_validation": final_validation,
            "epsilon": client.epsilon_spent,
            "finish_steps": steps,
        }
        (client.directory / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    content = RecordDict({p.REPORT: _report(egress, site, round_number, report)})
    return Message(content, reply_to=message)


def _mask(message, context, key, deployment, session, round_number):  # noqa: ANN001, ANN202
    """The masks of this round (None with masking off). With masking on, a site never sends an
    unmasked update: without a mask set from the server, or without its kept keys, it refuses."""
    if not (deployment.config.masking and deployment.config.encryption):
        return None
    settings = message.content[p.CONFIG]
    if "masked-with" not in settings:
        raise RoundFailed("masking is on but the server named no clients to mask with")
    client = sr.restore(context, key, session, round_number)
    seeds = client.seeds(list(settings["masked-with"]))
    context_bytes = client.context

    def mask(chunk: int, count: int, modulus: int):  # noqa: ANN202
        return chunk_mask(seeds, context=context_bytes, chunk=chunk, count=count, modulus=modulus)

    return mask


def _note(path, record: dict) -> None:  # noqa: ANN001
    """The site's own log of aggregates: kept on the site, never sent."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"time": time.time(), **record}) + "\n")
