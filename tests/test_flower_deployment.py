"""A real Flower deployment on 127.0.0.1: TLS SuperLink, three SuperNodes, `flwr run`.

The test makes a CA and a server certificate, key bundles, one data file per site, starts
``flower-superlink`` (TLS, SQLite state file, no runtime dependency installation) and one
``flower-supernode`` per site, runs a short federation with DP and CKKS on through ``flwr run``,
and checks the server's run directory, each site's ledger and egress record, and that no
plaintext A or B bytes reached the SuperLink's state file or logs. A second test kills one
SuperNode mid-run. Every process is started in its own process group and stopped in ``finally``.
"""

from __future__ import annotations

import contextlib
import csv
import datetime
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

# on demand (make test-e2e): real SuperLink and SuperNode processes over TLS take minutes
pytestmark = [pytest.mark.e2e, pytest.mark.deployment]

pytest.importorskip("flwr")

from secure_fedsa.engine.messages import BEHIND  # noqa: E402
from secure_fedsa.site.client import WEIGHT_UNIT  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SITES = ("site-a", "site-b", "site-c")
LABELS = "rotten,fresh"
EXAMPLES_PER_SITE = 360
RUN_CONFIG = {
    "rounds": 2,
    "local-steps": 2,
    "num-layers": 1,
    "max-length": 16,
    "batch-size": 48,
    "physical-batch-size": 48,
    "eval-examples": 16,
    "epsilon": 8.0,
    "accountant": "pld",
    "labels": LABELS,
    "clients": 3,
    "min-clients": 2,
    "wait-for-nodes": 60.0,
}
RUN_TIMEOUT = 420  # seconds for one `flwr run`
SECAGG_KINDS = ("secagg-keys", "secagg-shares", "secagg-survivors", "secagg-reveal")


# --------------------------------------------------------------------------- certificates
def make_certificates(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1/localhost, signed by it."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("secure-fedsa test CA"))
        .issuer_name(name("secure-fedsa test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    paths = {"ca": directory / "ca.crt", "cert": directory / "server.pem"}
    paths["key"] = directory / "server.key"
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["key"].chmod(0o600)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------- processes
class Processes:
    """Started processes, each in its own group, with their logs; ``stop`` ends them all."""

    def __init__(self, directory: Path, env: dict[str, str]) -> None:
        self.directory = directory
        self.env = env
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.directory / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args,
            cwd=self.directory,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):  # the group: SuperNode and its ClientApp
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop_one(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)
        self.kill(name)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):  # children may outlive the leader
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=15)

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")


