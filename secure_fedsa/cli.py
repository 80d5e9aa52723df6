"""Command line: argument parsing only; the work happens in the library.

    secure-fedsa run [options]          a federation (DP and encryption on by default)
    secure-fedsa keys init DIR          key bundles for one federation

User errors print one line ``error: ...`` and exit with code 2. Building the parser imports
neither torch nor transformers (``--help`` and ``--version`` stay fast): the handlers import
the library.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from secure_fedsa.config import (
    ACCOUNTANTS,
    ADAPTERS,
    CLIENT_SIZES,
    CLIPPING_MODES,
    HEADS,
    METHODS,
    PARTITIONS,
    RunConfig,
)
from secure_fedsa.errors import ConfigError, SecureFedsaError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it

# (flag, config field, type, help); defaults come from RunConfig itself.
RUN_OPTIONS: tuple[tuple[str, str, type, str], ...] = (
    ("--method", "method", str, f"one of {', '.join(METHODS)}"),
    (
        "--head",
        "head",
        str,
        f"one of {', '.join(HEADS)}: keep the task head on each client, or aggregate it like "
        "the shared adapter tensors (the FedSA-LoRA paper's baselines)",
    ),
    (
        "--adapter",
        "adapter",
        str,
        f"one of {', '.join(ADAPTERS)} (rslora: LoRA scaled by alpha/sqrt(r); vera: shared "
        "frozen random projections, trained scaling vectors)",
    ),
    ("--rounds", "rounds", int, "federation rounds"),
    ("--local-steps", "local_steps", int, "optimizer steps per client per round"),
    ("--clients", "num_clients", int, "number of clients"),
    (
        "--clients-per-round",
        "clients_per_round",
        int,
        "K clients drawn each round from the seed and the round number; only they train, spend "
        "privacy and send (not privacy amplification); all evaluate and apply the aggregate "
        "(default: every client)",
    ),
    (
        "--finish-steps",
        "finish_steps",
        int,
        "after its last round each client trains the tensors it keeps to itself (B, head) N "
        "more steps WITHOUT DP and keeps that model in its own directory; releases stay DP, the "
        "finished model is not. 0 until a measurement shows it pays",
    ),
    ("--seed", "seed", int, "random seed (runs are deterministic per seed)"),
    (
        "--dataset",
        "dataset",
        str,
        "bundled dataset (rotten_tomatoes, tweets, health_news) or a CSV/JSONL file",
    ),
    ("--text-column", "text_column", str, "text column of a user file"),
    ("--label-column", "label_column", str, "label column of a user file"),
    ("--client-column", "client_column", str, "column giving each example's client"),
    ("--partition", "partition", str, f"one of {', '.join(PARTITIONS)}"),
    ("--alpha", "alpha", float, "Dirichlet concentration for label skew"),
    (
        "--test-fraction",
        "test_fraction",
        float,
        "share of each client's data held out for testing; with --test-examples, the share of "
        "the dataset held out as the test pool",
    ),
    ("--max-examples", "max_examples", int, "a random subset of N examples (default: all)"),
    (
        "--client-sizes",
        "client_sizes",
        str,
        f"one of {', '.join(CLIENT_SIZES)}: training records per client as the partition gives "
        "them, or a log-normal quantity skew between --min-train-examples and "
        "--max-train-examples (needs --test-examples)",
    ),
    ("--size-sigma", "size_sigma", float, "log-scale sigma of the log-normal client sizes"),
    (
        "--min-train-examples",
        "min_train_examples",
        int,
        "fewest training records per client with --client-sizes lognormal",
    ),
    (
        "--max-train-examples",
        "max_train_examples",
        int,
        "most training records per client with --client-sizes lognormal",
    ),
    (
        "--test-examples",
        "test_examples",
        int,
        "test records per client, drawn with the client's label mix from a pool (--test-fraction "
        "of the data) no client trains on; clients' test splits may overlap (default: "
        "--test-fraction of each client's data)",
    ),
    (
        "--validation-fraction",
        "validation_fraction",
        float,
        "share of each client's training records held out for validation, never trained on",
    ),
    ("--model", "model", str, "local Hugging Face encoder directory (default all-MiniLM-L6-v2)"),
    ("--num-layers", "num_layers", int, "keep only the first N encoder layers (default: all)"),
    ("--lora-r", "lora_r", int, "LoRA rank"),
    ("--lora-alpha", "lora_alpha", int, "LoRA alpha"),
    ("--vera-r", "vera_r", int, "rank of VeRA's shared random projections"),
    ("--max-length", "max_length", int, "tokens per example"),
    ("--batch-size", "batch_size", int, "expected logical batch (Poisson sampling under DP)"),
    ("--physical-batch-size", "physical_batch_size", int, "examples per forward pass (memory)"),
    ("--lr", "lr", float, "learning rate (AdamW)"),
    (
        "--optimizer-state",
        "optimizer_state",
        str,
        "kept: AdamW state carries over between rounds; fresh: a new optimizer every round",
    ),
    (
        "--lr-schedule",
        "lr_schedule",
        str,
        "lr over the whole federation: constant, or decaying from --lr towards 0 (linear, cosine)",
    ),
    ("--eval-examples", "eval_examples_per_round", int, "test examples per client per round"),
    ("--epsilon", "epsilon", float, "DP budget per client for the whole federation"),
    ("--delta", "delta", float, "DP delta (must be below 1/n)"),
    ("--noise-multiplier", "noise_multiplier", float, "give sigma directly instead of epsilon"),
    ("--clip", "clip", float, "per-example gradient norm bound"),
    ("--accountant", "accountant", str, f"one of {', '.join(ACCOUNTANTS)}"),
    ("--clipping", "clipping", str, f"per-sample clipping: {', '.join(CLIPPING_MODES)}"),
    ("--keys", "keys_dir", str, "directory with key bundles (default: new keys per run)"),
    (
        "--masking-threshold",
        "masking_threshold",
        int,
        "clients needed to unmask a round (default: a majority of its clients)",
    ),
    ("--max-clients", "max_clients", int, "most clients the encrypted sum must hold"),
)


def add_run_options(parser: argparse.ArgumentParser) -> None:
    defaults = RunConfig()
    for flag, name, kind, text in RUN_OPTIONS:
        default = getattr(defaults, name)
        shown = text if default is None else f"{text} (default: {default})"
        parser.add_argument(flag, dest=name, type=kind, default=None, help=shown)
    parser.add_argument("--data", dest="data_files", nargs="+", help="one data file per client")
    parser.add_argument("--labels", help="comma-separated label vocabulary; others are errors")
    parser.add_argument(
        "--target-modules",
        help="comma-separated module names that get LoRA (default: query,value; "
        "e.g. q_lin,v_lin for DistilBERT)",
    )
    default_layers = RunConfig().adapter_layers
    parser.add_argument(
        "--adapter-layers",
        type=_adapter_layers,
        help="adapt only the top N encoder layers, or all (default: "
        f"{'all' if default_layers is None else default_layers})",
    )
    parser.add_argument("--no-dp", action="store_true", help="turn differential privacy OFF")
    parser.add_argument("--no-encryption", action="store_true", help="turn encryption OFF")
    parser.add_argument(
        "--no-masking", action="store_true", help="turn pairwise masking of ciphertexts OFF"
    )
    parser.add_argument(
        "--release-evaluation",
        action="store_true",
        help="write each client's test accuracy into the run's shared files (metrics.jsonl, "
        "summary.json); it is NOT differentially private (default: kept in each client's own "
        "directory)",
    )
    parser.add_argument("--out", help="run directory (default: runs/<time>-<method>)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    parser.add_argument("--quiet", action="store_true", help="log lines instead of progress bars")


def _adapter_layers(text: str) -> int | str:
    """``--adapter-layers``: a positive count, or ``all``."""
    if text.strip().lower() == "all":
        return "all"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all', got {text!r}")
    return value


def _layers_value(given: int | str) -> int | None:
    return None if given == "all" else int(given)


def _too_many_adapter_layers(requested: int, layers: int, where: str) -> ConfigError:
    return ConfigError(
        f"--adapter-layers {requested} is more than the {layers} encoder "
        f"layer{'s' if layers != 1 else ''} {where}: use --adapter-layers {layers} or less, or "
        "all"
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    requested = args.adapter_layers
    if isinstance(requested, int) and args.num_layers is not None and requested > args.num_layers:
        # refused rather than cut: a configuration that says 2 adapted layers means 2
        where = f"that --num-layers {args.num_layers} keeps"
        raise _too_many_adapter_layers(requested, args.num_layers, where)
    values = {
        name: getattr(args, name)
        for _, name, _, _ in RUN_OPTIONS
        if getattr(args, name) is not None
    }
    if args.data_files:
        values["data_files"] = tuple(args.data_files)
    if args.labels:
        values["labels"] = tuple(x.strip() for x in args.labels.split(",") if x.strip())
    if args.target_modules:
        values["target_modules"] = tuple(
            x.strip() for x in args.target_modules.split(",") if x.strip()
        )
    if args.adapter_layers is not None:
        values["adapter_layers"] = _layers_value(args.adapter_layers)
    if args.noise_multiplier is not None and args.epsilon is None:
        values["epsilon"] = None
    if args.no_dp:
        values.update(dp=False, epsilon=None, noise_multiplier=None)
    if args.no_encryption:
        values["encryption"] = False
    if args.no_masking or args.no_encryption:
        values["masking"] = False
    if args.release_evaluation:
        values["release_evaluation"] = True
    return RunConfig(**values)


def fit_layers(config: RunConfig, args: argparse.Namespace) -> RunConfig:
    """``config`` checked against the encoder's depth (read from its config.json), before
    anything is written: more ``--num-layers`` than the encoder has, or an explicit
    ``--adapter-layers`` above the layers it keeps, is refused; the default adapter count on a
    shallower encoder becomes that encoder's depth, so that config.json says what was used."""
    from secure_fedsa.model import ModelSpec, encoder_layers

    layers = encoder_layers(ModelSpec(path=config.model, num_layers=config.num_layers))
    if layers is None or config.adapter_layers is None or config.adapter_layers <= layers:
        return config
    if isinstance(args.adapter_layers, int):
        raise _too_many_adapter_layers(args.adapter_layers, layers, "the model has")
    return config.replace(adapter_layers=layers)


