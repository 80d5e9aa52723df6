"""The run configuration: one validated, serializable, versioned dataclass.

Every run writes the configuration it used (``config.json``); ``RunConfig.from_dict`` reads it
back and refuses unknown fields or a newer format version. DP and encryption are on unless turned
off explicitly.
"""

from __future__ import annotations

import dataclasses
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
# the sharing policies (secure_fedsa.sharing.POLICIES holds what each shares), named here so that
# the configuration and the command line's option table need neither torch nor numpy
METHODS = ("fedsa", "fedit", "ffa", "local")
PARTITIONS = ("iid", "dirichlet", "natural")
# how many training records each client gets: as the partition gives them, or log-normal sizes
# between min_train_examples and max_train_examples (secure_fedsa/data/partition.py)
CLIENT_SIZES = ("partition", "lognormal")
HEADS = ("local", "shared")
ADAPTERS = ("lora", "rslora", "vera")
OPTIMIZER_STATES = ("fresh", "kept")
LR_SCHEDULES = ("constant", "linear", "cosine")  # secure_fedsa.schedule computes them


@dataclass(frozen=True)
class RunConfig:
    # what to run
    method: str = "fedsa"
    # the task head: kept on each client (ours), or aggregated like the shared adapter tensors
    # (FederatedScope's baselines in the FedSA-LoRA paper aggregate the classifier)
    head: str = "local"
    # lora; rslora (rank-stabilised scaling alpha/sqrt(r)); vera (frozen shared random
    # projections of rank vera_r, trained scaling vectors: lambda_d on the A side, lambda_b on B)
    adapter: str = "lora"
    rounds: int = 5
    local_steps: int = 6
    num_clients: int = 3
    # K clients drawn per round (uniformly, without replacement, from the seed and the round
    # number: secure_fedsa/sampling.py); only they train, spend privacy and send; every client
    # applies the aggregate and evaluates. None: every client, every round
    clients_per_round: int | None = None
    # After its last round each client trains the tensors its method does not share (B and the
    # head under fedsa) this many more steps on its own training records WITHOUT DP, and keeps
    # that model for itself (clients/<id>/finished-adapter/): nothing of it is ever released, so
    # every release stays (ε, δ)-DP, but that model is not DP (docs/privacy.md, "Finishing").
    # 0: the final model is the DP-trained one.
    finish_steps: int = 0
    seed: int = 0
    # data
    dataset: str = "rotten_tomatoes"
    data_files: tuple[str, ...] = ()
    text_column: str = "text"
    label_column: str = "label"
    client_column: str | None = None
    labels: tuple[str, ...] = ()
    partition: str = "dirichlet"
    alpha: float = 0.5
    test_fraction: float = 0.2
    max_examples: int | None = None
    # quantity skew: "lognormal" gives each client a number of training records (validation
    # included) from a log-normal with log-scale size_sigma truncated to [min_train_examples,
    # max_train_examples], its median the bounds' geometric middle or lower until the data fits;
    # records no client gets are unused. Needs test_examples; each client's label mix still
    # follows partition (iid or dirichlet with alpha). "partition": sizes as partition gives them.
    client_sizes: str = "partition"
    size_sigma: float = 1.0
    min_train_examples: int = 50
    max_train_examples: int = 1000
    # None: test_fraction of each client's records is its test split. N: test_fraction of the
    # dataset is held out as a test pool no client trains on, and each client's test split is N
    # records of it drawn with the client's own label mix (clients' test splits may overlap).
    test_examples: int | None = None
    # share of each client's training records held out (stratified) for validation, never
    # trained on; 0: no validation split
    validation_fraction: float = 0.0
    # model
    model: str | None = None
    num_layers: int | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    vera_r: int = 256
    target_modules: tuple[str, ...] = ("query", "value")
    # adapt only the top N encoder layers (None: every layer). Above num_layers it is recorded
    # as num_layers, the layers the adapter is on (the command line refuses an explicit count
    # above the layers the model has). Fewer adapted layers: fewer values that carry DP noise,
    # and no backward pass below the lowest adapted layer, which pays for the larger batch below
    # (docs/results.md, "A DP recipe for the default job").
    adapter_layers: int | None = 2
    max_length: int = 40
    # optimisation
    # expected batch (Poisson sampling under DP): σ grows slowly with it at this budget, so the
    # noise per example (σ · clip / batch) falls almost in proportion (docs/results.md)
    batch_size: int = 512
    physical_batch_size: int = 64
    lr: float = 5e-3
    # fresh: a new AdamW every round (FederatedScope's way); kept: each client's AdamW state
    # (moments, step count) carries over to its next round, and the client clamps each round's
    # change of its shared values to the bound a fresh optimizer obeys (docs/crypto.md). Kept
    # did not beat fresh over 5 seeds (docs/results.md, "A DP recipe for the default job").
    optimizer_state: str = "fresh"
    # the lr of each step over the whole federation: constant, or decaying from lr towards 0
    # (linear, cosine); secure_fedsa/schedule.py
    lr_schedule: str = "constant"
    eval_examples_per_round: int = 200
    # differential privacy
    dp: bool = True
    epsilon: float | None = 8.0
    delta: float = 1e-5
    noise_multiplier: float | None = None
    # Above most examples' gradient norm (about 2-3 for the default model at the start): a clip
    # that cuts every example weighs each one equally whatever its loss, which under label skew
    # pushes a client to its majority class (docs/privacy.md, "Choosing the clip").
    clip: float = 5.0
    # dp_accounting's PLD under replace-one neighbours (the only relation that means something
    # when each client's number of records is public, as it is here)
    accountant: str = "pld"
    clipping: str = "hooks"
    # encryption
    encryption: bool = True
    # pairwise masks over the ciphertexts (secure aggregation): no coalition of the server with
    # fewer than masking_threshold clients (None: a majority of each round's clients) learns one
    # client's update, even holding the CKKS key
    masking: bool = True
    masking_threshold: int | None = None
    keys_dir: str | None = None
    max_clients: int = 64
    # Each client's accuracy (and majority-class rate) on its private test split is not
    # differentially private: it stays in the client's own directory unless this releases it
    # into the run's shared files (metrics.jsonl, summary.json), said loudly as a protection off.
    release_evaluation: bool = False
    version: int = field(default=CONFIG_VERSION)

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


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


