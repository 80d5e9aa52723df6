"""The ClientApp: one site's :class:`~secure_fedsa.engine.site.Participant`, over Flower messages.

Each message runs in a fresh ClientApp process (Flower's subprocess isolation), so the site is
rebuilt from its files every time: its data file, its ``client.keys`` and its state directory
(``state.pt`` and ``privacy_ledger.json``, written by :class:`secure_fedsa.site.client.Client`); the
masking phases need only its identity. What each message does is the participant's (the same
code as in-process): this module reads the request, hands it over, and sends the answer back.
Every reply is recorded in ``<state-dir>/egress/<client>.jsonl`` before it is returned: updates
and secure aggregation's messages by the participant, the plaintext reports (``kind: report``,
no tensors) here. A report holds the training status, steps, ε, public DP parameters and, about
the aggregate, only a status code: nothing computed from decrypted values goes back to the server
unless the run config sets ``report-accuracy = true`` (then accuracy, a documented leak channel).
The training loss is never sent. Why an aggregate was rejected, and the site's accuracies, stay on
the site (``<state-dir>/aggregates.jsonl``, ``rounds.jsonl`` and ``evaluation.json``).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from secure_fedsa.crypto.signing import load_identity
from secure_fedsa.engine import messages as m
from secure_fedsa.engine.site import Participant, SiteSettings
from secure_fedsa.errors import ConfigError
from secure_fedsa.secagg.site_policy import pinned_policy
from secure_fedsa.site.build import build_site, run_labels
from secure_fedsa.site.egress import EgressLog
from secure_fedsa.site.model_card import write_site_cards
from secure_fedsa.transports.flower import messages as fm
from secure_fedsa.transports.flower import protocol as p
from secure_fedsa.transports.flower.secagg_records import KEPT, ContextSecrets

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = ClientApp()


def _participant(message: Message, context: Context, *, with_model: bool) -> Participant:
    """This site, from its own files: its identity always, its model, data and ledger when the
    request needs them."""
    deployment = p.Deployment.from_run_config(dict(context.run_config))
    if p.config_digest(deployment.config) != message.content[p.CONFIG]["config-digest"]:
        raise ConfigError(
            "this site derives a different configuration from the run config than the server "
            "(different secure_fedsa versions?)"
        )
    spec = p.site_spec(dict(context.node_config))
    if spec.identity is None:
        raise ConfigError("the site needs its signing identity (node config identity=PATH)")
    identity = load_identity(spec.identity)
    if identity.key.owner != spec.name:
        raise ConfigError(
            f"the identity file belongs to {identity.key.owner!r}, this site is {spec.name!r}"
        )
    site = build_site(deployment.config, spec) if with_model else None
    settings = SiteSettings(
        deployment.config,
        labels=site.label_names if site else run_labels(deployment.config),
        adapter_dir=spec.state_dir / "adapter",
        transport=p.TRANSPORT,
        policy=pinned_policy(dict(context.node_config)),  # the site's own, never the server's
    )
    egress = EgressLog(spec.state_dir / "egress")
    return Participant(
        identity,
        settings,
        egress,
        ContextSecrets(context),
        site.client if site else None,
        kept=ContextSecrets(context, key=KEPT),
    )


def _answer(message: Message, context: Context, *, with_model: bool) -> Message:
    site = _participant(message, context, with_model=with_model)
    request = fm.read_request(message)
    reply = site.handle(request)
    if isinstance(reply, m.FinalReport):  # each exported adapter's README.md (model_card.py)
        released = None if reply.evaluation is None else reply.evaluation.accuracy
        write_site_cards(site.client.directory, site.name, site.settings.config, released)
    report = reply.report if isinstance(reply, m.TrainReply) else reply
    if isinstance(report, tuple(m.REPORTS.values())):
        site.egress.record(
            site.name,
            round_number=request.round,
            kind="report",
            payload=m.report_bytes(report),
            encrypted=False,
            tensors=[],
            transport=p.TRANSPORT,
        )
    return Message(fm.reply_content(reply), reply_to=message)


def _handler(*, with_model: bool) -> Callable[[Message, Context], Message]:
    def handle(message: Message, context: Context) -> Message:
        return _answer(message, context, with_model=with_model)

    return handle


# Masking set-up, 1: verify the server's roster, advertise the round's keys.
secagg_keys = app.query("secagg_keys")(_handler(with_model=False))
# Masking set-up, 2: this site's shares, each encrypted to one peer.
secagg_shares = app.query("secagg_shares")(_handler(with_model=False))
# Train one round (DP-SGD), reply with the masked, encrypted, signed update and a report.
train = app.train()(_handler(with_model=True))
# Consistency: sign the survivor set the server claims (one set per round).
secagg_survivors = app.query("secagg_survivors")(_handler(with_model=False))
# Unmasking: reveal the shares the server needs (never both kinds for one client), only with t
# signatures of the survivor set this site signed.
secagg_reveal = app.query("secagg_reveal")(_handler(with_model=False))
# Check and apply the aggregate (or keep the round's starting shared tensors), evaluate.
evaluate = app.evaluate()(_handler(with_model=True))
# After the last round: export the (DP) adapter to <state-dir>/adapter, finish it with
# finish-steps (no DP, after the site's last release; into <state-dir>/finished-adapter),
# evaluate the final model into evaluation.json.
finish = app.query("finish")(_handler(with_model=True))
# A failed round stops the run: forget its masking secrets (no evaluate of it will come).
forget = app.query("forget")(_handler(with_model=False))