class LocalDeployment:
    """SuperLink + one SuperNode per site on 127.0.0.1, all with TLS."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.certs = make_certificates(root / "certs")
        self.home = root / "flwr-home"
        self.home.mkdir()
        self.port = free_port()
        env = dict(os.environ)
        env.update(
            FLWR_HOME=str(self.home),
            HF_HUB_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            OMP_NUM_THREADS="1",
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        )
        self.processes = Processes(root, env)
        (self.home / "config.toml").write_text(
            "[superlink]\n"
            'default = "local-tls"\n\n'
            "[superlink.local-tls]\n"
            f'address = "127.0.0.1:{self.port}"\n'
            f'root-certificates = "{self.certs["ca"]}"\n'
        )
        self.database = root / "superlink" / "state.db"
        self.database.parent.mkdir()

    def start_superlink(self) -> None:
        self.processes.start(
            "superlink",
            [
                str(BIN / "flower-superlink"),
                "--ssl-ca-certfile", str(self.certs["ca"]),
                "--ssl-certfile", str(self.certs["cert"]),
                "--ssl-keyfile", str(self.certs["key"]),
                "--host", "127.0.0.1",
                "--port", str(self.port),
                "--database", str(self.database),
                "--disable-runtime-dependency-installation",
            ],
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.processes.procs["superlink"].poll() is not None:
                break
            time.sleep(0.5)
        raise AssertionError("SuperLink did not start:\n" + self.processes.log("superlink"))

    def start_supernode(self, site: str, node_config: dict[str, str]) -> None:
        config = " ".join(f'{k}="{v}"' for k, v in node_config.items())
        self.processes.start(
            site,
            [
                str(BIN / "flower-supernode"),
                "--superlink", f"127.0.0.1:{self.port}",
                "--root-certificates", str(self.certs["ca"]),
                "--port", str(free_port()),
                "--node-config", config,
            ],
        )  # fmt: skip

    def flwr_run(self, run_config: dict, name: str = "flwr-run") -> subprocess.Popen:
        overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        return self.processes.start(
            name,
            [
                str(BIN / "flwr"), "run", str(REPO), "local-tls", "--stream",
                "--run-config", overrides,
            ],
        )  # fmt: skip

    def wait(self, proc: subprocess.Popen, timeout: float) -> None:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"`flwr run` did not finish within {timeout} s") from None


# --------------------------------------------------------------------------- fixtures
def _write_site_files(root: Path, names: tuple[str, ...] = SITES) -> dict[str, Path]:
    from secure_fedsa.data import BUNDLED

    dataset = BUNDLED["rotten_tomatoes"]()
    rng = np.random.default_rng(7)
    chosen = rng.choice(len(dataset), size=EXAMPLES_PER_SITE * len(names), replace=False)
    files = {}
    for number, site in enumerate(names):
        path = root / "sites" / site / f"{site}.csv"
        path.parent.mkdir(parents=True)
        part = chosen[number * EXAMPLES_PER_SITE : (number + 1) * EXAMPLES_PER_SITE]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            for i in part:
                writer.writerow([dataset.texts[i], dataset.label_names[dataset.labels[i]]])
        files[site] = path
    return files


def _setup(
    root: Path, names: tuple[str, ...] = SITES
) -> tuple[LocalDeployment, dict[str, dict[str, str]], Path]:
    from secure_fedsa.site.keys import init_keys

    keys = root / "keys"
    sizes = dict.fromkeys(names, _train_size())  # each site's training records: its weight
    # `secure-fedsa keys init DIR --client-ids ... --client-sizes ...`
    init_keys(keys, max_clients=8, client_ids=list(names), sizes=sizes)
    files = _write_site_files(root, names)
    sites = {}
    for site, data in files.items():
        home = data.parent
        # handed over out of band: the shared CKKS bundle and the site's own signing identity
        shutil.copy2(keys / "client.keys", home / "client.keys")
        shutil.copy2(keys / "identities" / f"{site}.key", home / "identity.key")
        for name in ("client.keys", "identity.key"):
            (home / name).chmod(0o600)
        sites[site] = {
            "data-file": str(data),
            "keys": str(home / "client.keys"),
            "identity": str(home / "identity.key"),
            "state-dir": str(home / "state"),
        }
    deployment = LocalDeployment(root)
    server_keys = root / "superlink" / "keys"  # what the server gets: nothing that decrypts
    (server_keys / "identities").mkdir(parents=True)
    for name in ("server.keys", "roster.json", "identities/server.key"):
        shutil.copy2(keys / name, server_keys / name)
    return deployment, sites, server_keys


def _train_size() -> int:
    return EXAMPLES_PER_SITE - int(0.2 * EXAMPLES_PER_SITE + 0.5)  # default test-fraction 0.2


def _json_lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _byte_patterns(
    state: dict[str, torch.Tensor], names: list[str], weight: float = 1.0
) -> list[bytes]:
    """Bytes of a few values of each named tensor (4 nonzero values in a row): as float32 and
    float64, and as the weighted float64 values an unencrypted update would carry."""
    patterns = []
    for name in names:
        values = state[name].flatten()
        values = values[values != 0][:64]
        for start in (0, 24):
            window = values[start : start + 4]
            if len(window) == 4:
                patterns.append(window.to(torch.float32).numpy().tobytes())
                patterns.append(window.to(torch.float64).numpy().tobytes())
                patterns.append((weight * window.to(torch.float64).numpy()).tobytes())
    return patterns


# --------------------------------------------------------------------------- tests
def test_tls_deployment_with_dp_and_encryption(tmp_path):
    deployment, sites, server_keys = _setup(tmp_path)
    run_dir = tmp_path / "superlink" / "run"
    try:
        deployment.start_superlink()
        for site, node_config in sites.items():
            deployment.start_supernode(site, node_config)
        run = deployment.flwr_run(
            {**RUN_CONFIG, "keys-dir": str(server_keys), "run-dir": str(run_dir)}
        )
        deployment.wait(run, RUN_TIMEOUT)
        _wait_for(lambda: (run_dir / "summary.json").exists(), 60)
        logs = {name: deployment.processes.log(name) for name in deployment.processes.procs}
    finally:
        deployment.processes.stop()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed", summary
    assert summary["rounds_completed"] == RUN_CONFIG["rounds"]
    metrics = _json_lines(run_dir / "metrics.jsonl")
    assert [m["round"] for m in metrics] == [1, 2]
    for record in metrics:
        assert record["contributors"] == 3 and not record["dropouts"] and not record["rejected"]
        assert record["masking"]["masked_with"] == list(SITES) and not record["masking"]["dropped"]
        assert set(record["clients"]) == set(SITES)
        for entry in record["clients"].values():
            assert entry["status"] == "trained" and entry["aggregate"] == "applied"
            assert "accuracy_subset" not in entry  # not reported unless report-accuracy
    # every site finished and reported its privacy; its accuracy stays on the site
    assert set(summary["privacy"]) == set(SITES)
    assert summary["evaluation"]["released"] is False and "per_client" not in summary["evaluation"]
    setup = json.loads((run_dir / "setup.json").read_text())
    # the server's files hold no secret
    client_keys = json.loads((tmp_path / "keys" / "client.keys").read_text())
    for path in run_dir.rglob("*"):
        assert client_keys["secret_key"][:64] not in path.read_text()

    patterns = []
    for site, node_config in sites.items():
        state_dir = Path(node_config["state-dir"])
        ledger = json.loads((state_dir / "privacy_ledger.json").read_text())
        assert [e["round"] for e in ledger["entries"]] == [1, 2]
        assert 0 < ledger["entries"][-1]["epsilon"] <= RUN_CONFIG["epsilon"]
        assert summary["privacy"][site]["epsilon"] == pytest.approx(
            ledger["entries"][-1]["epsilon"]
        )
        egress = _json_lines(state_dir / "egress" / f"{site}.jsonl")
        updates = [e for e in egress if e["kind"] == "update"]
        assert [e["round"] for e in updates] == [1, 2]
        for entry in egress:
            assert entry["transport"] == "flower"
            if entry["kind"] == "update":
                assert entry["form"] == "ciphertext"
                assert all(".lora_A." in name for name in entry["tensors"])
                assert entry["tensors"] == [m["name"] for m in setup["manifest"]]
            else:  # reports and secure aggregation's protocol messages: no tensors
                assert entry["kind"] in ("report", *SECAGG_KINDS) and entry["tensors"] == []
        assert {(e["round"], e["kind"]) for e in egress} >= {
            (r, k) for r in (1, 2) for k in SECAGG_KINDS
        }
        assert (state_dir / "adapter" / "adapter_config.json").exists()
        saved = torch.load(state_dir / "state.pt", weights_only=True)
        names = list(saved["state"])
        a_names = [n for n in names if ".lora_A." in n]
        b_names = [n for n in names if ".lora_B." in n]
        assert a_names and b_names
        weight = _train_size() / WEIGHT_UNIT
        patterns += _byte_patterns(saved["state"], a_names + b_names)
        patterns += _byte_patterns(saved["trained"], a_names + b_names, weight)
    # no plaintext A or B reached the SuperLink: its state file, its logs, the `flwr run` output
    stored = b"".join(p.read_bytes() for p in tmp_path.joinpath("superlink").rglob("state.db*"))
    assert (
        stored.count(b"secure_fedsa.crypto.wire") >= 6
    )  # the messages' arrays are in what we scan
    seen = stored + "".join(logs.values()).encode()
    assert patterns
    for pattern in patterns:
        assert pattern not in seen


def _wait_for(condition, timeout: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.5)


def _completed_rounds(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return len(_json_lines(path)) if path.exists() else 0


def _ledger_rounds(node_config: dict[str, str]) -> list[int]:
    ledger = json.loads((Path(node_config["state-dir"]) / "privacy_ledger.json").read_text())
    return [e["round"] for e in ledger["entries"]]


def _sent(node_config: dict[str, str], round_number: int, kind: str) -> bool:
    """Whether a site's egress record shows a message of ``kind`` sent in ``round_number``."""
    path = Path(node_config["state-dir"]) / "egress"
    return any(
        e["round"] == round_number and e["kind"] == kind
        for f in path.glob("*.jsonl")
        for e in _json_lines(f)
    )


