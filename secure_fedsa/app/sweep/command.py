"""`secure-fedsa sweep`: parse the sweep's options; the work happens in :mod:`runner`.

    secure-fedsa sweep --epsilons inf,8,4,2,1 --methods fedsa,fedit,ffa,local --seeds 3 [options]
    secure-fedsa sweep --methods fedsa,fedit,fedit+head,ffa,ffa+head,local,fedsa@vera ...
    secure-fedsa sweep --resume SWEEP_DIR
    secure-fedsa sweep --plot-only SWEEP_DIR

Every sweep also runs the alone cells (method ``local`` at ``ε = inf``, one per seed) unless they
are among its cells already: the baseline of the gain from joining. ``--no-alone`` leaves them
out (for sweeps that tune one method's recipe, where they would double the cost of a one-cell
seed and nothing is compared with a site alone); the summary then says the gain is not measured.

Every option of ``secure-fedsa run`` sets the fixed part of each cell, except the ones the sweep
varies (``--method``, ``--seed``, ``--epsilon``; ``--noise-multiplier`` and ``--no-dp`` have no
meaning here: a cell's noise comes from its budget, and ``inf`` in ``--epsilons`` means no DP).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from secure_fedsa.app.sweep.spec import SweepSpec, parse_epsilons, parse_methods, parse_seeds
from secure_fedsa.errors import ConfigError

DEFAULT_EPSILONS = "inf,8,4,2,1"
DEFAULT_SEEDS = "3"
# run options the sweep sets per cell, with what to use instead
VARIED = {
    "method": "--methods",
    "seed": "--seeds",
    "epsilon": "--epsilons",
    "noise_multiplier": "--epsilons (each cell's noise comes from its budget)",
    "no_dp": "inf in --epsilons",
}
SPEC_OPTIONS = ("epsilons", "methods", "seeds", "out")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sweep`` subcommand with every run option and the sweep's own."""
    from secure_fedsa.config import METHODS
    from secure_fedsa.options import add_run_options

    parser = sub.add_parser(
        "sweep",
        help="privacy-utility sweep: every method x epsilon x seed, one table and curve",
        description="Run every cell (method x epsilon x seed) as a full federation; write "
        "results.csv, curve.png/.svg and summary.md to one sweep directory.",
        allow_abbrev=False,
        conflict_handler="resolve",
    )
    add_run_options(parser)
    for dest in VARIED:  # keep the names (to refuse them clearly) but hide them from --help
        flag = "--" + dest.replace("_", "-")
        if dest == "no_dp":
            parser.add_argument(flag, dest=dest, action="store_true", help=argparse.SUPPRESS)
        else:
            parser.add_argument(flag, dest=dest, default=None, help=argparse.SUPPRESS)
    parser.add_argument(
        "--epsilons",
        help=f"comma-separated per-client budgets; inf = no DP (default: {DEFAULT_EPSILONS})",
    )
    parser.add_argument(
        "--methods",
        help=f"comma-separated methods from {', '.join(METHODS)} (default: all); a method "
        "may name a variant: METHOD+head aggregates the task head too, METHOD@ADAPTER uses "
        "another adapter (lora, rslora, vera), e.g. fedit+head,fedsa@vera",
    )
    parser.add_argument(
        "--seeds",
        help=f"a count N (seeds 0..N-1) or a comma-separated list (default: {DEFAULT_SEEDS})",
    )
    parser.add_argument(
        "--no-alone",
        action="store_true",
        help="do not add the alone cells (local, no DP, one per seed) that the gain from joining "
        "is measured against (added by default unless local and inf are among the cells)",
    )
    parser.add_argument(
        "--out",
        help="sweep directory (default: runs/sweep-<dataset>-<hash of the sweep>, so rerunning "
        "the same command resumes it)",
    )
    parser.add_argument(
        "--resume", metavar="SWEEP_DIR", help="continue an interrupted sweep from its sweep.json"
    )
    parser.add_argument(
        "--plot-only", metavar="SWEEP_DIR", help="redraw curve and summary from results.csv"
    )
    parser.set_defaults(handler=lambda args: cmd_sweep(args, parser))


