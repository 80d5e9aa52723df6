"""``summary.md``: the method x epsilon table (mean ± std over seeds) and the exact command."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from secure_fedsa.sweep.plot import majority_reference, method_label
from secure_fedsa.sweep.spec import SweepSpec, format_epsilon
from secure_fedsa.sweep.stats import SeedStats, group_over_seeds


def _epsilon_header(epsilon: float) -> str:
    return "no DP" if math.isinf(epsilon) else f"ε={format_epsilon(epsilon)}"


def _cell_text(stats: SeedStats | None, digits: int = 3) -> str:
    if stats is None:
        return "–"
    if stats.n == 1:
        return f"{stats.mean:.{digits}f}"
    return f"{stats.mean:.{digits}f} ± {stats.std:.{digits}f}"


def markdown_table(
    stats: dict[tuple[str, float], SeedStats],
    methods: Sequence[str],
    epsilons: Sequence[float],
    digits: int = 3,
) -> str:
    header = "| method | " + " | ".join(_epsilon_header(e) for e in epsilons) + " |"
    rule = "|---|" + "---|" * len(epsilons)
    lines = [header, rule]
    for method in methods:
        cells = [_cell_text(stats.get((method, e)), digits) for e in epsilons]
        lines.append(f"| {method_label(method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render_summary(spec: SweepSpec, rows: Sequence[dict[str, Any]]) -> str:
    """The whole ``summary.md`` for parsed result rows (finished cells only)."""
    base = spec.base
    accuracy = group_over_seeds(rows, "accuracy_mean")
    spent = group_over_seeds(rows, "epsilon_spent_max")
    private = [e for e in spec.epsilons if math.isfinite(e)]
    seeds_done = sorted({r["seed"] for r in rows})
    total = len(spec.cells())
    lines = [
        "# Privacy-utility sweep",
        "",
        f"{spec.title()}; {base.rounds} rounds × {base.local_steps} local steps, batch "
        f"{base.batch_size}, δ={base.delta:g}, model layers: {base.num_layers or 'all'}, "
        f"max examples: {base.max_examples or 'all'}.",
        f"Cells finished: {len(rows)} of {total}; seeds: {', '.join(map(str, seeds_done)) or '–'}.",
        "",
        "Test accuracy, unweighted mean over clients (each client's full test split); "
        "mean ± sample std over seeds:",
        "",
        markdown_table(accuracy, spec.methods, spec.epsilons),
        "",
    ]
    majority = majority_reference(rows)
    if majority is not None:
        lines += [
            f"Majority-class reference: {majority:.3f} (always predicting each client's most "
            "frequent test label, mean over clients). A cell at or below it has learned nothing "
            "usable.",
            "",
        ]
    if private:
        lines += [
            "Privacy actually spent: ε of the most-spent client (mean over seeds):",
            "",
            markdown_table(spent, spec.methods, private, digits=2),
            "",
        ]
    lines += [
        "Encryption: " + ("on (CKKS); it does not change accuracy." if base.encryption else "OFF."),
        "",
        "Command:",
        "",
        "```bash",
        spec.command,
        "```",
        "",
    ]
    return "\n".join(lines)
