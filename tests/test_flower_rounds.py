"""The ServerApp's rounds against the real ClientApp functions, through an in-memory grid.

No processes and no network: a fake Grid hands each message to the ClientApp's ``train`` /
``evaluate`` with that node's Context, as a SuperNode would. Covers dropouts, a round below
min-clients and resuming it. The multi-process TLS deployment is tests/test_flower_deployment.py.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration

pytest.importorskip("flwr")

from flower_grid import FakeGrid, _task_identity, copy, run, site_context  # noqa: E402, F401
from flwr.app import Context, Message, RecordDict  # noqa: E402

SITES = ("site-a", "site-b", "site-c")
FOUR = (*SITES, "site-d")
BASE = {
    "rounds": 2,
    "local-steps": 1,
    "num-layers": 1,
    "max-length": 12,
    "batch-size": 32,
    "physical-batch-size": 32,
    "eval-examples": 8,
    "epsilon": 8.0,
    "accountant": "pld",
    "labels": "rotten,fresh",
    "clients": 3,
    "min-clients": 2,
    "wait-for-nodes": 0.0,
    "round-timeout": 0.2,
}


def _make_sites(root: Path, names: tuple[str, ...]) -> tuple[Path, dict, dict]:
    from secure_fedsa.data import BUNDLED
    from secure_fedsa.site.build import SiteSpec, site_data
    from secure_fedsa.site.keys import init_keys
    from secure_fedsa.transports.flower.protocol import Deployment

    dataset = BUNDLED["rotten_tomatoes"]()
    chosen = np.random.default_rng(3).choice(len(dataset), size=160 * len(names), replace=False)
    files = {}
    for number, site in enumerate(names):
        path = root / f"{site}.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for i in chosen[number * 160 : (number + 1) * 160]:
                writer.writerow([dataset.texts[i], dataset.label_names[dataset.labels[i]]])
        files[site] = path
    # `keys init --client-sizes`: each site's training records (public) fix its weight
    config = Deployment.from_run_config(BASE).config
    sizes = {
        site: site_data(config, SiteSpec(state_dir=root / site, data_file=path))[0].num_train
        for site, path in files.items()
    }
    keys = init_keys(root / "keys", max_clients=8, client_ids=list(names), sizes=sizes)
    return root, keys, files


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    return _make_sites(tmp_path_factory.mktemp("flower-rounds"), SITES)


@pytest.fixture(scope="module")
def four_sites(tmp_path_factory):
    """Four sites: at the threshold floor against a lying server (t = floor(2n/3) + 1), three
    sites tolerate no dropout while masking; four tolerate one."""
    return _make_sites(tmp_path_factory.mktemp("flower-rounds-4"), FOUR)


def _contexts(tmp: Path, keys: dict, files: dict, run_config: dict) -> dict[int, Context]:
    """One context per site of ``files`` (node 100 + its position)."""
    return {
        100 + n: site_context(
            100 + n,
            {
                "data-file": str(files[site]),
                "keys": str(keys["client"]),
                "identity": str(keys["identities"] / f"{site}.key"),
                "state-dir": str(tmp / site),
            },
            run_config,
        )
        for n, site in enumerate(files)
    }


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _ledger_rounds(state_dir: Path) -> list[int]:
    ledger = json.loads((state_dir / "privacy_ledger.json").read_text())
    return [e["round"] for e in ledger["entries"]]


def test_a_dropout_is_recorded_and_the_round_completes(four_sites, tmp_path):
    root, keys, files = four_sites
    run_dir = tmp_path / "server"
    config = {**BASE, "clients": 4, "keys-dir": str(root / "keys"), "run-dir": str(run_dir)}
    grid = FakeGrid(_contexts(tmp_path, keys, files, config))

    original = grid.pull_messages

    def pull(ids):  # site-c crashes once round 1 is over
        if (run_dir / "metrics.jsonl").exists():
            grid.down = {102}
        return original(ids)

    grid.pull_messages = pull
    summary = run(grid, config)
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    round1, round2 = _metrics(run_dir)
    assert round1["contributors"] == 4 and not round1["dropouts"]
    assert round2["contributors"] == 3
    assert round2["dropouts"] == [  # gone before the round's key advertisement
        {"client": "site-c", "phase": "secagg-keys", "reason": "no reply within 0.2 s"}
    ]
    assert round2["masking"]["masked_with"] == ["site-a", "site-b", "site-d"]
    assert set(summary["privacy"]) == {"site-a", "site-b", "site-d"}  # the sites that finished
    # nothing computed from decrypted values reached the server: no accuracy, a status code
    assert summary["evaluation"]["released"] is False and "per_client" not in summary["evaluation"]
    for record in (round1, round2):
        assert record["aggregate"]["status"] == "applied"
        for entry in record["clients"].values():
            assert "accuracy_subset" not in entry and entry["aggregate"] in ("applied", "none")
    local = json.loads((tmp_path / "site-a" / "evaluation.json").read_text())
    assert 0 <= local["accuracy"] <= 1  # the site keeps its own accuracy
    assert _ledger_rounds(tmp_path / "site-c") == [1]
    egress = [json.loads(x) for x in (tmp_path / "site-a" / "egress" / "site-a.jsonl").open()]
    assert {e["form"] for e in egress if e["kind"] == "update"} == {"ciphertext"}
    # the server's run directory holds no secret and no plaintext update
    secret = json.loads(Path(keys["client"]).read_text())["secret_key"]
    assert all(secret[:64] not in p.read_text() for p in run_dir.iterdir())


def test_below_min_clients_fails_cleanly_and_resumes(four_sites, tmp_path):
    from secure_fedsa.transports.flower import secagg_records as sr
    from secure_fedsa.transports.flower.server_app import RoundFailed

    root, keys, files = four_sites
    run_dir = tmp_path / "server"
    config = {
        **BASE,
        "rounds": 1,
        "clients": 4,
        "min-clients": 4,
        "keys-dir": str(root / "keys"),
        "run-dir": str(run_dir),
    }
    grid = FakeGrid(_contexts(tmp_path, keys, files, config))
    grid.down = {102}
    with pytest.raises(RoundFailed, match="round 1 failed: 3 accepted"):
        run(grid, config)
    failed = json.loads((run_dir / "summary.json").read_text())
    assert failed["status"] == "failed" and failed["failed_round"] == 1
    assert "resume-dir" in failed["resume"]
    assert not (run_dir / "metrics.jsonl").exists()
    assert _ledger_rounds(tmp_path / "site-a") == [1]
    # site-a, site-b and site-d had masked: the failed round's secrets are forgotten, not kept
    # for as long as their SuperNodes run
    assert all(sr.STATE not in c.state for c in grid.contexts.values())

    resumed = {**config, "resume-dir": str(run_dir)}
    grid = FakeGrid(_contexts(tmp_path, keys, files, resumed))
    summary = run(grid, resumed)
    assert summary["status"] == "completed" and summary["rounds_completed"] == 1
    (record,) = _metrics(run_dir)
    assert record["contributors"] == 4
    assert record["clients"]["site-a"]["resumed"] and not record["clients"]["site-c"]["resumed"]
    for site in FOUR:  # privacy spent once for round 1, also by the sites that re-sent it
        assert _ledger_rounds(tmp_path / site) == [1]

    with pytest.raises(Exception, match="different configuration"):
        run(grid, {**resumed, "lr": 0.1})


def test_a_malformed_reply_is_a_dropout_not_a_crash(four_sites, tmp_path):
    root, keys, files = four_sites
    run_dir = tmp_path / "server"
    config = {
        **BASE,
        "rounds": 1,
        "clients": 4,
        "keys-dir": str(root / "keys"),
        "run-dir": str(run_dir),
    }
    grid = FakeGrid(_contexts(tmp_path, keys, files, config))
    original = grid.pull_messages

    def pull(ids):  # site-c's ClientApp answers with an empty message
        replies = []
        for reply in original(ids):
            if reply.metadata.src_node_id == 102:
                reply = Message(RecordDict(), reply_to=_stub(reply))
            replies.append(reply)
        return replies

    grid.pull_messages = pull
    summary = run(grid, config)
    (record,) = _metrics(run_dir)
    assert summary["status"] == "completed" and record["contributors"] == 3
    assert {(d["client"], d["reason"]) for d in record["dropouts"]} == {
        ("node-102", "malformed key advertisement")
    }


def _stub(reply: Message) -> Message:
    """A message whose reply carries the same reply-to id and source as ``reply``."""
    meta = reply.metadata
    stub = Message(RecordDict(), dst_node_id=meta.src_node_id, message_type=meta.message_type,
                   ttl=10)  # fmt: skip
    stub.metadata.__dict__["_message_id"] = meta.reply_to_message_id
    return stub


def test_accuracy_reports_are_opt_in(sites, tmp_path):
    root, keys, files = sites
    run_dir = tmp_path / "server"
    config = {**BASE, "rounds": 1, "keys-dir": str(root / "keys"), "run-dir": str(run_dir),
              "report-accuracy": True}  # fmt: skip
    summary = run(FakeGrid(_contexts(tmp_path, keys, files, config)), config)
    assert summary["evaluation"]["released"] is True
    assert set(summary["evaluation"]["per_client"]) == set(SITES)
    assert all(0 <= v <= 1 for v in summary["evaluation"]["per_client"].values())
    (record,) = _metrics(run_dir)
    assert all("accuracy_subset" in c for c in record["clients"].values())


def test_an_altered_aggregate_is_rejected_and_only_a_status_code_goes_back(sites, tmp_path):
    from flwr.app import Array, ArrayRecord

    from secure_fedsa.transports.flower import protocol as p

    root, keys, files = sites
    run_dir = tmp_path / "server"
    config = {**BASE, "rounds": 2, "keys-dir": str(root / "keys"), "run-dir": str(run_dir)}
    grid = FakeGrid(_contexts(tmp_path, keys, files, config))
    original = grid.push_messages

    def push(messages):  # a relay flips one byte of round 1's aggregate on its way to the sites
        for message in messages:
            record = message.content.array_records.get(p.AGGREGATE)
            if record is not None and int(message.content[p.CONFIG]["round"]) == 1:
                data = bytearray(record[p.AGGREGATE].data)
                data[len(data) // 2] ^= 1
                array = Array(dtype=p.ARRAY_DTYPE, shape=(len(data),), stype=p.ARRAY_STYPE,
                              data=bytes(data))  # fmt: skip
                message.content[p.AGGREGATE] = ArrayRecord({p.AGGREGATE: array})
        return original(messages)

    grid.push_messages = push
    summary = run(grid, config)
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    round1, round2 = _metrics(run_dir)
    assert round1["aggregate"]["status"] == "rejected"
    assert set(round1["aggregate"]["rejected_by"]) == set(SITES)
    assert set(round1["aggregate"]["rejected_by"].values()) == {"rejected"}  # no reason text
    assert round2["aggregate"]["status"] == "applied"  # the federation went on
    assert [r["round"] for r in summary["rejected_aggregates"]] == [1]
    assert "checksum" not in json.dumps(round1) and "signature" not in json.dumps(round1)
    # the reason stays on the site
    notes = [json.loads(x) for x in (tmp_path / "site-a" / "aggregates.jsonl").open()]
    assert notes[0]["status"] == "rejected" and "checksum" in notes[0]["problems"][0]


# --------------------------------------------------------------------------- secure aggregation
def _shared(state_dir: Path, key: str) -> np.ndarray:
    """A site's shared tensors (``state``: as loaded from the aggregate; ``trained``: as it
    encrypted them), flattened in manifest order."""
    import torch

    saved = torch.load(state_dir / "state.pt", weights_only=True)[key]
    names = sorted(n for n in saved if ".lora_A." in n)
    return np.concatenate([saved[n].double().flatten().numpy() for n in names])


def _train_size(state_dir: Path) -> int:
    return json.loads((state_dir / "privacy_ledger.json").read_text())["identity"]["dataset_size"]


def test_a_site_dropping_after_masking_leaves_the_sum_exact(four_sites, tmp_path, monkeypatch):
    """Four sites: site-c advertises keys and shares its secrets in round 2, then crashes
    before sending its masked update: the others reveal its mask key, the server removes the
    dangling masks, and the aggregate every survivor loads is exactly the weighted mean of the
    other three updates."""
    from secure_fedsa.transports.flower import secagg_records as sr

    root, keys, files = four_sites
    run_dir = tmp_path / "server"
    config = {**BASE, "clients": 4, "keys-dir": str(root / "keys"), "run-dir": str(run_dir)}
    grid = FakeGrid(_contexts(tmp_path, keys, files, config))
    original = grid.pull_messages

    def pull(ids):  # site-c is down from round 2's train message on
        for mid in ids:
            message = grid.outbox.get(mid)
            if (
                message is not None
                and message.metadata.message_type == "train"
                and message.metadata.group_id == "2"
            ):
                grid.down = {102}
        return original(ids)

    grid.pull_messages = pull
    kept = _keeping(monkeypatch)
    summary = run(grid, config)
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    round1, round2 = _metrics(run_dir)
    assert round1["masking"]["masked_with"] == list(FOUR) and round1["masking"]["dropped"] == []
    assert round2["masking"] == {
        "threshold": 3,
        "participants": list(FOUR),
        "masked_with": list(FOUR),  # site-c masked with the others, then vanished
        "dropped": ["site-c"],
        "revealed_by": ["site-a", "site-b", "site-d"],
    }
    assert [(d["client"], d["phase"]) for d in round2["dropouts"]] == [("site-c", "train")]
    assert round2["aggregate"]["status"] == "applied"
    weights = {s: _train_size(tmp_path / s) for s in ("site-a", "site-b", "site-d")}
    expected = sum(w * _shared(tmp_path / s, "trained") for s, w in weights.items()) / sum(
        weights.values()
    )
    for site in ("site-a", "site-b", "site-d"):
        loaded = _shared(tmp_path / site, "state")
        assert float(np.max(np.abs(loaded - expected))) < 1e-7
    # each site recorded every protocol message it sent; the dropped one revealed nothing
    kinds = {
        site: [
            (e["round"], e["kind"])
            for e in map(json.loads, (tmp_path / site / "egress" / f"{site}.jsonl").open())
        ]  # fmt: skip
        for site in FOUR
    }
    assert (2, "secagg-reveal") in kinds["site-a"] and (2, "secagg-shares") in kinds["site-c"]
    assert (2, "secagg-reveal") not in kinds["site-c"] and (2, "update") not in kinds["site-c"]
    # the rounds' secrets stayed in the SuperNodes' memory: no file of any site or of the
    # server holds them, and no SuperNode still running holds them any more (site-c's died
    # with its process)
    assert len(kept) >= 8
    assert all(sr.STATE not in c.state for n, c in grid.contexts.items() if n != 102)
    secrets = [bytes(state[k]) for state in kept for k in ("b", "c", "s")]
    blobs = b"".join(f.read_bytes() for f in tmp_path.rglob("*") if f.is_file())
    assert all(secret not in blobs and secret.hex().encode() not in blobs for secret in secrets)


def _keeping(monkeypatch) -> list[dict]:
    """Every round secret state a site keeps in its Context, as it keeps it."""
    from secure_fedsa.transports.flower import secagg_records as sr

    kept: list[dict] = []
    real = sr.ContextSecrets.save

    def save(self, state):  # noqa: ANN001
        if self.key == sr.STATE:  # not the survivor set kept from reveal to evaluate
            kept.append(dict(state))
        return real(self, state)

    monkeypatch.setattr(sr.ContextSecrets, "save", save)
    return kept


def test_round_secrets_are_forgotten_by_the_end_of_every_round(sites, tmp_path):
    """A site's X25519 keys and self-mask seed of a round live in its SuperNode's memory from
    its key advertisement to its last use: once a site has answered the round's evaluate, its
    Context holds no secret of that round (nor of any other), also at the end of the run."""
    from secure_fedsa.transports.flower import secagg_records as sr

    root, keys, files = sites
    config = {**BASE, "keys-dir": str(root / "keys"), "run-dir": str(tmp_path / "server")}
    grid = FakeGrid(_contexts(tmp_path, keys, files, config))
    original = grid.pull_messages
    held: list[tuple[int, str]] = []

    def pull(ids):
        kinds = {mid: grid.outbox[mid].metadata for mid in ids if mid in grid.outbox}
        replies = original(ids)
        for meta in kinds.values():
            kind = meta.message_type
            if (
                kind in ("evaluate", "query.finish")
                and sr.STATE in grid.contexts[meta.dst_node_id].state
            ):
                held.append((meta.dst_node_id, f"{kind} of round {meta.group_id}"))
        return replies

    grid.pull_messages = pull
    summary = run(grid, config)
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    assert held == []  # no site kept a round's secrets past its evaluate
    assert all(sr.STATE not in c.state for c in grid.contexts.values())


def test_a_site_refuses_a_forged_roster_and_an_unmasked_round(sites, tmp_path):
    """A site accepts peers' keys only from a roster the federation's server signed, and with
    masking on never sends an update that was not masked."""
    from secure_fedsa.crypto.signing import SigningKey, load_roster
    from secure_fedsa.engine import messages as m
    from secure_fedsa.engine.aggregation import signed_roster
    from secure_fedsa.errors import CryptoError
    from secure_fedsa.secagg.protocol import RoundFailed
    from secure_fedsa.transports.flower import client_app
    from secure_fedsa.transports.flower import protocol as p
    from secure_fedsa.transports.flower.server_app import FlowerFederation

    root, keys, files = sites
    config = {**BASE, "keys-dir": str(root / "keys"), "run-dir": str(tmp_path / "server")}
    contexts = _contexts(tmp_path, keys, files, config)
    grid = FakeGrid(contexts)
    from secure_fedsa.transports.flower.protocol import Deployment

    federation = FlowerFederation(grid, Deployment.from_run_config(config))
    session = federation.session
    roster = load_roster(root / "keys" / "roster.json")
    forged = m.KeysRequest(1, session, *signed_roster(roster, SigningKey.generate("server")))
    message = federation.transport.message(100, forged)
    with pytest.raises(CryptoError, match="not signed by this federation's server"):
        client_app.secagg_keys(copy(message), contexts[100])
    # no masked-with: the server skipped masking
    train = federation.transport.message(100, m.TrainRequest(1, session, None))
    with pytest.raises(RoundFailed, match="named no clients to mask with"):
        client_app.train(copy(train), contexts[100])
    train = federation.transport.message(100, m.TrainRequest(1, session, SITES))
    with pytest.raises(RoundFailed, match="holds no masking keys for round 1"):
        client_app.train(copy(train), contexts[100])  # no key advertisement happened
    assert _ledger_rounds(tmp_path / "site-a") == []  # nothing was spent
    assert p.SECAGG not in message.content.config_records


def test_a_site_refuses_a_server_signed_roster_that_swaps_its_peers_keys(sites, tmp_path):
    """The federation's own server key signs a roster whose peers' keys are the server's: the
    site's identity pins another roster, so it refuses before advertising anything (issue 33.1).
    Power check: the same roster passes the signature check alone."""
    from secure_fedsa.crypto.signing import Roster, SigningKey, load_roster, verify
    from secure_fedsa.engine import messages as m
    from secure_fedsa.engine.aggregation import ROSTER_KIND, signed_roster
    from secure_fedsa.errors import CryptoError
    from secure_fedsa.transports.flower import client_app
    from secure_fedsa.transports.flower import secagg_records as sr
    from secure_fedsa.transports.flower.protocol import Deployment
    from secure_fedsa.transports.flower.server_app import FlowerFederation

    root, keys, files = sites
    config = {**BASE, "keys-dir": str(root / "keys"), "run-dir": str(tmp_path / "server")}
    contexts = _contexts(tmp_path, keys, files, config)
    federation = FlowerFederation(FakeGrid(contexts), Deployment.from_run_config(config))
    honest = load_roster(root / "keys" / "roster.json")
    own = SigningKey.generate("server-as-peer").public_bytes
    swapped = Roster({c: (k if c == "site-a" else own) for c, k in honest.clients.items()},
                     honest.server, weights=honest.weights)  # fmt: skip
    text, signature = signed_roster(swapped, federation.keys.identity.key)
    assert verify(honest.server, signature, ROSTER_KIND, bytes.fromhex(swapped.digest))
    request = m.KeysRequest(1, federation.session, text, signature)
    message = federation.transport.message(100, request)
    with pytest.raises(CryptoError, match="substitutes peers' keys"):
        client_app.secagg_keys(copy(message), contexts[100])
    assert sr.STATE not in contexts[100].state  # no key pair was made for that roster


def test_different_survivor_sets_over_flower_unmask_nobody_and_the_round_completes(
    four_sites, tmp_path
):
    """The server tells site-c that site-d dropped while the others are told it is present
    (issue 33.2). site-c signs its set, finds no t signatures of it at the reveal and reveals
    nothing (its ClientApp errs: a dropout); nobody reveals site-d's mask key; the three others
    agree on one set and the round completes with the exact sum."""
    from secure_fedsa.transports.flower import client_app
    from secure_fedsa.transports.flower import protocol as p

    root, keys, files = four_sites
    run_dir = tmp_path / "server"
    config = {**BASE, "rounds": 1, "clients": 4, "keys-dir": str(root / "keys"),
              "run-dir": str(run_dir)}  # fmt: skip
    grid = FakeGrid(_contexts(tmp_path, keys, files, config))
    lied, s_shares_of_d, refused = [], [], []
    push = grid.push_messages

    def lying_push(messages):
        for message in messages:
            kind = message.metadata.message_type
            if message.metadata.dst_node_id == 102 and kind in (
                "query.secagg_survivors", "query.secagg_reveal"
            ):  # fmt: skip
                settings = message.content[p.CONFIG]
                settings["present"] = [c for c in settings["present"] if c != "site-d"]
                settings["dropped"] = [*settings["dropped"], "site-d"]
                lied.append(kind)
        return push(messages)

    def pull(ids):  # a ClientApp that raises answers nothing (Flower: an error reply)
        replies = []
        for mid in ids:
            message = grid.outbox.pop(mid)
            handler = getattr(client_app, message.metadata.message_type.split(".")[-1])
            try:
                reply = handler(copy(message), grid.contexts[message.metadata.dst_node_id])
            except Exception as exc:  # noqa: BLE001
                refused.append(str(exc))
                continue
            if message.metadata.message_type == "query.secagg_reveal":
                record = reply.content.config_records[p.SECAGG]
                s_shares_of_d.extend(k for k in record if k == "s/site-d")
            replies.append(reply)
        return replies

    grid.push_messages, grid.pull_messages = lying_push, pull
    summary = run(grid, config)
    assert lied == ["query.secagg_survivors", "query.secagg_reveal"]
    assert s_shares_of_d == []  # site-d's mask key was never revealed
    assert any("signed the survivor set" in r for r in refused)
    (record,) = _metrics(run_dir)
    assert summary["status"] == "completed"
    # the three that agreed load the sum; site-c, shown another set, refuses it at the evaluate
    # (the aggregate names a set it did not sign) and would sit the next round out
    assert record["aggregate"]["rejected_by"] == {"site-c": "rejected"}
    assert {c: e["aggregate"] for c, e in record["clients"].items()} == {
        "site-a": "applied", "site-b": "applied", "site-c": "rejected", "site-d": "applied"
    }  # fmt: skip
    assert record["masking"]["revealed_by"] == ["site-a", "site-b", "site-d"]
    assert [(d["client"], d["phase"]) for d in record["dropouts"]] == [("site-c", "secagg-reveal")]


def test_a_site_refuses_a_round_below_its_pinned_threshold_before_training(sites, tmp_path):
    """site-a's own node config pins min-masking-threshold = 4; the server's run asks for 3 (the
    floor for 3 sites): site-a refuses at the key advertisement, before any DP step, says why,
    and its ledger holds nothing. The round then has too few sites and fails (issue 33.3)."""
    from secure_fedsa.transports.flower.server_app import RoundFailed

    root, keys, files = sites
    run_dir = tmp_path / "server"
    config = {**BASE, "rounds": 1, "keys-dir": str(root / "keys"), "run-dir": str(run_dir)}
    contexts = _contexts(tmp_path, keys, files, config)
    contexts[100].node_config["min-masking-threshold"] = 4
    with pytest.raises(RoundFailed, match="advertised keys"):
        run(FakeGrid(contexts), config)
    failed = json.loads((run_dir / "summary.json").read_text())
    entry = failed["round"]["clients"]["site-a"]
    assert entry["status"] == "refused (site policy)"
    assert "min-masking-threshold is 4" in entry["reason"]
    ledger = tmp_path / "site-a" / "privacy_ledger.json"
    assert not ledger.exists() or _ledger_rounds(tmp_path / "site-a") == []


def test_clients_per_round_trains_only_the_drawn_sites_and_all_apply_and_finish(sites, tmp_path):
    """clients-per-round = 2 of 3 (seed 3: site-a and site-b in round 1, site-a and site-c in
    round 2): only the drawn sites get the train and masking messages and spend privacy; every
    site applies the aggregate and evaluates; each finishes its own tensors after the last round
    (finish-steps) into its own finished-adapter/, never the server's directory."""
    from secure_fedsa.sampling import sampled

    root, keys, files = sites
    run_dir = tmp_path / "server"
    config = {
        **BASE,
        "seed": 3,
        "clients-per-round": 2,
        "finish-steps": 1,
        "keys-dir": str(root / "keys"),
        "run-dir": str(run_dir),
    }
    grid = FakeGrid(_contexts(tmp_path, keys, files, config))
    drawn = {r: [SITES[n - 100] for n in sampled([100, 101, 102], 2, seed=3, round_number=r)]
             for r in (1, 2)}  # fmt: skip
    assert drawn == {1: ["site-a", "site-b"], 2: ["site-a", "site-c"]}
    summary = run(grid, config)
    assert summary["status"] == "completed" and summary["finish_steps"] == 1
    metrics = _metrics(run_dir)
    for record in metrics:
        chosen = drawn[record["round"]]
        assert record["sampled"] == chosen and not record["dropouts"]
        assert record["masking"]["participants"] == chosen and record["masking"]["threshold"] == 2
        assert record["aggregate"]["contributors"] == chosen
        for site in SITES:
            entry = record["clients"][site]
            assert entry["status"] == ("trained" if site in chosen else "not sampled")
            assert entry["aggregate"] == "applied"
    for site in SITES:
        state_dir = tmp_path / site
        rounds = [r for r, chosen in drawn.items() if site in chosen]
        assert _ledger_rounds(state_dir) == rounds
        sent = [json.loads(x) for x in (state_dir / "egress" / f"{site}.jsonl").open()]
        assert sorted({e["round"] for e in sent if e["kind"] != "report"}) == rounds
        applied = [json.loads(x) for x in (state_dir / "aggregates.jsonl").open()]
        assert [a["round"] for a in applied] == [1, 2]
        note = json.loads((state_dir / "finished-adapter" / "finishing.json").read_text())
        assert note["differentially_private"] is False
        assert (state_dir / "adapter" / "head.safetensors").is_file()  # the DP model
        # each exported model carries its card, and no path of this machine (model_card.py)
        card = (state_dir / "adapter" / "README.md").read_text()
        assert f"{site}, one of" in card and "-differential privacy**" in card
        assert str(tmp_path) not in card
        finished_card = (state_dir / "finished-adapter" / "README.md").read_text()
        assert "**NOT DIFFERENTIALLY PRIVATE.**" in finished_card
        assert json.loads((state_dir / "evaluation.json").read_text())["finish_steps"] == 1
    # round 2's sum reached every site, also the one that sat it out
    weights = {s: _train_size(tmp_path / s) for s in drawn[2]}
    expected = sum(w * _shared(tmp_path / s, "trained") for s, w in weights.items()) / sum(
        weights.values()
    )
    for site in SITES:
        assert float(np.max(np.abs(_shared(tmp_path / site, "state") - expected))) < 1e-7
    assert not list(run_dir.rglob("finished-adapter")) and not list(run_dir.rglob("*.safetensors"))


@given(
    last=st.integers(min_value=0, max_value=10_000),
    masked=st.none() | st.lists(st.sampled_from(FOUR), unique=True).map(tuple),
)
# the autouse identity fixture sets constants: sharing it across examples is harmless
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_the_last_applied_round_travels_with_keys_and_train_requests(last, masked):
    """What a site needs to know it is behind (the drift bound's ratchet) survives the trip
    through a Flower message; a server that says nothing means 0."""
    from secure_fedsa.engine import messages as m
    from secure_fedsa.transports.flower import messages as fm

    for request in (
        m.KeysRequest(3, "ab" * 16, b"{}", b"sig", last),
        m.TrainRequest(3, "ab" * 16, masked, b"{}", b"sig", last),
    ):
        message = Message(fm.request_content(request), dst_node_id=1,
                          message_type=fm.MESSAGE_TYPES[type(request)], ttl=10)  # fmt: skip
        assert fm.read_request(message) == request
        del message.content[fm.p.CONFIG]["last-applied"]
        assert fm.read_request(message).last_applied == 0
