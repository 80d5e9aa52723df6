"""Bytes and seconds for one round of secure aggregation: our codec against two baselines.

For each vector size, ``--clients`` clients each send ``weight * values``; the server sums; one
client decrypts and divides (for secure_fedsa, by the roster weights of the contributors the
signed aggregate names: the weight is not sent). Compared:

- ``secure_fedsa``: this library (seeded symmetric CKKS, both slot halves, rounded ``c0``,
  N=4096, primes (60, 49), scale 2^40), measured through the full signed message envelope and
  :class:`~secure_fedsa.server.aggregator.Aggregator` validation (signature verification included);
- ``FLARE default``: a TenSEAL ``CKKSVector`` at NVIDIA FLARE's default parameters
  (N=8192, primes [60, 40, 40], scale 2^40), serialized with TenSEAL's own format;
- ``secure_fedsa masked``: the same, with secure aggregation's pairwise and self masks added to
  the ciphertexts (the key set-up among the clients is done before the round and not timed here:
  ``benchmarks/bench_masking.py`` measures it); "server result" includes rebuilding and removing
  the masks from the revealed seeds;
- ``Flower SecAgg+``: the masking stage of Flower's SecAgg+ (``flwr`` 1.42's own functions, as
  its ``secaggplus_mod`` and ``SecAggPlusWorkflow`` call them, at the workflow's defaults:
  clipping range 8, quantization range 2^22, modulus 2^32): quantize, add a private mask and
  a pairwise mask per peer, serialize; the server sums, removes the private masks and
  dequantizes. Unlike the others the server ends with the plaintext sum;
- ``plain fp32``: float32 arrays, no encryption.

Columns: bytes per value up (per client) and down (the aggregate), encryption time per client,
server time per client (parse, validate, add), server time to serialize the sum, decryption
time (one client), and the largest absolute error of the decrypted average. For secure_fedsa,
also the Ed25519 cost of one message (sign + verify, median of 200) and its share of the round's
HE time per client (encrypt + add + its share of result + decrypt).

The methods are interleaved (ours, flare, plain, ours, ...) and each is repeated ``--repeats``
times (default 5), so a change of machine load hits all alike; times are medians over the
repeats, with the minimum and the spread (max / min) of the total time per client. The machine's
load average at the start is printed.

Usage::

    python benchmarks/bench_crypto.py [--sizes 36864 393216 4200000] [--clients 3]
        [--methods ours masked flare secaggplus plain] [--repeats 5]

Not a test. Timings on shared machines vary by 2-4x from run to run: compare ratios.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_SIZES = (36_864, 393_216, 4_200_000)
MANIFEST = "be" * 32
SESSION = "5e" * 16
WEIGHTS = (1.161, 0.279, 3.36, 2.0, 0.5)  # thousands of training examples


@dataclass
class Row:
    method: str
    n: int
    up: float
    down: float
    encrypt: float
    server_add: float
    server_result: float
    decrypt: float
    error: float
    clients: int = 1
    sign_verify: float | None = None  # seconds per message, secure_fedsa only


def client_values(n: int, k: int) -> np.ndarray:
    return np.random.default_rng(k).normal(0.0, 0.05, size=n)


def weight_of(k: int) -> float:
    return WEIGHTS[k % len(WEIGHTS)]


def timed(fn: Callable[[], object]) -> tuple[object, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def run_round(
    method: str,
    n: int,
    clients: int,
    encode: Callable[[np.ndarray, float, int], bytes],
    add: Callable[[bytes], None],
    result: Callable[[], bytes],
    decode: Callable[[bytes], np.ndarray],
) -> Row:
    """One round, client by client so that memory does not grow with the number of clients."""
    reference = np.zeros(n)
    total_weight = 0.0
    up, t_enc, t_add = 0, 0.0, 0.0
    for k in range(clients):
        values, weight = client_values(n, k), weight_of(k)
        reference += weight * values
        total_weight += weight
        data, seconds = timed(lambda v=values, w=weight, k=k: encode(v, w, k))
        t_enc += seconds
        up = max(up, len(data))
        t_add += timed(lambda d=data: add(d))[1]
        del data
        gc.collect()
    aggregate, t_result = timed(result)
    average, t_dec = timed(lambda: decode(aggregate))
    error = float(np.max(np.abs(average - reference / total_weight)))
    return Row(
        method,
        n,
        up / n,
        len(aggregate) / n,
        t_enc / clients,
        t_add / clients,
        t_result,
        t_dec,
        error,
        clients,
    )


def bench_ours(n: int, clients: int, *, masked: bool = False) -> Row:
    from secure_fedsa.crypto.ckks_client import CKKSClientCodec
    from secure_fedsa.crypto.ckks_server import CKKSServerCodec
    from secure_fedsa.crypto.keys import create_key_bundles
    from secure_fedsa.crypto.params import CKKSParams
    from secure_fedsa.crypto.signing import Roster, SigningKey
    from secure_fedsa.crypto.wire import decode_aggregate, encode_update
    from secure_fedsa.server.aggregator import Aggregator
    from secure_fedsa.site.aggregate_check import roster_total_weight

    with tempfile.TemporaryDirectory() as directory:
        client_path, server_path = create_key_bundles(directory, CKKSParams(), max_clients=64)
        client = CKKSClientCodec.from_bundle(client_path)
        server = CKKSServerCodec.from_bundle(server_path)
    signers = {k: SigningKey.generate(f"client-{k}") for k in range(clients)}
    server_key = SigningKey.generate("server")
    roster = Roster(
        {s.owner: s.public_bytes for s in signers.values()}, server_key.public_bytes,
        weights={s.owner: weight_of(k) for k, s in signers.items()},
    )  # fmt: skip
    aggregator = Aggregator(
        server, manifest_hash=MANIFEST, round=0, n_values=n, session=SESSION, roster=roster,
        key=server_key,
    )  # fmt: skip

    def decode(data: bytes) -> np.ndarray:
        result = decode_aggregate(
            client, data, manifest_hash=MANIFEST, round=0, session=SESSION, n_values=n,
            server_key=server_key.public_bytes,
        )  # fmt: skip
        # the divisor: the roster weights of the contributors the signed aggregate names
        return result.total / roster_total_weight(result.contributor_ids, roster.weights)

    masks, result = {}, aggregator.result
    if masked:
        masks, unmask = _mask_setup(signers, roster, n, server)

        def result() -> bytes:
            return aggregator.result(unmask(aggregator.accepted))

    row = run_round(
        "secure_fedsa masked" if masked else "secure_fedsa",
        n,
        clients,
        lambda v, w, k: encode_update(
            client,
            v,
            w,
            manifest_hash=MANIFEST,
            round=0,
            session=SESSION,
            key=signers[k],
            mask=masks.get(k),
        ),  # fmt: skip
        aggregator.add,
        result,
        decode,
    )
    row.sign_verify = sign_verify_seconds(signers[0])
    return row


def _mask_setup(signers, roster, n, server):  # noqa: ANN001, ANN202
    """Secure aggregation's set-up among the clients (untimed): each client's mask function,
    and the server's unmasking from the present clients' reveals."""
    from secure_fedsa.secagg.masking import chunk_mask
    from secure_fedsa.secagg.protocol import MaskingClient, MaskingServer

    masking = MaskingServer(roster, SESSION, 0)
    clients = {k: MaskingClient(s.owner, s, roster, SESSION, 0) for k, s in signers.items()}
    u1 = masking.collect_adverts([c.advertise() for c in clients.values()])
    u2 = masking.collect_shares(
        {c.client_id: c.share(u1, threshold=masking.threshold) for c in clients.values()}
    )
    masks = {}
    for k, c in clients.items():
        seeds = c.seeds(u2)

        def mask(chunk, count, modulus, seeds=seeds):  # noqa: ANN001, ANN202
            return chunk_mask(seeds, context=masking.context, chunk=chunk, count=count,
                              modulus=modulus)  # fmt: skip

        masks[k] = mask
    by_id = {c.client_id: c for c in clients.values()}

    def unmask(present):  # noqa: ANN001, ANN202
        dropped = set(u2) - set(present)
        signed = {c: by_id[c].sign_survivors(present=present, dropped=dropped) for c in present}
        signatures = masking.survivor_signatures(signed, present=present)
        reveals = [
            by_id[c].reveal(
                masking.shares_for(c), present=present, dropped=dropped, signatures=signatures
            )  # fmt: skip
            for c in present
        ]
        chunks, count, modulus = server.mask_shape(n)
        return masking.unmasking_offsets(
            reveals, present=present, chunks=chunks, count=count, modulus=modulus
        )

    return masks, unmask


def bench_masked(n: int, clients: int) -> Row:
    return bench_ours(n, clients, masked=True)


def bench_secaggplus(n: int, clients: int) -> Row:
    """Flower SecAgg+'s masking stage on the same vector, with flwr's own functions."""
    from flwr.client.mod.secure_aggregation.secaggplus_mod import (
        bytes_to_private_key,
        bytes_to_public_key,
        generate_key_pairs,
        generate_shared_key,
        private_key_to_bytes,
        public_key_to_bytes,
    )
    from flwr.common.secure_aggregation.ndarrays_arithmetic import (
        factor_combine,
        factor_extract,
        get_parameters_shape,
        parameters_addition,
        parameters_mod,
        parameters_multiply,
        parameters_subtraction,
    )
    from flwr.common.secure_aggregation.quantization import dequantize, quantize
    from flwr.common.secure_aggregation.secaggplus_utils import pseudo_rand_gen
    from flwr.compat.common.parameter import bytes_to_ndarray, ndarray_to_bytes

    clip, target, modulus = 8.0, 2**22, 2**32  # SecAggPlusWorkflow's defaults
    max_weight = max(WEIGHTS)
    keys = {}
    for k in range(clients):
        private, public = generate_key_pairs()
        keys[k] = (private_key_to_bytes(private), public_key_to_bytes(public), os.urandom(32))
    state: dict[str, object] = {}

    def encode(values: np.ndarray, weight: float, k: int) -> bytes:
        q_ratio = round(weight / max_weight * target)
        parameters = parameters_multiply([values], q_ratio / target)
        quantized = factor_combine(q_ratio, quantize(parameters, clip, target))
        dims = get_parameters_shape(quantized)
        quantized = parameters_addition(quantized, pseudo_rand_gen(keys[k][2], modulus, dims))
        for peer in range(clients):
            if peer == k:
                continue
            shared = generate_shared_key(
                bytes_to_private_key(keys[k][0]), bytes_to_public_key(keys[peer][1])
            )
            pairwise = pseudo_rand_gen(shared, modulus, dims)
            quantized = (parameters_addition if k > peer else parameters_subtraction)(
                quantized, pairwise
            )
        quantized = parameters_mod(quantized, modulus)
        return b"".join(ndarray_to_bytes(a) for a in quantized)

    def add(data: bytes) -> None:
        head = ndarray_to_bytes(np.array([0]))
        arrays = [bytes_to_ndarray(data[: len(head)]), bytes_to_ndarray(data[len(head) :])]
        total = state.get("sum")
        state["sum"] = arrays if total is None else parameters_addition(total, arrays)
        state["count"] = int(state.get("count", 0)) + 1

    def result() -> bytes:
        masked = parameters_mod(state["sum"], modulus)  # type: ignore[arg-type]
        for k in range(int(state["count"])):  # every client present: remove the private masks
            masked = parameters_subtraction(
                masked, pseudo_rand_gen(keys[k][2], modulus, get_parameters_shape(masked))
            )
        factor, parameters = factor_extract(parameters_mod(masked, modulus))
        (vector,) = dequantize(parameters, clip, target)
        vector = (vector - (int(state["count"]) - 1) * clip) * (target / factor)
        return vector.astype("<f4").tobytes()  # what the server sends back: the plaintext mean

    def decode(data: bytes) -> np.ndarray:
        return np.frombuffer(data, dtype="<f4").astype(np.float64)

    return run_round("Flower SecAgg+", n, clients, encode, add, result, decode)


def sign_verify_seconds(key) -> float:  # noqa: ANN001
    """Median seconds to sign one message digest and verify the signature (Ed25519)."""
    import hashlib
    import statistics

    from secure_fedsa.crypto.signing import verify

    digest = hashlib.sha256(b"a message").digest()
    times = []
    for _ in range(200):
        start = time.perf_counter()
        signature = key.sign("update", digest)
        assert verify(key.public_bytes, signature, "update", digest)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_flare(n: int, clients: int) -> Row:
    import tenseal as ts

    secret = ts.context(
        ts.SCHEME_TYPE.CKKS, poly_modulus_degree=8192, coeff_mod_bit_sizes=[60, 40, 40]
    )
    secret.global_scale = 2**40
    public = ts.context_from(secret.serialize(save_secret_key=False))
    state: dict[str, object] = {}

    def add(data: bytes) -> None:
        vector = ts.ckks_vector_from(public, data)
        if "sum" in state:
            state["sum"] += vector  # type: ignore[operator]
        else:
            state["sum"] = vector

    def decode(data: bytes) -> np.ndarray:
        floats = np.asarray(ts.ckks_vector_from(secret, data).decrypt())
        return floats[:n] / floats[n]

    return run_round(
        "FLARE default",
        n,
        clients,
        lambda v, w, k: ts.ckks_vector(secret, np.append(w * v, w)).serialize(),
        add,
        lambda: state["sum"].serialize(),  # type: ignore[attr-defined]
        decode,
    )


def bench_plain32(n: int, clients: int) -> Row:
    total = np.zeros(n + 1, dtype=np.float32)

    def add(data: bytes) -> None:
        total.__iadd__(np.frombuffer(data, dtype="<f4"))

    def decode(data: bytes) -> np.ndarray:
        floats = np.frombuffer(data, dtype="<f4").astype(np.float64)
        return floats[:n] / floats[n]

    return run_round(
        "plain fp32",
        n,
        clients,
        lambda v, w, k: np.append(w * v, w).astype("<f4").tobytes(),
        add,
        lambda: total.astype("<f4").tobytes(),
        decode,
    )


METHODS: dict[str, Callable[[int, int], Row]] = {
    "ours": bench_ours,
    "masked": bench_masked,
    "flare": bench_flare,
    "secaggplus": bench_secaggplus,
    "plain": bench_plain32,
}


def per_client(r: Row) -> float:
    """A client's share of the round: its encryption, its addition, its share of the result,
    a decryption."""
    return r.encrypt + r.server_add + r.decrypt + r.server_result / r.clients


def table(groups: list[list[Row]]) -> str:
    """One line per (method, size): medians over the repeats, min and spread of the total."""
    lines = [
        "| method | values | B/value up | B/value down | encrypt s/client | server add s/client "
        "| server result s | decrypt s | total s/client (min, spread) | max error "
        "| sign+verify s/message | share of HE time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for rows in groups:
        r = rows[0]

        def med(name: str, rows: list[Row] = rows) -> float:
            return statistics.median(getattr(x, name) for x in rows)

        totals = [per_client(x) for x in rows]
        signing = "—", "—"
        if r.sign_verify is not None:
            signing = f"{med('sign_verify'):.6f}", f"{med('sign_verify') / min(totals):.2%}"
        lines.append(
            f"| {r.method} | {r.n:,} | {r.up:.2f} | {r.down:.2f} | {med('encrypt'):.3f} | "
            f"{med('server_add'):.3f} | {med('server_result'):.3f} | {med('decrypt'):.3f} | "
            f"{statistics.median(totals):.3f} ({min(totals):.3f}, {max(totals) / min(totals):.2f}) "
            f"| {max(x.error for x in rows):.1e} | {signing[0]} | {signing[1]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"load at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (1/5/15 min) on "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    groups = []
    for n in args.sizes:
        rows: dict[str, list[Row]] = {name: [] for name in args.methods}
        for repeat in range(args.repeats):
            for name in args.methods:  # interleaved
                rows[name].append(METHODS[name](n, args.clients))
                print(f"  {n:,} {name} repeat {repeat + 1}: {per_client(rows[name][-1]):.3f} s",
                      file=sys.stderr, flush=True)  # fmt: skip
                gc.collect()
        groups += list(rows.values())
    sizes = " ".join(str(n) for n in args.sizes)
    methods = " ".join(args.methods)
    print(
        f"python benchmarks/bench_crypto.py --sizes {sizes} --clients {args.clients} "
        f"--methods {methods} --repeats {args.repeats}\n"
    )
    print(table(groups))


if __name__ == "__main__":
    main()