def _positive_int(config: RunConfig, name: str) -> None:
    value = getattr(config, name)
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value > 0,
        f"{name.replace('_', '-')} must be a positive integer, got {value!r}",
    )


def _check_sizes(config: RunConfig) -> None:
    """The quantity-skew, test-size and validation fields (each alone, then together)."""
    _check(
        config.client_sizes in CLIENT_SIZES,
        f"unknown client sizes {config.client_sizes!r}: choose one of {', '.join(CLIENT_SIZES)}",
    )
    _check(
        config.size_sigma > 0 and math.isfinite(config.size_sigma),
        "size-sigma must be a positive number",
    )
    _positive_int(config, "min_train_examples")
    _positive_int(config, "max_train_examples")
    _check(
        config.min_train_examples <= config.max_train_examples,
        f"min-train-examples ({config.min_train_examples}) exceeds max-train-examples "
        f"({config.max_train_examples})",
    )
    if config.test_examples is not None:
        _positive_int(config, "test_examples")
    _check(
        0 <= config.validation_fraction < 1 and math.isfinite(config.validation_fraction),
        "validation-fraction must be at least 0 and below 1",
    )
    natural = config.partition == "natural" or config.client_column or config.data_files
    if config.client_sizes == "lognormal":
        _check(
            not natural,
            "--client-sizes lognormal needs --partition iid or dirichlet: natural clients (a "
            "group, a --client-column value, a --data file) have their group's size",
        )
        _check(
            config.test_examples is not None,
            "--client-sizes lognormal needs --test-examples N (e.g. 200): a fixed-size test split "
            "per client, as a fraction of a 50-record client is too small to measure",
        )
    if config.test_examples is not None:
        _check(
            not natural,
            "--test-examples draws test records by label mix from a shared pool, which does not "
            "fit natural clients (a group, a --client-column value, a --data file); use "
            "--test-fraction",
        )


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
            f"clients-per-round must be between 1 and the number of clients "
            f"({config.num_clients}), got {k!r}",
        )
        masked = config.masking and config.encryption and config.method != "local"
        if masked and k < config.num_clients:
            floor = masking_floor(config)
            _check(
                k >= floor,
                f"clients-per-round {k} is too few for secure aggregation: each round's masked "
                f"sum needs at least {floor} clients ("
                + (
                    f"the masking threshold {config.masking_threshold}"
                    if (config.masking_threshold or 0) >= 2
                    else "the sum of one client's update is that update, which every client "
                    "decrypts"
                )
                + "); give --clients-per-round "
                f"{floor} or more, a lower --masking-threshold, or --no-masking",
            )
    steps = config.finish_steps
    _check(
        isinstance(steps, int) and not isinstance(steps, bool) and steps >= 0,
        f"finish-steps must be a whole number of steps (0: no finishing), got {steps!r}",
    )
    if steps > 0:  # the method and head were checked before
        from secure_fedsa.sharing import get_policy  # (imports torch: not for --help)

        policy = get_policy(config.method, config.head)
        _check(
            bool(policy.trained - policy.shared),
            f"--finish-steps has nothing to train: {config.method} with --head {config.head} "
            "shares every tensor it trains, and finishing trains only the tensors a client "
            "keeps to itself",
        )


