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
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_fedsa import options
from secure_fedsa.config import RunConfig
from secure_fedsa.errors import ConfigError
from secure_fedsa.secagg.site_policy import MIN_THRESHOLD, REQUIRE_MASKING
from secure_fedsa.site.build import SiteSpec

# message content keys
CONFIG = "config"
REPORT = "report"
UPDATE = "update"
AGGREGATE = "aggregate"
SECAGG = "secagg"  # secure aggregation's records (secure_fedsa.transports.flower.secagg_records)
# the opaque array: bytes of a secure_fedsa.crypto.wire message (CKKS ciphertexts or, with
# encryption off, plaintext), carried as a flat uint8 array whose stype says how to read it
ARRAY_DTYPE = "uint8"
ARRAY_STYPE = "secure_fedsa.crypto.wire"
TRANSPORT = "flower"

# run-config key -> RunConfig field: every run option a Flower run config sets, from the option
# table (RunConfig's field metadata; secure_fedsa.options converts the values)
RUN_KEYS: dict[str, str] = {key: o.name for key, o in options.flower_options().items()}
# the options only a deployment has: key -> (default, help); the default's type is the kind
DEPLOYMENT_OPTIONS: dict[str, tuple[Any, str]] = {
    "min-clients": (2, "fewer accepted updates in a round: the round fails"),
    "wait-for-nodes": (120.0, "seconds to wait for `clients` SuperNodes to connect"),
    "round-timeout": (900.0, "seconds per phase; a site slower than that is a dropout"),
    "keys-dir": (
        "",
        "on the SuperLink machine: server.keys, roster.json, identities/server.key",
    ),
    "run-dir": ("", 'server run directory; "" = runs/<time>-flower-<method>'),
    "resume-dir": ("", "continue a failed or interrupted run directory"),
}
DEPLOYMENT_KEYS = tuple(DEPLOYMENT_OPTIONS)


def _deployment_value(run_config: dict[str, Any], key: str) -> Any:
    default, _ = DEPLOYMENT_OPTIONS[key]
    if key not in run_config:
        return default
    kind = {bool: "bool", int: "int", float: "float"}.get(type(default), "str")
    return options.convert(key, run_config[key], kind)


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
        unknown = sorted(set(run_config) - set(RUN_KEYS) - set(DEPLOYMENT_OPTIONS))
        if unknown:
            raise ConfigError(f"unknown run config keys: {', '.join(unknown)}")
        values = options.flower_values(run_config)
        if not values.get("dp", True):
            values.update(epsilon=None, noise_multiplier=None)
        min_clients = _deployment_value(run_config, "min-clients")
        # num_clients: the sites expected (the in-process partitioner is not used)
        clients = values.pop("num_clients", min_clients)
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
        try:
            config = RunConfig(**values, num_clients=clients)
        except ConfigError as exc:  # named as this run config names the options
            raise ConfigError(options.flower_words(str(exc))) from None
        return cls(
            config=config,
            min_clients=min_clients,
            clients=clients,
            keys_dir=_deployment_value(run_config, "keys-dir"),
            # sites send their accuracy only when the run releases it (a protection turned off)
            report_accuracy=config.release_evaluation,
            run_dir=_deployment_value(run_config, "run-dir"),
            resume_dir=_deployment_value(run_config, "resume-dir"),
            round_timeout=_deployment_value(run_config, "round-timeout"),
            wait_for_nodes=_deployment_value(run_config, "wait-for-nodes"),
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
        REQUIRE_MASKING,  # the site's pinned policy (secure_fedsa.secagg.site_policy)
        MIN_THRESHOLD,
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


# -- pyproject.toml's [tool.flwr.app.config] ------------------------------------------------
APP_CONFIG_TABLE = "[tool.flwr.app.config]"


def app_config_block() -> str:
    """The ``[tool.flwr.app.config]`` table: every run option a Flower run config sets (from
    RunConfig's field metadata) and the deployment's own options, each at its default under its
    help text. pyproject.toml holds exactly this (tests/test_flower_apps.py)."""
    intro = (
        "Generated from the option tables (RunConfig's field metadata in secure_fedsa/config.py; "
        "DEPLOYMENT_OPTIONS in secure_fedsa/transports/flower/protocol.py): edit those, then `make "
        "app-config`. The options of `secure-fedsa run` and the deployment's own; TOML has no "
        'null: 0 or "" means "not set" where an option\'s default is none. Override any with'
    )
    lines = [APP_CONFIG_TABLE]
    lines += [f"# {line}" for line in textwrap.wrap(intro, 98, break_on_hyphens=False)]
    lines += ["#   flwr run . CONNECTION --run-config 'rounds=8 epsilon=3.0'", ""]
    lines += options.flower_toml_lines()
    lines += ["", "# -- deployment (Flower only)"]
    for key, (default, text) in DEPLOYMENT_OPTIONS.items():
        lines += options.toml_entry(key, default, text)
    return "\n".join(lines) + "\n"


def app_config_span(text: str) -> tuple[int, int]:
    """Where ``[tool.flwr.app.config]`` starts and ends in pyproject.toml's ``text`` (its header
    line up to the next table's header, or the end)."""
    start = text.find(f"\n{APP_CONFIG_TABLE}\n")
    if start < 0:
        raise ConfigError(f"pyproject.toml has no {APP_CONFIG_TABLE} table")
    start += 1
    following = re.search(r"^\[", text[start + len(APP_CONFIG_TABLE) :], flags=re.MULTILINE)
    end = len(text) if following is None else start + len(APP_CONFIG_TABLE) + following.start()
    return start, start + len(text[start:end].rstrip("\n")) + 1  # up to its last line's end


def write_app_config(pyproject: Path) -> bool:
    """Rewrite ``pyproject``'s ``[tool.flwr.app.config]`` as generated; True if it changed."""
    text = pyproject.read_text(encoding="utf-8")
    start, end = app_config_span(text)
    new = text[:start] + app_config_block() + text[end:]
    if new == text:
        return False
    pyproject.write_text(new, encoding="utf-8")
    return True


if (
    __name__ == "__main__"
):  # `make app-config`: python -m secure_fedsa.transports.flower.protocol [PATH]
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "pyproject.toml")
    changed = write_app_config(target)
    print(f"{target}: [tool.flwr.app.config] {'rewritten' if changed else 'already current'}")