def cmd_sweep(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from secure_fedsa.app.sweep.runner import SPEC_FILE, read_spec, run_sweep, write_outputs

    report = print
    if args.plot_only or args.resume:
        _refuse_with_directory(args, parser)
    if args.plot_only:
        directory = Path(args.plot_only)
        spec = read_spec(directory)
        if not (directory / "results.csv").exists():
            raise ConfigError(f"{str(directory)!r} has no results.csv yet: nothing to plot")
        for path in write_outputs(spec, directory):
            report(f"wrote {path}")
        return 0
    if args.resume:
        directory = Path(args.resume)
        spec = read_spec(directory)
    else:
        spec = spec_from_args(args, parser)
        directory = Path(args.out) if args.out else default_directory(spec)
    if not spec.base.encryption:
        report("WARNING: NO ENCRYPTION: the server sees every client's update in plaintext")
    try:
        run_sweep(spec, directory, report=report, round_lines=not args.quiet)
    except KeyboardInterrupt:
        if (directory / SPEC_FILE).is_file():
            print(
                f"interrupted: the sweep so far is in {directory}; continue it with: "
                f"secure-fedsa sweep --resume {shlex.quote(str(directory))}",
                file=sys.stderr,
            )
            return 130
        raise
    report((directory / "summary.md").read_text(encoding="utf-8"))
    return 0


def spec_from_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> SweepSpec:
    """The sweep described by the command line; every check happens here (nothing written)."""
    from secure_fedsa.model.sharing import POLICIES
    from secure_fedsa.options import config_from_args, fit_layers

    for dest, instead in VARIED.items():
        if getattr(args, dest):
            flag = "--" + dest.replace("_", "-")
            raise ConfigError(f"the sweep sets {flag} per cell: use {instead}")
    epsilons = parse_epsilons(DEFAULT_EPSILONS if args.epsilons is None else args.epsilons)
    methods = parse_methods(",".join(POLICIES) if args.methods is None else args.methods, POLICIES)
    seeds = parse_seeds(DEFAULT_SEEDS if args.seeds is None else args.seeds)
    spec = SweepSpec(
        base=fit_layers(config_from_args(args), args),
        methods=methods,
        epsilons=epsilons,
        seeds=seeds,
        command=command_line(args, parser),
        alone=not args.no_alone,
    )
    spec.check()
    return spec


def default_directory(spec: SweepSpec) -> Path:
    base = spec.base
    name = "files" if base.data_files else Path(base.dataset).stem
    return Path("runs") / f"sweep-{name}-{spec.digest()}"


def command_line(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str:
    """The command as typed when run from the shell; otherwise an equivalent one (every option
    that differs from its default, in the parser's order)."""
    if Path(sys.argv[0]).name == "secure-fedsa" and sys.argv[1:2] == ["sweep"]:
        return shlex.join(["secure-fedsa", *sys.argv[1:]])
    words = ["secure-fedsa", "sweep"]
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "handler"):
            continue
        value = getattr(args, action.dest, None)
        if value is None or value == action.default or value is False:
            continue
        words.append(action.option_strings[0])
        if value is True:
            continue
        if isinstance(value, list | tuple):
            words.extend(str(v) for v in value)
        else:
            words.append(str(value))
    return shlex.join(words)


def _refuse_with_directory(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """--resume and --plot-only read the sweep from its directory: other options would be lost."""
    if args.plot_only and args.resume:
        raise ConfigError("give either --resume or --plot-only, not both")
    given = [
        action.option_strings[0]
        for action in parser._actions
        if action.option_strings
        and action.dest not in ("help", "resume", "plot_only", "quiet")
        and getattr(args, action.dest, None) not in (None, False, action.default)
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)} cannot be combined with --resume/--plot-only: the sweep's "
            "options are read from its sweep.json"
        )
