"""Bytes and seconds for one round of secure aggregation: our codec against two baselines.

For each vector size, ``--clients`` clients each send ``weight * values`` and ``weight``; the
server sums; one client decrypts and divides. Compared:

- ``secure_fedsa``: this library (seeded symmetric CKKS, both slot halves, rounded ``c0``,
  N=4096, primes (60, 49), scale 2^40), measured through the full message envelope and
  :class:`~secure_fedsa.server.Aggregator` validation;
- ``FLARE default``: a TenSEAL ``CKKSVector`` at NVIDIA FLARE's default parameters
  (N=8192, primes [60, 40, 40], scale 2^40), serialized with TenSEAL's own format;
- ``plain fp32``: float32 arrays, no encryption.

Columns: bytes per value up (per client) and down (the aggregate), encryption time per client,
server time per client (parse, validate, add), server time to serialize the sum, decryption
time (one client), and the largest absolute error of the decrypted average.

Usage::

    python benchmarks/bench_crypto.py [--sizes 36864 393216 4200000] [--clients 3]
        [--methods ours flare plain]

Not a test. Timings on shared machines vary by 2-4x from run to run: compare ratios.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

DEFAULT_SIZES = (36_864, 393_216, 4_200_000)
MANIFEST = "be" * 32
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
    )


def bench_ours(n: int, clients: int) -> Row:
    from secure_fedsa.crypto.ckks_client import CKKSClientCodec
    from secure_fedsa.crypto.ckks_server import CKKSServerCodec
    from secure_fedsa.crypto.keys import create_key_bundles
    from secure_fedsa.crypto.params import CKKSParams
    from secure_fedsa.server import Aggregator
    from secure_fedsa.wire import decode_aggregate, encode_update

    with tempfile.TemporaryDirectory() as directory:
        client_path, server_path = create_key_bundles(directory, CKKSParams(), max_clients=64)
        client = CKKSClientCodec.from_bundle(client_path)
        server = CKKSServerCodec.from_bundle(server_path)
    aggregator = Aggregator(server, manifest_hash=MANIFEST, round=0, n_values=n)
    return run_round(
        "secure_fedsa",
        n,
        clients,
        lambda v, w, k: encode_update(
            client, v, w, manifest_hash=MANIFEST, round=0, client_id=f"client-{k}"
        ),
        aggregator.add,
        aggregator.result,
        lambda data: decode_aggregate(client, data, manifest_hash=MANIFEST, round=0, n_values=n),
    )


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
    "flare": bench_flare,
    "plain": bench_plain32,
}


def table(rows: list[Row]) -> str:
    lines = [
        "| method | values | B/value up | B/value down | encrypt s/client | server add s/client "
        "| server result s | decrypt s | max error |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.method} | {r.n:,} | {r.up:.2f} | {r.down:.2f} | {r.encrypt:.3f} | "
            f"{r.server_add:.3f} | {r.server_result:.3f} | {r.decrypt:.3f} | {r.error:.1e} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    args = parser.parse_args(argv)
    rows = []
    for n in args.sizes:
        for name in args.methods:
            rows.append(METHODS[name](n, args.clients))
            print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
            gc.collect()
    sizes = " ".join(str(n) for n in args.sizes)
    methods = " ".join(args.methods)
    print(
        f"python benchmarks/bench_crypto.py --sizes {sizes} --clients {args.clients} "
        f"--methods {methods}\n"
    )
    print(table(rows))


if __name__ == "__main__":
    main()
