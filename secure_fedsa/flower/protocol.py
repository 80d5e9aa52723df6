"""Wire names shared by the ServerApp and the ClientApp, and the run/node configuration.

Run configuration (``[tool.flwr.app.config]`` in pyproject.toml, overridable with
``flwr run --run-config``) holds the same options as ``secure-fedsa run`` plus the deployment
options below. TOML has no null: ``0`` or ``""`` means "not set" where the CLI default is None.

Node configuration (``flower-supernode --node-config``) says what one site holds::

    data-file=PATH      the site's CSV/JSONL file (text and label columns of the run)
    keys=PATH           the site's client.keys (mode 0600; not needed with encryption off)
    identity=PATH       the site's signing identity, identities/<client-id>.key (mode 0600)
    state-dir=PATH      where state.pt, privacy_ledger.json, egress/ and adapter/ live
    client-id=NAME      optional; default: the data file's stem
    partition-id=I num-partitions=K   instead of data-file: part I of the run's bundled dataset
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_fedsa.config import RunConfig
from secure_fedsa.errors import ConfigError
from secure_fedsa.node import SiteSpec

# message content keys
CONFIG = "config"
REPORT = "report"
UPDATE = "update"
AGGREGATE = "aggregate"
SECAGG = "secagg"  # secure aggregation's records (secure_fedsa.flower.secagg_records)
# the opaque array: bytes of a secure_fedsa.wire message (CKKS ciphertexts or, with encryption
# off, plaintext), carried as a flat uint8 array whose stype says how to read it
ARRAY_DTYPE = "uint8"
ARRAY_STYPE = "secure_fedsa.wire"
TRANSPORT = "flower"
# what a site reports about the aggregate it received: a status code, never a reason (the
# reason is computed from decrypted values and stays on the site, in its own log)
AGGREGATE_APPLIED = "applied"
AGGREGATE_REJECTED = "rejected"
AGGREGATE_NONE = "none"

# run-config key -> (RunConfig field, kind); kind "opt" maps 0 / "" to None
RUN_KEYS: dict[str, tuple[str, str]] = {
    "method": ("method", "str"),
    "head": ("head", "str"),
    "adapter": ("adapter", "str"),
    "vera-r": ("vera_r", "int"),
    "rounds": ("rounds", "int"),
    "clients-per-round": ("clients_per_round", "opt"),
    "finish-steps": ("finish_steps", "int"),
    "local-steps": ("local_steps", "int"),
    "seed": ("seed", "int"),
    "dataset": ("dataset", "str"),
    "text-column": ("text_column", "str"),
    "label-column": ("label_column", "str"),
    "partition": ("partition", "str"),
    "alpha": ("alpha", "float"),
    "test-fraction": ("test_fraction", "float"),
    "validation-fraction": ("validation_fraction", "float"),
    "max-examples": ("max_examples", "opt"),
    "model": ("model", "opt"),
    "num-layers": ("num_layers", "opt"),
    "adapter-layers": ("adapter_layers", "opt"),
    "lora-r": ("lora_r", "int"),
    "lora-alpha": ("lora_alpha", "int"),
    "max-length": ("max_length", "int"),
    "batch-size": ("batch_size", "int"),
    "physical-batch-size": ("physical_batch_size", "int"),
    "lr": ("lr", "float"),
    "optimizer-state": ("optimizer_state", "str"),
    "lr-schedule": ("lr_schedule", "str"),
    "eval-examples": ("eval_examples_per_round", "int"),
    "dp": ("dp", "bool"),
    "epsilon": ("epsilon", "opt"),
    "delta": ("delta", "float"),
    "noise-multiplier": ("noise_multiplier", "opt"),
    "clip": ("clip", "float"),
    "accountant": ("accountant", "str"),
    "clipping": ("clipping", "str"),
    "encryption": ("encryption", "bool"),
    "masking": ("masking", "bool"),
    "masking-threshold": ("masking_threshold", "opt"),
    "max-clients": ("max_clients", "int"),
}
DEPLOYMENT_KEYS = (
    "labels",
    "min-clients",
    "clients",
    "keys-dir",
    "report-accuracy",
    "run-dir",
    "resume-dir",
    "round-timeout",
    "wait-for-nodes",
)


def _convert(key: str, value: Any, kind: str) -> Any:
    if kind == "opt":
        return None if value in (0, 0.0, "", None) else value
    if kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"run config {key} must be true or false, got {value!r}")
        return value
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"run config {key} must be an integer, got {value!r}")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"run config {key} must be a number, got {value!r}")
        return float(value)
    return str(value)


@dataclass(frozen=True)
class Deployment:
    """The run configuration plus the options only a deployment has."""

    config: RunConfig
    min_clients: int
    clients: int
    keys_dir: str  # on the SuperLink machine: server.keys, roster.json, identities/server.key
    report_accuracy: bool  # sites send held-out accuracy (a leak channel: off by default)
    run_dir: str
    resume_dir: str
    round_timeout: float
    wait_for_nodes: float

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> Deployment:
        unknown = sorted(set(run_config) - set(RUN_KEYS) - set(DEPLOYMENT_KEYS))
        if unknown:
            raise ConfigError(f"unknown run config keys: {', '.join(unknown)}")
        values = {
            field: _convert(key, run_config[key], kind)
            for key, (field, kind) in RUN_KEYS.items()
            if key in run_config
        }
        if not values.get("dp", True):
            values.update(epsilon=None, noise_multiplier=None)
        labels = str(run_config.get("labels", ""))
        values["labels"] = tuple(x.strip() for x in labels.split(",") if x.strip())
        min_clients = int(run_config.get("min-clients", 2))
        clients = int(run_config.get("clients", min_clients))
        if min_clients < 1 or clients < min_clients:
            raise ConfigError("min-clients must be at least 1 and at most clients")
        per_round = values.get("clients_per_round")
        if (
            isinstance(per_round, int)
            and not isinstance(per_round, bool)
            and per_round < min_clients
        ):
            raise ConfigError(
                f"clients-per-round {per_round} is below min-clients {min_clients}: every round "
                "would fail; raise clients-per-round or lower min-clients"
            )
        # sites send their accuracy only when the run releases it (a protection turned off)
        report_accuracy = _convert(
            "report-accuracy", run_config.get("report-accuracy", False), "bool"
        )
        # num_clients: the sites expected; the in-process partitioner is not used
        config = RunConfig(**values, num_clients=clients, release_evaluation=report_accuracy)
        return cls(
            config=config,
            min_clients=min_clients,
            clients=clients,
            keys_dir=str(run_config.get("keys-dir", "")),
            report_accuracy=report_accuracy,
            run_dir=str(run_config.get("run-dir", "")),
            resume_dir=str(run_config.get("resume-dir", "")),
            round_timeout=float(run_config.get("round-timeout", 900)),
            wait_for_nodes=float(run_config.get("wait-for-nodes", 120)),
        )

    @property
    def round_clients(self) -> int:
        """How many sites take part in a round: ``clients-per-round``, or ``clients``. Both the
        server and each site fix the masking threshold from it (never from the server's word)."""
        return self.config.clients_per_round or self.clients


def config_digest(config: RunConfig) -> str:
    """Both sides derive the RunConfig from the same run config; this checks they agree."""
    text = json.dumps(config.to_dict(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def site_spec(node_config: dict[str, Any]) -> SiteSpec:
    """What this SuperNode's site holds, from its ``--node-config``."""
    known = {
        "data-file",
        "keys",
        "identity",
        "state-dir",
        "client-id",
        "partition-id",
        "num-partitions",
        "anchor-dir",
    }
    unknown = sorted(set(node_config) - known)
    if unknown:
        raise ConfigError(f"unknown node config keys: {', '.join(unknown)}")
    if not node_config.get("state-dir"):
        raise ConfigError("node config needs state-dir=PATH (the site's own state directory)")

    def path(key: str) -> Path | None:
        value = node_config.get(key)
        return Path(str(value)).expanduser() if value not in (None, "") else None

    def number(key: str) -> int | None:
        value = node_config.get(key)
        return None if value in (None, "") else int(value)

    return SiteSpec(
        state_dir=Path(str(node_config["state-dir"])).expanduser(),
        keys=path("keys"),
        identity=path("identity"),
        data_file=path("data-file"),
        partition_id=number("partition-id"),
        num_partitions=number("num-partitions"),
        client_id=str(node_config["client-id"]) if node_config.get("client-id") else None,
        anchors=path("anchor-dir"),
    )