# about 6 minutes on 2 cores (docs/deployment.md)
# four sites: at the malicious-server threshold floor (t = floor(2n/3) + 1, docs/crypto.md) three
# sites tolerate no dropout; four tolerate one
FOUR_SITES = (*SITES, "site-d")


def test_dropout_round_failure_and_resume(tmp_path):
    """site-c crashes in round 2 after it has masked against the others (round 2 completes with
    three, t = 3: the survivors reveal its mask key and the sum is unmasked), site-b stops
    (round 3 fails below min-clients), both come back and the run resumes from the run directory
    and site files. site-c missed round 2's aggregate, which the others applied: it is behind in
    round 3 (the drift bound's ratchet), sits it out with nothing spent, and catches up at round
    3's aggregate."""
    deployment, sites, server_keys = _setup(tmp_path, FOUR_SITES)
    run_dir = tmp_path / "superlink" / "run"
    config = {
        **RUN_CONFIG,
        "clients": 4,
        "min-clients": 3,
        "rounds": 3,
        "round-timeout": 150.0,
        "keys-dir": str(server_keys),
        "run-dir": str(run_dir),
    }
    try:
        deployment.start_superlink()
        for site, node_config in sites.items():
            deployment.start_supernode(site, node_config)
        run = deployment.flwr_run(config)
        _wait_for(lambda: _sent(sites["site-c"], 2, "secagg-shares"), RUN_TIMEOUT)
        time.sleep(3)  # its shares reach the server: the others mask against site-c
        deployment.processes.kill("site-c")  # a crash: SIGKILL while round 2 trains
        _wait_for(lambda: _completed_rounds(run_dir) >= 2, RUN_TIMEOUT)
        deployment.processes.procs["site-b"].send_signal(signal.SIGTERM)  # leaves: 2 < min 3
        deployment.wait(run, RUN_TIMEOUT)
        _wait_for(lambda: (run_dir / "summary.json").exists(), 60)
        failed = json.loads((run_dir / "summary.json").read_text())
        assert failed["status"] == "failed" and failed["failed_round"] == 3, failed
        assert failed["rounds_completed"] == 2
        assert _completed_rounds(run_dir) == 2  # the failed round is not in metrics.jsonl
        # site-b's SIGTERM lands before or after its round-3 key advertisement: the round fails
        # at the masking set-up (site-a never trains) or below min-clients (site-a trained)
        trained_before = _ledger_rounds(sites["site-a"])
        assert trained_before in ([1, 2], [1, 2, 3]), failed

        # resume: the sites come back with their state directories; same run config
        deployment.processes.stop_one("site-b")
        deployment.start_supernode("site-b2", sites["site-b"])
        deployment.start_supernode("site-c2", sites["site-c"])
        resumed = deployment.flwr_run({**config, "resume-dir": str(run_dir)}, name="resume")
        deployment.wait(resumed, RUN_TIMEOUT)
        _wait_for(
            lambda: json.loads((run_dir / "summary.json").read_text())["status"] != "failed", 30
        )
    finally:
        deployment.processes.stop()
    metrics = _json_lines(run_dir / "metrics.jsonl")
    assert [m["round"] for m in metrics] == [1, 2, 3]
    round2 = metrics[1]
    assert round2["contributors"] == 3
    assert set(round2["clients"]) == {"site-a", "site-b", "site-d"}
    assert [(d["client"], d["phase"]) for d in round2["dropouts"]] == [("site-c", "train")]
    assert round2["masking"]["masked_with"] == list(FOUR_SITES)  # site-c masked, then crashed
    assert round2["masking"]["dropped"] == ["site-c"]
    assert round2["aggregate"]["status"] == "applied"  # the survivors' checks passed: unmasked
    assert {c["aggregate"] for c in round2["clients"].values()} == {"applied"}
    assert metrics[2]["contributors"] == 3  # site-c sits round 3 out: behind
    assert metrics[2]["clients"]["site-c"]["status"] == BEHIND
    assert metrics[2]["clients"]["site-c"]["aggregate"] == "applied"  # it caught up
    assert metrics[2]["clients"]["site-a"]["resumed"] == (trained_before == [1, 2, 3])
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 3
    # privacy spent once per trained round, even for the round that was re-run
    assert _ledger_rounds(sites["site-a"]) == [1, 2, 3]
    assert _ledger_rounds(sites["site-b"]) == [1, 2, 3]
    assert _ledger_rounds(sites["site-d"]) == [1, 2, 3]
    # site-c's round 2 was charged if the kill came after its ledger entry, never released;
    # round 3 it sat out, nothing spent
    assert _ledger_rounds(sites["site-c"]) in ([1], [1, 2])
    assert not _sent(sites["site-c"], 2, "update")
