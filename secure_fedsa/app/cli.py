"""Command line: argument parsing only; the work happens in the library.

    secure-fedsa run [options]          a federation (DP and encryption on by default)
    secure-fedsa keys init DIR          key bundles for one federation

The run options (of ``run``, and of ``sweep`` in secure_fedsa.app.sweep.command) come from the
option table, RunConfig's field metadata, through secure_fedsa.options. User errors print one
line ``error: ...`` and exit with code 2. Building the parser imports neither torch nor
transformers (``--help`` and ``--version`` stay fast): the handlers import the library.
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

from secure_fedsa.config import RunConfig
from secure_fedsa.errors import SecureFedsaError
from secure_fedsa.options import add_run_options, config_from_args, fit_layers, resumed_config

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports it


def _progress(quiet: bool):  # noqa: ANN202
    from secure_fedsa.transports.federation import Progress

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
    from secure_fedsa.site.rundir import read_config
    from secure_fedsa.transports.federation import run_federation

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
            from secure_fedsa.app.alone import alone_accuracy, attach_alone

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
    from secure_fedsa.site.keys import init_keys

    ids = [x.strip() for x in args.client_ids.split(",") if x.strip()] if args.client_ids else None
    sizes = parse_client_sizes(args.client_sizes) if args.client_sizes else None
    paths = init_keys(
        Path(args.directory), max_clients=args.max_clients, client_ids=ids, sizes=sizes
    )
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


def parse_client_sizes(text: str) -> dict[str, int]:
    """``"a=120,b=80"`` as {"a": 120, "b": 80}; ConfigError for anything else."""
    from secure_fedsa.errors import ConfigError

    sizes: dict[str, int] = {}
    for item in (x.strip() for x in text.split(",") if x.strip()):
        name, _, number = item.partition("=")
        if not name.strip() or not number.strip().isdigit() or int(number) < 1:
            raise ConfigError(f"--client-sizes: expected id=N with N >= 1, got {item!r}")
        sizes[name.strip()] = int(number)
    return sizes


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    from secure_fedsa.crypto.signing import revoke

    roster = revoke(Path(args.directory), args.client_id)
    print(
        f"revoked {args.client_id}: its updates are rejected from now on. Give the server the "
        f"new {Path(args.directory) / 'roster.json'} (digest {roster.digest[:16]}…)"
    )
    return 0


def _register_sweep(sub: argparse._SubParsersAction) -> None:
    from secure_fedsa.app.sweep.command import register

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
    init.add_argument(
        "--client-sizes",
        help="comma-separated id=N, each client's training-set size (public: the ledger's q "
        "reveals it): fixes each client's aggregation weight in the signed roster, so that no "
        "client can claim more and every site checks the aggregate's weight exactly",
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
