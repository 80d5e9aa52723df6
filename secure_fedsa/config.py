"""The run configuration: one validated, serializable, versioned dataclass.

Every run writes the configuration it used (``config.json``); ``RunConfig.from_dict`` reads it
back and refuses unknown fields or a newer format version. DP and encryption are on unless turned
off explicitly. Each field that is a run option says how (its help, flag, Flower key, choices):
that metadata is the one option table every transport is made from (secure_fedsa.options).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any

from secure_fedsa.errors import ConfigError

CONFIG_VERSION = 4
# Version 2 had no adapter_layers: every encoder layer was adapted. It is read as that. Versions
# 2 and 3 accounted privacy under add/remove-one neighbours with Opacus (accountant "prv" or
# "rdp"): they are read (old runs and sweeps can be reported and audited) but never trained
# with; version 4 accounts under replace-one with dp_accounting's PLD (privacy/accounting.py).
READABLE_VERSIONS = (2, 3, 4)
ACCOUNTANTS = ("pld",)
LEGACY_ACCOUNTANTS = ("prv", "rdp")
CLIPPING_MODES = ("hooks", "ghost")
# The sharing policies: which tensor groups ("A", "B", "head") each method shares and which it
# freezes. Declared here, as plain data, so that the configuration and the command line's option
# table need neither torch nor numpy; secure_fedsa.model.sharing builds its policies from them.
METHODS = ("fedsa", "fedit", "ffa", "local")
SHARED_GROUPS: dict[str, frozenset[str]] = {
    "fedsa": frozenset({"A"}),
    "fedit": frozenset({"A", "B"}),
    "ffa": frozenset({"B"}),
    "local": frozenset(),
}
FROZEN_GROUPS: dict[str, frozenset[str]] = {"ffa": frozenset({"A"})}
TENSOR_GROUPS = frozenset({"A", "B", "head"})


def kept_groups(method: str, head: str) -> frozenset[str]:
    """The tensor groups ``method`` trains but never shares, with the head ``local`` or
    ``shared`` (pure; the names are checked elsewhere)."""
    shared = SHARED_GROUPS[method] | ({"head"} if head == "shared" else set())
    return TENSOR_GROUPS - FROZEN_GROUPS.get(method, frozenset()) - shared


PARTITIONS = ("iid", "dirichlet", "natural")
# how many training records each client gets: as the partition gives them, or log-normal sizes
# between min_train_examples and max_train_examples (secure_fedsa/data/partition.py)
CLIENT_SIZES = ("partition", "lognormal")
HEADS = ("local", "shared")
ADAPTERS = ("lora", "rslora", "vera")
OPTIMIZER_STATES = ("fresh", "kept")
LR_SCHEDULES = ("constant", "linear", "cosine")  # secure_fedsa.schedule computes them
# `--canaries` alone: the run-level audit's canaries per client: enough for the audit to refute a
# claim of ε = 1 or ε = 8 at δ = 1e-5 when the run leaks twice that, and to certify ε = 8, yet
# fewer than the default job's 12 288 shared values (one canary per coordinate); docs/audit.md,
# "Canaries in the run": the power at this M and the measured utility cost
DEFAULT_CANARIES = 10_000


# -- the option table -----------------------------------------------------------------------
# Every run option is declared once, as the metadata of its RunConfig field; secure_fedsa.options
# makes the command line (`secure-fedsa run`, `secure-fedsa sweep`), the Flower run-config keys
# and their conversion, and pyproject.toml's [tool.flwr.app.config] block from it, and the
# validation below names options by the flags it gives. Help texts may name other options as
# {field_name}: each transport writes its own spelling (--test-fraction, test-fraction).
OPTION = "secure_fedsa.option"
NOT_AN_OPTION = "secure_fedsa.not_an_option"


@dataclass(frozen=True)
class Option:
    """How a RunConfig field is set: its help, its spellings and what None means.

    The kind (int, float, str, bool, a list of strings, each optionally None) is the field's
    annotation; ``choices`` makes a str a choice. A bool is a switch on the command line that
    turns its default around (``--no-dp`` for a default of True, ``--release-evaluation`` for
    False) and ``true``/``false`` in a Flower run config. A list is comma-separated (``--labels
    a,b``; ``labels = "a,b"``) unless ``words`` (``--data a.csv b.csv``). TOML has no null: a
    Flower run config gives None as 0 (numbers) or "" (text).
    """

    help: str = ""
    flag: str = ""  # the command-line flag; "": --field-name (a bool: --no-field-name if on)
    key: str = ""  # the Flower run-config key; "": the flag's name (a bool: the field's)
    choices: tuple[str, ...] = ()  # the values a choice takes (the one constant above)
    none_means: str = ""  # what None means (every optional field says)
    none_word: str = ""  # a word the command line takes for None where the default is not None
    words: bool = False  # a list given as separate words on the command line, not with commas
    flower_note: str = ""  # what a Flower deployment adds (pyproject's comment only)
    not_in_flower: str = ""  # why a Flower run config does not set it (then it has no key)
    bare: Any = None  # the value of the flag given without one (None: the flag needs a value)


def option(default: Any, help: str = "", **details: Any) -> Any:
    """A RunConfig field that is a run option."""
    return field(default=default, metadata={OPTION: Option(help, **details)})


def not_an_option(default: Any, why: str) -> Any:
    """A RunConfig field that no transport sets, and why."""
    return field(default=default, metadata={NOT_AN_OPTION: why})


@dataclass(frozen=True)
class RunConfig:
    # what to run
    method: str = option("fedsa", choices=METHODS)
    # the task head: kept on each client (ours), or aggregated like the shared adapter tensors
    # (FederatedScope's baselines in the FedSA-LoRA paper aggregate the classifier)
    head: str = option(
        "local",
        "keep the task head on each client, or aggregate it like the shared adapter tensors "
        "(the FedSA-LoRA paper's baselines)",
        choices=HEADS,
    )
    # lora; rslora (rank-stabilised scaling alpha/sqrt(r)); vera (frozen shared random
    # projections of rank vera_r, trained scaling vectors: lambda_d on the A side, lambda_b on B)
    adapter: str = option(
        "lora",
        "(rslora: LoRA scaled by alpha/sqrt(r); vera: shared frozen random projections, trained "
        "scaling vectors)",
        choices=ADAPTERS,
    )
    rounds: int = option(5, "federation rounds")
    local_steps: int = option(6, "optimizer steps per client per round")
    num_clients: int = option(
        3,
        "number of clients",
        flag="--clients",
        flower_note="the sites expected: the first round waits for them (absent: min-clients)",
    )
    # K clients drawn per round (uniformly, without replacement, from the seed and the round
    # number: secure_fedsa/sampling.py); only they train, spend privacy and send; every client
    # applies the aggregate and evaluates. None: every client, every round
    clients_per_round: int | None = option(
        None,
        "K clients drawn each round from the seed and the round number; only they train, spend "
        "privacy and send (not privacy amplification); all evaluate and apply the aggregate",
        none_means="every client",
        flower_note="at least min-clients",
    )
    # After its last round each client trains the tensors its method does not share (B and the
    # head under fedsa) this many more steps on its own training records WITHOUT DP, and keeps
    # that model for itself (clients/<id>/finished-adapter/): nothing of it is ever released, so
    # every release stays (ε, δ)-DP, but that model is not DP (docs/privacy.md, "Finishing").
    # 0: the final model is the DP-trained one.
    finish_steps: int = option(
        0,
        "after its last round each client trains the tensors it keeps to itself (B, head) N "
        "more steps WITHOUT DP and keeps that model in its own directory; releases stay DP, the "
        "finished model is not. 0 until a measurement shows it pays",
    )
    seed: int = option(0, "random seed (runs are deterministic per seed)")
    # data
    dataset: str = option(
        "rotten_tomatoes",
        "bundled dataset (rotten_tomatoes, tweets, health_news) or a CSV/JSONL file",
        flower_note="read by sites given partition-id instead of data-file",
    )
    data_files: tuple[str, ...] = option(
        (),
        "one data file per client",
        flag="--data",
        words=True,
        not_in_flower="each site names its own file in its node config (data-file=PATH)",
    )
    text_column: str = option("text", "text column of a user file")
    label_column: str = option("label", "label column of a user file")
    client_column: str | None = option(
        None,
        "column giving each example's client",
        none_means="none",
        flower_note="sites given partition-id split the run's dataset by it as `secure-fedsa "
        "run` does; a site with its own data-file is one client and does not read it",
    )
    labels: tuple[str, ...] = option(
        (),
        "comma-separated label vocabulary, in order; other labels are errors",
        flower_note="needed when sites have their own data files",
    )
    partition: str = option("dirichlet", choices=PARTITIONS)
    alpha: float = option(0.5, "Dirichlet concentration for label skew")
    test_fraction: float = option(
        0.2,
        "share of each client's data held out for testing; with {test_examples}, the share of "
        "the dataset held out as the test pool",
    )
    max_examples: int | None = option(
        None, "a random subset of N examples", none_means="all", flower_note="per site"
    )
    # quantity skew: "lognormal" gives each client a number of training records (validation
    # included) from a log-normal with log-scale size_sigma truncated to [min_train_examples,
    # max_train_examples], its median the bounds' geometric middle or lower until the data fits;
    # records no client gets are unused. Needs test_examples; each client's label mix still
    # follows partition (iid or dirichlet with alpha). "partition": sizes as partition gives them.
    client_sizes: str = option(
        "partition",
        "training records per client as the partition gives them, or a log-normal quantity "
        "skew between {min_train_examples} and {max_train_examples} (needs {test_examples})",
        choices=CLIENT_SIZES,
        flower_note="sites given partition-id only",
    )
    size_sigma: float = option(1.0, "log-scale sigma of the log-normal client sizes")
    min_train_examples: int = option(
        50, "fewest training records per client with {client_sizes} lognormal"
    )
    max_train_examples: int = option(
        1000, "most training records per client with {client_sizes} lognormal"
    )
    # None: test_fraction of each client's records is its test split. N: test_fraction of the
    # dataset is held out as a test pool no client trains on, and each client's test split is N
    # records of it drawn with the client's own label mix (clients' test splits may overlap).
    test_examples: int | None = option(
        None,
        "test records per client, drawn with the client's label mix from a pool "
        "({test_fraction} of the data) no client trains on; clients' test splits may overlap",
        none_means="{test_fraction} of each client's data",
        flower_note="sites given partition-id only",
    )
    # share of each client's training records held out (stratified) for validation, never
    # trained on; 0: no validation split
    validation_fraction: float = option(
        0.0, "share of each client's training records held out for validation, never trained on"
    )
    # model
    model: str | None = option(
        None,
        "local Hugging Face encoder directory",
        none_means="all-MiniLM-L6-v2",
        flower_note="the same directory on every site",
    )
    num_layers: int | None = option(None, "keep only the first N encoder layers", none_means="all")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA alpha")
    vera_r: int = option(256, "rank of VeRA's shared random projections")
    target_modules: tuple[str, ...] = option(
        ("query", "value"),
        "comma-separated module names that get LoRA (e.g. q_lin,v_lin for DistilBERT)",
    )
    # adapt only the top N encoder layers (None: every layer). Above num_layers it is recorded
    # as num_layers, the layers the adapter is on (the command line refuses an explicit count
    # above the layers the model has). Fewer adapted layers: fewer values that carry DP noise,
    # and no backward pass below the lowest adapted layer, which pays for the larger batch below
    # (docs/results.md, "A DP recipe for the default job").
    adapter_layers: int | None = option(
        2, "adapt only the top N encoder layers", none_means="all", none_word="all"
    )
    max_length: int = option(40, "tokens per example")
    # optimisation
    # expected batch (Poisson sampling under DP): σ grows slowly with it at this budget, so the
    # noise per example (σ · clip / batch) falls almost in proportion (docs/results.md)
    batch_size: int = option(512, "expected logical batch (Poisson sampling under DP)")
    physical_batch_size: int = option(64, "examples per forward pass (memory)")
    lr: float = option(5e-3, "learning rate (AdamW)")
    # fresh: a new AdamW every round (FederatedScope's way); kept: each client's AdamW state
    # (moments, step count) carries over to its next round, and the client clamps each round's
    # change of its shared values to the bound a fresh optimizer obeys (docs/crypto.md). Kept
    # did not beat fresh over 5 seeds (docs/results.md, "A DP recipe for the default job").
    optimizer_state: str = option(
        "fresh",
        "(fresh: a new AdamW every round; kept: AdamW state carries over between rounds)",
        choices=OPTIMIZER_STATES,
    )
    # the lr of each step over the whole federation: constant, or decaying from lr towards 0
    # (linear, cosine); secure_fedsa/schedule.py
    lr_schedule: str = option(
        "constant",
        "the lr over the whole federation: constant, or decaying from {lr} towards 0",
        choices=LR_SCHEDULES,
    )
    eval_examples_per_round: int = option(
        200, "test examples per client per round", flag="--eval-examples"
    )
    # differential privacy
    dp: bool = option(True, "differential privacy")
    epsilon: float | None = option(
        8.0,
        "DP budget per client for the whole federation",
        none_means="no budget (give {noise_multiplier})",
    )
    delta: float = option(1e-5, "DP delta (must be below 1/n)")
    noise_multiplier: float | None = option(
        None, "give sigma directly instead of {epsilon}", none_means="calibrated from {epsilon}"
    )
    # Above most examples' gradient norm (about 2-3 for the default model at the start): a clip
    # that cuts every example weighs each one equally whatever its loss, which under label skew
    # pushes a client to its majority class (docs/privacy.md, "Choosing the clip").
    clip: float = option(5.0, "per-example gradient norm bound")
    # dp_accounting's PLD under replace-one neighbours (the only relation that means something
    # when each client's number of records is public, as it is here)
    accountant: str = option(
        "pld", "(dp_accounting's PLD, replace-one neighbours)", choices=ACCOUNTANTS
    )
    clipping: str = option("hooks", "per-sample clipping", choices=CLIPPING_MODES)
    # The run-level privacy audit (secure_fedsa/privacy/canaries.py, docs/audit.md): each client
    # trains this many white-box gradient canaries inside its own DP-SGD, their secret bits
    # committed in its ledger; `secure-fedsa audit` bounds ε from them. 0: no canaries.
    canaries: int = option(
        0,
        "audit mode: Dirac gradient canaries each client trains inside its own DP-SGD, for a "
        f"run-level ε lower bound by `secure-fedsa audit` (0: none; the flag alone: "
        f"{DEFAULT_CANARIES}; docs/audit.md)",
        bare=DEFAULT_CANARIES,
    )
    # encryption
    encryption: bool = option(True, "encryption")
    # pairwise masks over the ciphertexts (secure aggregation): no coalition of the server with
    # fewer than masking_threshold clients (None: a majority of each round's clients) learns one
    # client's update, even holding the CKKS key
    masking: bool = option(True, "pairwise masking of ciphertexts (secure aggregation)")
    masking_threshold: int | None = option(
        None, "clients needed to unmask a round", none_means="a majority of the round's clients"
    )
    keys_dir: str | None = option(
        None,
        "directory with key bundles",
        flag="--keys",
        none_means="new keys per run",
        not_in_flower="the SuperLink's key directory is the deployment option keys-dir and each "
        "site names its own keys in its node config (keys=PATH, identity=PATH); none of these "
        "paths is part of the run's configuration",
    )
    max_clients: int = option(64, "most clients the encrypted sum must hold")
    # Each client's accuracy (and majority-class rate) on its private test split is not
    # differentially private: it stays in the client's own directory unless this releases it
    # into the run's shared files (metrics.jsonl, summary.json), said loudly as a protection off.
    release_evaluation: bool = option(
        False,
        "write each client's test accuracy into the run's shared files (metrics.jsonl, "
        "summary.json); it is NOT differentially private (default: kept in each client's own "
        "directory)",
        key="report-accuracy",
        flower_note="sites send it to the server, computed with the decrypted aggregate",
    )
    version: int = not_an_option(
        CONFIG_VERSION, "the format of config.json: the library writes it and reads it back"
    )

    def __post_init__(self) -> None:
        validate(self)
        if (
            self.num_layers is not None
            and self.adapter_layers is not None
            and self.adapter_layers > self.num_layers
        ):
            # the top N of fewer than N layers are all of them: the configuration says how many
            object.__setattr__(self, "adapter_layers", self.num_layers)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["data_files"] = list(self.data_files)
        data["labels"] = list(self.labels)
        data["target_modules"] = list(self.target_modules)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        if not isinstance(data, dict):
            raise ConfigError("a configuration must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown configuration fields: {', '.join(unknown)}")
        version = data.get("version", CONFIG_VERSION)
        if version not in READABLE_VERSIONS:
            raise ConfigError(
                f"configuration version {version} is not supported (this is version "
                f"{CONFIG_VERSION}); use the secure_fedsa release that wrote it"
            )
        values = dict(data)
        if version < 4 and "release_evaluation" in values:
            raise ConfigError(f"a version {version} configuration cannot have release_evaluation")
        if version < 4:  # add/remove-one accounting with Opacus; readable, never trained with
            values.setdefault("accountant", "prv")
        if version == 2:  # written before adapter_layers existed: every layer was adapted
            if "adapter_layers" in values:
                raise ConfigError("a version 2 configuration cannot have adapter_layers")
            values.update(adapter_layers=None, version=3)
        for key in ("data_files", "labels", "target_modules"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    @property
    def neighbouring_relation(self) -> str:
        """The relation this configuration's ε is stated in: "replace-one", or
        "add/remove-one" for a configuration written before version 4 (never trained with)."""
        return "add/remove-one" if self.accountant in LEGACY_ACCOUNTANTS else "replace-one"

    @property
    def protections(self) -> list[str]:
        """Plain-language warnings for every protection that is off (empty when all are on)."""
        warnings = []
        if not self.dp:
            warnings.append("NO DIFFERENTIAL PRIVACY: shared updates can reveal training records")
        if self.release_evaluation:
            warnings.append(
                "EVALUATION RELEASED: each client's accuracy on its private test split is written "
                "to the run's shared files (metrics.jsonl, summary.json); it is not "
                "differentially private"
            )
        if not self.encryption:
            warnings.append("NO ENCRYPTION: the server sees every client's update in plaintext")
        elif not self.masking:
            warnings.append(
                "NO PAIRWISE MASKING: a server that colludes with one client (which holds the "
                "shared CKKS key) can decrypt every individual update"
            )
        return warnings


def flag(name: str) -> str:
    """The command-line flag of RunConfig field ``name``, as every message names the option
    (``--clients`` for num_clients; a bool's switch: ``--no-dp``). A Flower deployment rewrites
    each flag into its run-config key (secure_fedsa.options.flower_words)."""
    return _flags()[name]


@functools.cache
def _flags() -> dict[str, str]:
    flags = {}
    for f in dataclasses.fields(RunConfig):
        details = f.metadata.get(OPTION)
        if details is None:
            continue
        dashed = f.name.replace("_", "-")
        if details.flag:
            flags[f.name] = details.flag
        elif f.type == "bool" and f.default:
            flags[f.name] = f"--no-{dashed}"
        else:
            flags[f.name] = f"--{dashed}"
    return flags


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive_int(config: RunConfig, name: str) -> None:
    value = getattr(config, name)
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{flag(name)} must be a positive integer, got {value!r}",
    )


def _choice(config: RunConfig, name: str, what: str) -> None:
    """A choice field holds one of the choices its option declares."""
    value = getattr(config, name)
    choices = RunConfig.__dataclass_fields__[name].metadata[OPTION].choices
    _check(
        value in choices,
        f"{flag(name)}: unknown {what} {value!r}: choose one of {', '.join(choices)}",
    )


def _check_sizes(config: RunConfig) -> None:
    """The quantity-skew, test-size and validation fields (each alone, then together)."""
    _choice(config, "client_sizes", "client sizes")
    _check(
        config.size_sigma > 0 and math.isfinite(config.size_sigma),
        f"{flag('size_sigma')} must be a positive number",
    )
    _positive_int(config, "min_train_examples")
    _positive_int(config, "max_train_examples")
    _check(
        config.min_train_examples <= config.max_train_examples,
        f"{flag('min_train_examples')} ({config.min_train_examples}) exceeds "
        f"{flag('max_train_examples')} ({config.max_train_examples})",
    )
    if config.test_examples is not None:
        _positive_int(config, "test_examples")
    _check(
        0 <= config.validation_fraction < 1 and math.isfinite(config.validation_fraction),
        f"{flag('validation_fraction')} must be at least 0 and below 1",
    )
    natural = config.partition == "natural" or config.client_column or config.data_files
    natural_clients = (
        f"natural clients (a group, a {flag('client_column')} value, a {flag('data_files')} file)"
    )
    if config.client_sizes == "lognormal":
        _check(
            not natural,
            f"{flag('client_sizes')} lognormal needs {flag('partition')} iid or dirichlet: "
            f"{natural_clients} have their group's size",
        )
        _check(
            config.test_examples is not None,
            f"{flag('client_sizes')} lognormal needs {flag('test_examples')} N (e.g. 200): a "
            "fixed-size test split per client, as a fraction of a 50-record client is too small "
            "to measure",
        )
    if config.test_examples is not None:
        _check(
            not natural,
            f"{flag('test_examples')} draws test records by label mix from a shared pool, which "
            f"does not fit {natural_clients}; use {flag('test_fraction')}",
        )


def _check_threshold_floor(config: RunConfig) -> None:
    """A masking threshold below floor(2n/3) + 1 (n: the clients of one round) lets a server that
    lies about dropouts unmask an honest client with fewer than t clients (docs/crypto.md)."""
    from secure_fedsa.secagg.threshold import threshold_problem

    masked = config.masking and config.encryption and config.method != "local"
    if not masked or config.masking_threshold is None:
        return
    holders = config.clients_per_round or config.num_clients
    if not isinstance(holders, int) or not 1 <= config.masking_threshold <= holders:
        return  # the range checks say what is wrong
    problem = threshold_problem(config.masking_threshold, holders)
    _check(problem is None, f"{flag('masking_threshold')}: {problem}")


def masking_floor(config: RunConfig) -> int:
    """The fewest clients one round's masked sum needs: the masking threshold, and at least two
    (the sum of one update is that update, which every client decrypts)."""
    return max(2, config.masking_threshold or 1)


def _check_rounds_and_finishing(config: RunConfig) -> None:
    """clients_per_round and finish_steps (after the fields they depend on)."""
    k = config.clients_per_round
    if k is not None:
        _check(
            isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= config.num_clients,
            f"{flag('clients_per_round')} must be between 1 and the number of clients "
            f"({config.num_clients}), got {k!r}",
        )
        masked = config.masking and config.encryption and config.method != "local"
        if masked and k < config.num_clients:
            floor = masking_floor(config)
            _check(
                k >= floor,
                f"{flag('clients_per_round')} {k} is too few for secure aggregation: each "
                f"round's masked sum needs at least {floor} clients ("
                + (
                    f"the masking threshold {config.masking_threshold}"
                    if (config.masking_threshold or 0) >= 2
                    else "the sum of one client's update is that update, which every client "
                    "decrypts"
                )
                + f"); give {flag('clients_per_round')} {floor} or more, a lower "
                f"{flag('masking_threshold')}, or {flag('masking')}",
            )
    steps = config.finish_steps
    _check(
        isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0,
        f"{flag('finish_steps')} must be a whole number of steps (0: no finishing), got {steps!r}",
    )
    if steps > 0:  # the method and head were checked before
        _check(
            bool(kept_groups(config.method, config.head)),
            f"{flag('finish_steps')} has nothing to train: {config.method} with {flag('head')} "
            f"{config.head} shares every tensor it trains, and finishing trains only the tensors "
            "a client keeps to itself",
        )


def _check_canaries(config: RunConfig) -> None:
    """The run-level audit's canaries need DP and per-sample gradients to join."""
    m = config.canaries
    _check(
        isinstance(m, int) and not isinstance(m, bool) and m >= 0,
        f"canaries must be a whole number (0: no canaries), got {m!r}",
    )
    if m > 0:
        _check(config.dp, "--canaries audits differential privacy: it needs DP on")
        _check(
            config.clipping == "hooks",
            "--canaries needs --clipping hooks: the canaries join the per-sample gradients, which "
            "ghost clipping never materialises",
        )
        _check(config.method != "local", "--canaries needs a method that shares tensors")


def validate(config: RunConfig) -> None:
    """Raise ConfigError naming the first invalid field (by its flag) and how to fix it."""
    _choice(config, "method", "method")
    _choice(config, "head", "head")
    _check(
        not (config.method == "local" and config.head == "shared"),
        f"{flag('head')} shared needs a federated method: local shares nothing",
    )
    _choice(config, "adapter", "adapter")
    for name in (
        "vera_r",
        "rounds",
        "local_steps",
        "num_clients",
        "lora_r",
        "lora_alpha",
        "max_length",
        "batch_size",
        "physical_batch_size",
        "eval_examples_per_round",
        "max_clients",
    ):
        _positive_int(config, name)
    _check(config.num_clients >= 1, f"{flag('num_clients')} must be at least 1")
    _check(
        config.num_clients <= config.max_clients,
        f"{flag('num_clients')} ({config.num_clients}) exceeds {flag('max_clients')} "
        f"({config.max_clients})",
    )
    _choice(config, "partition", "partition")
    _check(
        config.alpha > 0 and math.isfinite(config.alpha),
        f"{flag('alpha')} must be a positive number",
    )
    _check(0 < config.test_fraction < 1, f"{flag('test_fraction')} must be between 0 and 1")
    _check_sizes(config)
    _check(
        config.max_examples is None or config.max_examples > 0,
        f"{flag('max_examples')} must be positive",
    )
    _check(
        config.num_layers is None or config.num_layers > 0, f"{flag('num_layers')} must be positive"
    )
    _check(
        config.adapter_layers is None
        or (
            isinstance(config.adapter_layers, int)
            and not isinstance(config.adapter_layers, bool)
            and config.adapter_layers > 0
        ),
        f"{flag('adapter_layers')} must be a positive integer or 'all', got "
        f"{config.adapter_layers!r}",
    )
    _check(config.lr > 0 and math.isfinite(config.lr), f"{flag('lr')} must be a positive number")
    _check(
        config.clip > 0 and math.isfinite(config.clip), f"{flag('clip')} must be a positive number"
    )
    _check(0 < config.delta < 1, f"{flag('delta')} must be between 0 and 1 (and below 1/n)")
    readable = ACCOUNTANTS if config.version >= 4 else ACCOUNTANTS + LEGACY_ACCOUNTANTS
    _check(
        config.accountant in readable,
        f"{flag('accountant')}: unknown accountant {config.accountant!r}: choose one of "
        f"{', '.join(ACCOUNTANTS)}"
        + (
            " ('prv' and 'rdp' analyse add/remove-one neighbours, which protect nothing once "
            "a client's number of records is public; see docs/privacy.md)"
            if config.accountant in LEGACY_ACCOUNTANTS
            else ""
        ),
    )
    _check(
        config.version in READABLE_VERSIONS,
        f"configuration version {config.version!r} is not supported (this is version "
        f"{CONFIG_VERSION})",
    )
    _choice(config, "optimizer_state", "optimizer state")
    _choice(config, "lr_schedule", "lr schedule")
    _choice(config, "clipping", "clipping mode")
    if config.dp:
        _check(
            config.epsilon is not None or config.noise_multiplier is not None,
            f"with DP on, give {flag('epsilon')} (a budget), {flag('noise_multiplier')}, or both "
            "(a fixed noise multiplier with a budget that stops clients when it is spent)",
        )
        _check(
            config.epsilon is None or (config.epsilon > 0 and math.isfinite(config.epsilon)),
            f"{flag('epsilon')} must be a positive finite number (use {flag('dp')} for no privacy)",
        )
        _check(
            config.noise_multiplier is None or config.noise_multiplier > 0,
            f"{flag('noise_multiplier')} must be positive (use {flag('dp')} for no privacy)",
        )
    _check(
        config.masking_threshold is None
        or (
            isinstance(config.masking_threshold, int)
            and 1 <= config.masking_threshold <= config.num_clients
        ),
        f"{flag('masking_threshold')} must be between 1 and the number of clients "
        f"({config.num_clients})",
    )
    _check_threshold_floor(config)
    _check_rounds_and_finishing(config)
    _check_canaries(config)
    _check(
        bool(config.dataset) or bool(config.data_files),
        f"name a dataset ({flag('dataset')}) or {flag('data_files')} files",
    )
    _check(
        len(config.target_modules) > 0
        and all(isinstance(m, str) and m for m in config.target_modules),
        f"{flag('target_modules')} must name at least one module (e.g. query,value)",
    )