def _explicit_values(args: argparse.Namespace) -> dict[str, tuple[str, object]]:
    """Config field -> (flag, value) for every run option given on the command line."""
    given: dict[str, tuple[str, object]] = {
        name: (flag, getattr(args, name))
        for flag, name, _, _ in RUN_OPTIONS
        if getattr(args, name) is not None
    }
    if args.data_files:
        given["data_files"] = ("--data", tuple(args.data_files))
    if args.labels:
        labels = tuple(x.strip() for x in args.labels.split(",") if x.strip())
        given["labels"] = ("--labels", labels)
    if args.target_modules:
        modules = tuple(x.strip() for x in args.target_modules.split(",") if x.strip())
        given["target_modules"] = ("--target-modules", modules)
    if args.adapter_layers is not None:
        given["adapter_layers"] = ("--adapter-layers", _layers_value(args.adapter_layers))
    if args.no_dp:
        given["dp"] = ("--no-dp", False)
    if args.no_encryption:
        given["encryption"] = ("--no-encryption", False)
    if args.no_masking:
        given["masking"] = ("--no-masking", False)
    if args.release_evaluation:
        given["release_evaluation"] = ("--release-evaluation", True)
    return given


def resumed_config(stored: RunConfig, args: argparse.Namespace) -> RunConfig:
    """The configuration to resume with: the stored one, with more rounds if ``--rounds`` asks.

    Any other run option that disagrees with the stored configuration is an error naming it: a
    resumed run continues exactly as configured (its budget lives in the clients' ledgers).
    """
    if args.out:
        raise ConfigError("--out cannot be combined with --resume: the run continues in RUN_DIR")
    given = _explicit_values(args)
    for name, (flag, value) in given.items():
        if name != "rounds" and getattr(stored, name) != value:
            shown = "" if isinstance(value, bool) else f" {value}"
            raise ConfigError(
                f"{flag}{shown} conflicts with the run's stored configuration ({name} = "
                f"{getattr(stored, name)!r} in config.json): --resume continues a run exactly as "
                "it was configured; only --rounds may extend it (within the privacy budget)"
            )
    if "rounds" in given:
        return stored.replace(rounds=given["rounds"][1])
    return stored


