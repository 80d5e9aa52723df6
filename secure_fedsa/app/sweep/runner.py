"""Run every cell of a sweep as a full federation; resume; redraw the outputs.

Sweep directory::

    sweep.json          the spec (base configuration, methods, epsilons, seeds, command)
    results.csv         one row per finished cell (rewritten atomically after each cell)
    curve.png/.svg      accuracy against epsilon, one line per method
    summary.md          method x epsilon table, paired differences, gain from joining, command
    cells/<method>-eps<epsilon>-seed<s>/   each cell's run directory (as `secure-fedsa run`)

A cell is finished when it has a row in ``results.csv`` and ``summary.json`` in its directory,
or a row and no directory at all: a sweep carried to another machine with only its small files
(``sweep.json``, ``results.csv``; the run directories are large and stay behind) keeps the rows
it has and runs the rest.
A cell directory with ``config.json`` but no summary was interrupted: it is continued with
``run_federation(..., resume=True)``, which keeps its privacy ledgers (spent privacy is never
forgotten). A cell directory without ``config.json`` holds nothing a run can continue from and
is started again.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from secure_fedsa.app.sweep.plot import build_figure, save_curve
from secure_fedsa.app.sweep.report import render_summary
from secure_fedsa.app.sweep.results import (
    RESULTS_FILE,
    parse_row,
    read_rows,
    row_from_summary,
    upsert,
    write_rows,
)
from secure_fedsa.app.sweep.spec import Cell, SweepSpec, format_epsilon
from secure_fedsa.app.sweep.stats import eta_seconds, format_duration
from secure_fedsa.atomic import atomic_write, write_json_atomic
from secure_fedsa.errors import ConfigError, SecureFedsaError

SPEC_FILE = "sweep.json"
SUMMARY_FILE = "summary.md"
CELLS_DIR = "cells"

Report = Callable[[str], None]


def read_spec(directory: Path) -> SweepSpec:
    path = directory / SPEC_FILE
    if not path.is_file():
        raise ConfigError(f"{str(directory)!r} is not a sweep directory (no {SPEC_FILE})")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    return SweepSpec.from_dict(data)


def open_sweep_dir(spec: SweepSpec, directory: Path) -> bool:
    """Create the sweep directory, or check that it holds this same sweep.

    Returns True when it was created now (so a failure before any cell ran can remove it).
    """
    if (directory / SPEC_FILE).exists():
        saved = read_spec(directory)
        if not saved.same_cells(spec) and saved.same_cells(replace(spec, alone=False)):
            raise ConfigError(
                f"{str(directory)!r} holds this sweep without its alone cells (made before sweeps "
                "added them, or with --no-alone): continue it as it is with --resume "
                f"{directory}, or add --no-alone"
            )
        if not saved.same_cells(spec):
            raise ConfigError(
                f"{str(directory)!r} holds a different sweep (other options, methods, epsilons "
                "or seeds): choose another --out, or continue it with --resume "
                f"{directory}"
            )
        return False
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(
            f"{str(directory)!r} is not empty and is not a sweep directory: choose another --out"
        )
    directory.mkdir(parents=True, exist_ok=True)
    write_json_atomic(directory / SPEC_FILE, spec.to_dict())
    return True


def _remove_created(directory: Path) -> None:
    """Undo :func:`open_sweep_dir` when nothing ran (only what it wrote, only if empty)."""
    cells = directory / CELLS_DIR
    if cells.exists() and any(cells.iterdir()):
        return  # a cell started writing: keep the sweep resumable
    (directory / SPEC_FILE).unlink(missing_ok=True)
    for path in (directory / CELLS_DIR, directory):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def write_outputs(spec: SweepSpec, directory: Path) -> list[Path]:
    """Redraw ``curve.png``/``curve.svg`` and rewrite ``summary.md`` from ``results.csv``."""
    rows = [parse_row(r) for r in read_rows(directory / RESULTS_FILE)]
    figure = build_figure(rows, title=spec.title(), methods=spec.methods, delta=spec.base.delta)
    paths = save_curve(figure, directory)
    summary = directory / SUMMARY_FILE
    atomic_write(summary, render_summary(spec, rows))
    return [*paths, summary]


def describe(cell: Cell) -> str:
    return f"{cell.method} ε={format_epsilon(cell.epsilon)} seed={cell.seed}"


def run_sweep(
    spec: SweepSpec,
    directory: Path,
    *,
    report: Report = print,
    round_lines: bool = True,
) -> list[dict[str, Any]]:
    """Run every unfinished cell; returns the parsed rows of ``results.csv``."""
    from secure_fedsa.transports import federation  # heavy (torch): only when cells run

    spec.check()
    created = open_sweep_dir(spec, directory)
    if not created:
        # the same cells, perhaps asked for in other words: keep the command that made the sweep,
        # so that summary.md stays what --plot-only gives
        spec = read_spec(directory)
    results = directory / RESULTS_FILE
    rows: list[dict[str, Any]] = list(read_rows(results))
    cells = spec.cells()
    alone = f", plus {_count(spec.seeds, 'alone cell')}" if spec.alone_added() else ""
    report(
        f"sweep: {len(cells)} cells ({_count(spec.methods, 'method')} × "
        f"{_count(spec.epsilons, 'budget')} × {_count(spec.seeds, 'seed')}{alone}) in "
        f"{directory}; " + ("encryption on (CKKS)" if spec.base.encryption else "encryption OFF")
    )
    ran_any = False
    try:
        for number, cell in enumerate(cells, start=1):
            cell_dir = directory / CELLS_DIR / cell.name
            tag = f"[{number}/{len(cells)}] {describe(cell)}"
            has_row = any(r["cell"] == cell.name for r in rows)
            summary_path = cell_dir / "summary.json"
            if summary_path.exists() and has_row:
                report(f"{tag}: finished earlier, skipped")
                continue
            if has_row and not cell_dir.exists():
                report(f"{tag}: finished earlier (its row is kept; its run directory is not here)")
                continue
            if summary_path.exists():  # finished, but interrupted before its row was written
                summary = federation.load_summary(cell_dir)
                rows = upsert(rows, row_from_summary(cell, summary, summary.get("seconds", 0.0)))
                write_rows(results, rows)
                report(f"{tag}: finished earlier, row recovered from its summary.json")
                continue
            resume = (cell_dir / "config.json").exists()
            if not resume and cell_dir.exists():
                shutil.rmtree(cell_dir)  # nothing a run can continue from: start again
            finished = [float(r["wall_seconds"]) for r in rows if r.get("wall_seconds")]
            remaining = sum(1 for c in cells[number - 1 :] if not _done(c, rows, directory))
            left = format_duration(eta_seconds(finished, remaining))
            action = "resuming interrupted cell" if resume else "running"
            report(f"{tag}: {action} (estimated time left for the sweep: {left})")
            started = time.monotonic()
            progress = federation.Progress(message=_federation_lines(report, round_lines))
            summary = federation.run_federation(
                cell.config(spec.base), cell_dir, progress, resume=resume
            )
            ran_any = True
            wall = time.monotonic() - started
            rows = upsert(rows, row_from_summary(cell, summary, wall))
            write_rows(results, rows)
            write_outputs(spec, directory)
            report(
                f"{tag}: accuracy {summary['evaluation']['mean']:.4f} (mean over clients), "
                f"{format_duration(wall)}"
            )
    except SecureFedsaError:
        if created and not ran_any and not rows:
            _remove_created(directory)
        raise
    if not results.exists():
        write_rows(results, rows)
    write_outputs(spec, directory)
    report(f"sweep finished: {directory / RESULTS_FILE}, curve.png, curve.svg, {SUMMARY_FILE}")
    return [parse_row(r) for r in read_rows(results)]


def _count(items: tuple, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


ROUTINE = ("round ", "final evaluation")


def _federation_lines(report: Report, round_lines: bool) -> Report:
    """A federation's messages, indented; without round lines, warnings still show."""

    def show(text: str) -> None:
        if round_lines or not text.startswith(ROUTINE):
            report(f"    {text}")

    return show


def _done(cell: Cell, rows: list[dict[str, Any]], directory: Path) -> bool:
    cell_dir = directory / CELLS_DIR / cell.name
    has_row = any(r["cell"] == cell.name for r in rows)
    return has_row and ((cell_dir / "summary.json").exists() or not cell_dir.exists())
