"""What pairwise masking (secure aggregation) costs per round: bytes, messages and seconds.

For each number of clients K, one round on the default model's shared A (36 864 values) with
real CKKS encryption, simulated in one process: every client advertises its keys, shares its
secrets, encrypts its masked update; the server adds, collects the reveals and removes the masks,
once with every client present and once with one client dropped after masking. The same round
without masks is run beside it. Clients' times are per client (they run in parallel in a real
deployment); the server's are per round.

    python benchmarks/bench_masking.py [--clients 3 10 64] [--values 36864] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

SESSION = "5e" * 16
MANIFEST = "be" * 32


def _round(k: int, n: int, *, masked: bool, drop: bool, codecs) -> dict[str, float]:  # noqa: ANN001
    from secure_fedsa.crypto.signing import Roster, SigningKey
    from secure_fedsa.crypto.wire import decode_aggregate, encode_update
    from secure_fedsa.secagg.masking import chunk_mask
    from secure_fedsa.secagg.protocol import MaskingClient, MaskingServer
    from secure_fedsa.server.aggregator import Aggregator

    client_codec, server_codec = codecs
    ids = [f"client-{i:02d}" for i in range(k)]
    keys = {cid: SigningKey.generate(cid) for cid in ids}
    server_key = SigningKey.generate("server")
    roster = Roster({c: key.public_bytes for c, key in keys.items()}, server_key.public_bytes)
    aggregator = Aggregator(
        server_codec, manifest_hash=MANIFEST, round=1, n_values=n, session=SESSION,
        roster=roster, key=server_key,
    )  # fmt: skip
    out = {"setup_client": 0.0, "encrypt_client": 0.0, "protocol_bytes_client": 0.0}
    masks = {}
    if masked:
        server = MaskingServer(roster, SESSION, 1)
        clients = {c: MaskingClient(c, keys[c], roster, SESSION, 1) for c in ids}
        start = time.perf_counter()
        adverts = [c.advertise() for c in clients.values()]
        out["setup_client"] += (time.perf_counter() - start) / k
        u1 = server.collect_adverts(adverts)
        start = time.perf_counter()
        shares = {c: clients[c].share(u1, threshold=server.threshold) for c in ids}
        out["setup_client"] += (time.perf_counter() - start) / k
        u2 = server.collect_shares(shares)
        advert_bytes = 32 + 32 + 64
        share_bytes = sum(len(b) for b in shares[ids[0]].values())
        out["protocol_bytes_client"] = advert_bytes + share_bytes
        for cid in ids:
            seeds = clients[cid].seeds(u2)

            def mask(chunk, count, modulus, seeds=seeds):  # noqa: ANN001, ANN202
                return chunk_mask(seeds, context=server.context, chunk=chunk, count=count,
                                  modulus=modulus)  # fmt: skip

            masks[cid] = mask
    rng = np.random.default_rng(0)
    senders = ids[:-1] if drop else ids
    add_seconds = 0.0
    for cid in ids:
        values = rng.normal(0, 0.05, n)
        start = time.perf_counter()
        data = encode_update(
            client_codec, values, 1.0, manifest_hash=MANIFEST, round=1, session=SESSION,
            key=keys[cid], mask=masks.get(cid),
        )  # fmt: skip
        out["encrypt_client"] += (time.perf_counter() - start) / k
        if cid in senders:
            start = time.perf_counter()
            aggregator.add(data)
            add_seconds += time.perf_counter() - start
    start = time.perf_counter()
    offsets = None
    if masked:
        present = list(aggregator.accepted)
        dropped = set(ids) - set(present)
        reveal_start = time.perf_counter()
        signed = {c: clients[c].sign_survivors(present=present, dropped=dropped) for c in present}
        signatures = server.survivor_signatures(signed, present=present)
        reveals = [
            clients[c].reveal(
                server.shares_for(c), present=present, dropped=dropped, signatures=signatures
            )  # fmt: skip
            for c in present
        ]
        out["reveal_client"] = (time.perf_counter() - reveal_start) / len(present)
        out["protocol_bytes_client"] += sum(
            len(s) for s in [*reveals[0].b_shares.values(), *reveals[0].s_shares.values()]
        )
        start = time.perf_counter()
        chunks, count, modulus = server_codec.mask_shape(n)
        offsets = server.unmasking_offsets(
            reveals, present=present, chunks=chunks, count=count, modulus=modulus
        )
    aggregate = aggregator.result(offsets)
    out["server_round"] = add_seconds + time.perf_counter() - start
    start = time.perf_counter()
    result = decode_aggregate(
        client_codec, aggregate, manifest_hash=MANIFEST, round=1, session=SESSION, n_values=n,
        server_key=server_key.public_bytes,
    )  # fmt: skip
    out["decrypt_client"] = time.perf_counter() - start
    assert np.all(np.isfinite(result.total)) and sorted(result.contributor_ids) == sorted(senders)
    out["upload_bytes_per_value"] = len(data) / n
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10, 64])
    parser.add_argument("--values", type=int, default=36_864)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from secure_fedsa.crypto.ckks_client import CKKSClientCodec
    from secure_fedsa.crypto.ckks_server import CKKSServerCodec
    from secure_fedsa.crypto.keys import create_key_bundles
    from secure_fedsa.crypto.params import CKKSParams

    load = os.getloadavg()[0]
    from secure_fedsa.secagg.threshold import default_threshold

    print(f"load at start: {load:.2f} (1 min) on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        client_path, server_path = create_key_bundles(tmp, CKKSParams(), max_clients=64)
        codecs = CKKSClientCodec.from_bundle(client_path), CKKSServerCodec.from_bundle(server_path)
    print(
        f"command: python benchmarks/bench_masking.py --clients "
        f"{' '.join(map(str, args.clients))} --values {args.values} --repeats {args.repeats}\n"
    )
    print(
        "| clients | masking | dropped | set-up s/client | encrypt s/client | reveal s/client "
        "| server s/round | decrypt s | protocol bytes/client | upload B/value |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in args.clients:
        for masked, drop in ((False, False), (True, False), (True, True)):
            if drop and default_threshold(k) > k - 1:
                # at the threshold floor (docs/crypto.md) a round of k clients needs all of them
                print(
                    f"| {k} | on | 1 | a dropout fails the round: t = {default_threshold(k)} "
                    f"of {k} (the floor a lying server requires) |||||||"
                )
                continue
            runs = []
            for _ in range(args.repeats):  # interleaving within a K would mix set-ups; repeat
                runs.append(_round(k, args.values, masked=masked, drop=drop, codecs=codecs))

            def med(name: str, runs: list = runs) -> float:
                return statistics.median(r.get(name, 0.0) for r in runs)

            print(
                f"| {k} | {'on' if masked else 'off'} | {1 if drop else 0} | "
                f"{med('setup_client'):.3f} | {med('encrypt_client'):.3f} | "
                f"{med('reveal_client'):.3f} | {med('server_round'):.3f} | "
                f"{med('decrypt_client'):.3f} | {med('protocol_bytes_client'):,.0f} | "
                f"{med('upload_bytes_per_value'):.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