def _progress(quiet: bool):  # noqa: ANN202
    from secure_fedsa.federation import Progress

    if quiet:
        logger = logging.getLogger("secure_fedsa")
        for old in [h for h in logger.handlers if getattr(h, "secure_fedsa_cli", False)]:
            logger.removeHandler(old)  # one handler, on this call's stderr
        handler = logging.StreamHandler(sys.stderr)
        handler.secure_fedsa_cli = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        # Opacus calls logging.basicConfig at import (a root handler): without this every line
        # would be printed twice
        logger.propagate = False
        logger.setLevel(logging.INFO)
        return Progress(
            message=logger.info,
            warning=logger.warning,
            round_started=lambda r, t: logger.info(f"round {r}/{t}"),
        )
    from tqdm import tqdm

    bars: dict[str, tqdm] = {}

    def round_started(number: int, total: int) -> None:
        if "rounds" not in bars:
            bars["rounds"] = tqdm(total=total, initial=number - 1, desc="rounds", unit="round")
        bars["rounds"].set_postfix_str(f"round {number}: training")

    def client_started(client_id: str, steps: int) -> None:
        if "client" in bars:
            bars.pop("client").close()
        bars["client"] = tqdm(total=steps, desc=f"  {client_id}", unit="step", leave=False)

    def step_done() -> None:
        if "client" in bars:
            bars["client"].update(1)

    def client_done(client_id: str) -> None:
        if "client" in bars:
            bars.pop("client").close()
        bars["rounds"].set_postfix_str(f"{client_id} done")

    def round_done(number: int) -> None:
        bars["rounds"].update(1)

    return Progress(
        message=tqdm.write,
        # warnings (protections off, DP hazards) on stderr, with the errors: stdout holds results
        warning=lambda text: tqdm.write(text, file=sys.stderr),
        round_started=round_started,
        client_done=client_done,
        round_done=round_done,
        client_started=client_started,
        step_done=step_done,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from secure_fedsa.federation import run_federation
    from secure_fedsa.rundir import read_config

    if args.resume:
        run_dir = Path(args.resume)
        stored = read_config(run_dir)
        config = resumed_config(stored, args)
        if config.rounds != stored.rounds:
            print(
                f"extending {run_dir} from {stored.rounds} to {config.rounds} rounds, within "
                "each client's recorded budget",
                file=sys.stderr,
            )
    else:
        config = config_from_args(args)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path(args.out) if args.out else Path("runs") / f"{stamp}-{config.method}"
        config = fit_layers(config, args)
    for warning in config.protections:
        print(f"WARNING: {warning}", file=sys.stderr)
    try:
        summary = run_federation(
            config, run_dir, progress=_progress(args.quiet), resume=bool(args.resume)
        )
        alone = None
        if not args.no_alone and config.method != "local":
            from secure_fedsa.alone import alone_accuracy, attach_alone

            alone = alone_accuracy(config, message=lambda text: print(text, file=sys.stderr))
            attach_alone(run_dir, alone, released=config.release_evaluation)
    except KeyboardInterrupt:
        print(interrupted_text(run_dir), file=sys.stderr)
        return EXIT_INTERRUPTED
    acc = summary["evaluation"]
    print(f"run directory: {run_dir}")
    print(
        f"final accuracy: mean over clients {acc['mean']:.4f}, "
        f"weighted by test size {acc['weighted_mean']:.4f}"
    )
    for cid, value in acc["per_client"].items():
        privacy = summary["privacy"]
        eps = privacy[cid]["epsilon"] if isinstance(privacy, dict) else None
        eps_text = f", epsilon={eps:.3f} (delta={config.delta:g})" if eps is not None else ""
        majority = acc["majority_class"][cid]
        verdict = "NOT beaten" if cid in acc["not_above_majority"] else "beaten"
        alone_text = ""
        if alone is not None and cid in alone["per_client"]:
            own = alone["per_client"][cid]
            alone_text = f", alone (local, no DP) {own:.4f}, gain from joining {value - own:+.4f}"
        print(
            f"  {cid}: accuracy {value:.4f}{alone_text} (majority class {majority:.4f}: "
            f"{verdict}){eps_text}"
        )
    if acc.get("validation_mean") is not None:
        print(f"validation accuracy: mean over clients {acc['validation_mean']:.4f}")
    if config.finish_steps:
        print(
            f"each client's final model was finished with {config.finish_steps} step(s) WITHOUT "
            "DP after its last release: clients/<id>/finished-adapter/ is NOT differentially "
            "private (keep it with the client's records); adapters/<id>/ is its DP model"
        )
    if acc["not_above_majority"]:
        print(
            f"note: {', '.join(acc['not_above_majority'])} did not beat always predicting its most "
            "frequent class; under DP this usually means too few records for the budget (see "
            "docs/privacy.md, 'Small clients')"
        )
    if not acc["released"]:
        print(
            "these accuracies are not differentially private: each client keeps them in its own "
            "directory (clients/<id>/evaluation.json); the run's shared files do not hold them"
        )
    print(
        "differential privacy: "
        + ("on" if config.dp else "OFF (no differential privacy)")
        + "; encryption: "
        + ("on (CKKS)" if config.encryption else "OFF (server saw plaintext updates)")
    )
    print(next_steps(run_dir, next(iter(acc["per_client"]), "client-0")))
    return 0


def interrupted_text(run_dir: Path) -> str:
    """What Ctrl-C left: the run directory to resume, or nothing."""
    if (run_dir / "config.json").is_file():
        shown = shlex.quote(str(run_dir))
        return (
            f"interrupted: the run so far is in {run_dir}; continue it with: "
            f"secure-fedsa run --resume {shown}"
        )
    return f"interrupted before {run_dir} was set up: nothing was written, nothing to resume"


def next_steps(run_dir: Path, client_id: str) -> str:
    """The commands that usually come after a run, with its directory filled in."""
    run = shlex.quote(str(run_dir))
    steps = (
        (f"secure-fedsa audit {run}", f"check it: {run_dir / 'audit' / 'report.html'}"),
        (
            f"secure-fedsa audit {run} --bundle {shlex.quote(str(run_dir) + '-for-auditor')}",
            "what to hand an auditor (nothing secret)",
        ),
        (
            f"python examples/use_client_model.py {run} {client_id}",
            f"use {client_id}'s model (peft and transformers)",
        ),
    )
    width = max(len(command) for command, _ in steps)
    return "next steps:\n" + "\n".join(f"  {command:<{width}}  # {why}" for command, why in steps)


def cmd_keys_init(args: argparse.Namespace) -> int:
    from secure_fedsa.security import init_keys

    ids = [x.strip() for x in args.client_ids.split(",") if x.strip()] if args.client_ids else None
    paths = init_keys(Path(args.directory), max_clients=args.max_clients, client_ids=ids)
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from secure_fedsa.crypto.signing import revoke

    roster = revoke(Path(args.directory), args.client_id)
    print(
        f"revoked {args.client_id}: its updates are rejected from now on. Give the server the "
        f"new {Path(args.directory) / 'roster.json'} (digest {roster.digest[:16]}…)"
    )
    return 0


def _register_sweep(sub: argparse._SubParsersAction) -> None:
    from secure_fedsa.sweep.command import register

    register(sub)


def _register_audit(sub: argparse._SubParsersAction) -> None:
    from audits.command import register

    register(sub)


# Each adds its subcommand (parser + handler) to the CLI; the core never imports these modules.
EXTRA_COMMANDS = (_register_sweep, _register_audit)


def package_version() -> str:
    """The installed distribution's version (the source tree's, when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("secure-fedsa")
    except PackageNotFoundError:
        from secure_fedsa import __version__

        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="secure-fedsa", description="Privacy-hardened federated fine-tuning (FedSA-LoRA)"
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a federation (DP and encryption on by default)")
    add_run_options(run)
    run.add_argument(
        "--no-alone",
        action="store_true",
        help="do not train each client alone without DP for the baseline (by default it is "
        "trained once per data split and budget, cached, and each client's gain from joining "
        "is printed)",
    )
    run.set_defaults(handler=cmd_run)
    keys = sub.add_parser("keys", help="key management")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    init = keys_sub.add_parser("init", help="create client and server key bundles")
    init.add_argument("directory")
    init.add_argument("--max-clients", type=int, default=RunConfig().max_clients)
    init.add_argument(
        "--client-ids",
        help="comma-separated client ids, one signing identity each (default: client-0 .. "
        "client-(max-clients - 1), the ids of the in-process federation)",
    )
    init.set_defaults(handler=cmd_keys_init)
    revoke = keys_sub.add_parser("revoke", help="remove a client from the roster")
    revoke.add_argument("directory")
    revoke.add_argument("client_id")
    revoke.set_defaults(handler=cmd_keys_revoke)
    for register in EXTRA_COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except SecureFedsaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:  # a command without its own message (run and sweep have one)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
