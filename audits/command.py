"""`secure-fedsa audit RUN_DIR`: check a run directory (or an auditor bundle) and write
report.json and report.html; `--bundle OUT` writes the auditor bundle instead."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

from secure_fedsa.errors import ConfigError

DEFAULT_CANARIES = 2000  # a round count that can certify ε = 8 at δ = 1e-5 (1 748 can)
# what a run directory holds; a directory with none of them is not a run (a damaged run with
# some of them is audited, and fails on what is missing)
RUN_MARKERS = ("config.json", "setup.json", "metrics.jsonl", "summary.json", "clients", "egress")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``audit`` subcommand and its handler."""
    parser = sub.add_parser(
        "audit",
        help="audit a run directory: egress, accounting, encryption, DP hazards (report.html)",
        description="Re-check a finished or interrupted run (or an auditor bundle made with "
        "--bundle) from its files alone and write report.json and a self-contained report.html "
        "(default: RUN_DIR/audit/).",
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="the run directory (or an auditor bundle) to audit"
    )
    parser.add_argument("--out", help="directory for report.json and report.html")
    parser.add_argument(
        "--bundle",
        metavar="OUT",
        help="instead of auditing, write an auditor bundle to OUT (a new directory): exactly the "
        "files the audit reads, nothing secret, and a SHA-256 manifest; hand it to the auditor, "
        "who runs `secure-fedsa audit OUT`",
    )
    parser.add_argument(
        "--canary",
        action="store_true",
        help="also run the installed-mechanism test (not a test of this run): canaries trained "
        "through the DP-SGD engine installed here with each ledger's parameters, two one-run "
        "bounds (Steinke et al. 2023; Mahloujifar et al. 2025); it trains",
    )
    parser.add_argument(
        "--canaries",
        type=int,
        default=DEFAULT_CANARIES,
        help=f"number of canaries m for --canary (default {DEFAULT_CANARIES})",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the canary audit")
    parser.set_defaults(handler=cmd_audit)


def cmd_audit(args: argparse.Namespace) -> int:
    """Exit 0 when the verdict is PASS, WARN or INCONCLUSIVE, 1 when it is FAIL; user errors and
    missing packages raise (exit 2), before anything is written."""
    try:
        return _audit(args)
    except ImportError as exc:
        from audits.install import tool_missing

        raise tool_missing(exc) from None


def _audit(args: argparse.Namespace) -> int:
    from audits.evidence import BUNDLE_MANIFEST
    from audits.html import render_html
    from audits.result import NOT_FAILED, shown_result
    from audits.runner import audit_run

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{args.run_dir!r} is not a directory; give a run directory to audit")
    if args.canaries < 10:
        raise ConfigError(f"--canaries must be at least 10, got {args.canaries}")
    if not any((run_dir / name).exists() for name in (*RUN_MARKERS, BUNDLE_MANIFEST)):
        raise ConfigError(
            f"{args.run_dir!r} is neither a run directory nor an auditor bundle (none of "
            f"{', '.join(RUN_MARKERS)} or {BUNDLE_MANIFEST} is in it); give the directory "
            "`secure-fedsa run` wrote, or the bundle made from it"
        )
    if args.bundle:
        return _write_bundle(args, run_dir)
    extra = ()
    if args.canary:
        from audits.check_canary import canary_check

        extra = (canary_check(canaries=args.canaries, seed=args.seed),)
    out = Path(args.out) if args.out else run_dir / "audit"
    report = audit_run(run_dir, extra=extra)  # everything is checked before anything is written
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output directory {str(out)!r}: {exc}") from exc
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.html").write_text(render_html(report), encoding="utf-8")
    for check in report["checks"]:
        print(f"{shown_result(check).upper():12}  {check['name']}")
        for finding in check["findings"][:5]:
            print(f"              {finding}")
    print(f"verdict: {report['verdict_text']}")
    print(f"report: {out / 'report.html'}")
    if out == run_dir / "audit" and (run_dir / "adapters").is_dir():
        _update_model_cards(run_dir)
    return 0 if report["verdict"] in NOT_FAILED else 1


def _update_model_cards(run_dir: Path) -> None:
    """Rewrite the run's model cards with the verdict (secure_fedsa/site/model_card.py); a card
    that cannot be written is a note, never a change of the verdict."""
    from secure_fedsa.errors import SecureFedsaError
    from secure_fedsa.site.model_card import write_run_cards

    try:
        cards = write_run_cards(run_dir)
    except (OSError, ValueError, KeyError, SecureFedsaError) as exc:
        print(f"model cards not updated with the verdict: {exc}")
        return
    if cards:
        print(f"model cards: the verdict is in {len(cards)} adapter README.md file(s)")


def _write_bundle(args: argparse.Namespace, run_dir: Path) -> int:
    from audits.bundle import write_bundle
    from audits.evidence import BUNDLE_MANIFEST

    if args.out or args.canary:
        raise ConfigError("--bundle writes only the bundle: leave out --out and --canary")
    out = Path(args.bundle)
    manifest = write_bundle(run_dir, out)
    for name, entry in manifest["files"].items():
        print(f"{entry['sha256']}  {name}")
    digest = hashlib.sha256((out / BUNDLE_MANIFEST).read_bytes()).hexdigest()
    print(f"bundle: {out} ({len(manifest['files'])} files, manifest {out / BUNDLE_MANIFEST})")
    print(f"{BUNDLE_MANIFEST} SHA-256: {digest}")
    print(
        "send this SHA-256 to the auditor over a second channel (not inside the bundle): the "
        "audit report shows the hash of the manifest it read"
    )
    print(f"the auditor runs: secure-fedsa audit {out}")
    return 0