def validate(config: RunConfig) -> None:
    """Raise ConfigError naming the first invalid field and how to fix it."""
    _check(
        config.method in METHODS,
        f"unknown method {config.method!r}: choose one of {', '.join(sorted(METHODS))}",
    )
    _check(config.head in HEADS, f"unknown head {config.head!r}: choose one of {', '.join(HEADS)}")
    _check(
        not (config.method == "local" and config.head == "shared"),
        "--head shared needs a federated method: local shares nothing",
    )
    _check(
        config.adapter in ADAPTERS,
        f"unknown adapter {config.adapter!r}: choose one of {', '.join(ADAPTERS)}",
    )
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
    _check(config.num_clients >= 1, "num-clients must be at least 1")
    _check(
        config.num_clients <= config.max_clients,
        f"num-clients ({config.num_clients}) exceeds max-clients ({config.max_clients})",
    )
    _check(
        config.partition in PARTITIONS,
        f"unknown partition {config.partition!r}: choose one of {', '.join(PARTITIONS)}",
    )
    _check(config.alpha > 0 and math.isfinite(config.alpha), "alpha must be a positive number")
    _check(0 < config.test_fraction < 1, "test-fraction must be between 0 and 1")
    _check_sizes(config)
    _check(config.max_examples is None or config.max_examples > 0, "max-examples must be positive")
    _check(config.num_layers is None or config.num_layers > 0, "num-layers must be positive")
    _check(
        config.adapter_layers is None
        or (
            isinstance(config.adapter_layers, int)
            and not isinstance(config.adapter_layers, bool)
            and config.adapter_layers > 0
        ),
        f"adapter-layers must be a positive integer or 'all', got {config.adapter_layers!r}",
    )
    _check(config.lr > 0 and math.isfinite(config.lr), "lr must be a positive number")
    _check(config.clip > 0 and math.isfinite(config.clip), "clip must be a positive number")
    _check(0 < config.delta < 1, "delta must be between 0 and 1 (and below 1/n)")
    readable = ACCOUNTANTS if config.version >= 4 else ACCOUNTANTS + LEGACY_ACCOUNTANTS
    _check(
        config.accountant in readable,
        f"unknown accountant {config.accountant!r}: choose one of {', '.join(ACCOUNTANTS)}"
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
    _check(
        config.optimizer_state in OPTIMIZER_STATES,
        f"unknown optimizer state {config.optimizer_state!r}: choose one of "
        f"{', '.join(OPTIMIZER_STATES)}",
    )
    _check(
        config.lr_schedule in LR_SCHEDULES,
        f"unknown lr schedule {config.lr_schedule!r}: choose one of {', '.join(LR_SCHEDULES)}",
    )
    _check(
        config.clipping in CLIPPING_MODES,
        f"unknown clipping mode {config.clipping!r}: choose one of {', '.join(CLIPPING_MODES)}",
    )
    if config.dp:
        _check(
            config.epsilon is not None or config.noise_multiplier is not None,
            "with DP on, give --epsilon (a budget), --noise-multiplier, or both (a fixed noise "
            "multiplier with a budget that stops clients when it is spent)",
        )
        _check(
            config.epsilon is None or (config.epsilon > 0 and math.isfinite(config.epsilon)),
            "epsilon must be a positive finite number (use --no-dp for no privacy)",
        )
        _check(
            config.noise_multiplier is None or config.noise_multiplier > 0,
            "noise-multiplier must be positive (use --no-dp for no privacy)",
        )
    _check(
        config.masking_threshold is None
        or (
            isinstance(config.masking_threshold, int)
            and 1 <= config.masking_threshold <= config.num_clients
        ),
        f"masking-threshold must be between 1 and the number of clients ({config.num_clients})",
    )
    _check_rounds_and_finishing(config)
    _check(bool(config.dataset) or bool(config.data_files), "name a dataset or --data files")
    _check(
        len(config.target_modules) > 0
        and all(isinstance(m, str) and m for m in config.target_modules),
        "target-modules must name at least one module (e.g. query,value)",
    )
