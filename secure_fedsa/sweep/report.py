"""``summary.md``: the method x epsilon table (mean and 95 % interval over seeds), each method's
paired difference to FedSA with its interval and whether it is significant, and the command."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from secure_fedsa.config import RunConfig
from secure_fedsa.model import DEFAULT_TARGET_MODULES
from secure_fedsa.sweep.plot import majority_reference, method_label
from secure_fedsa.sweep.spec import SweepSpec, format_epsilon
from secure_fedsa.sweep.stats import PairedDifference, SeedStats, differences_to, group_over_seeds

REFERENCE = "fedsa"


def _epsilon_header(epsilon: float) -> str:
    return "no DP" if math.isinf(epsilon) else f"ε={format_epsilon(epsilon)}"


def _cell_text(stats: SeedStats | None, digits: int = 3) -> str:
    """``mean ± half-width of the 95 % interval (n seeds)``; just the mean for one seed."""
    if stats is None:
        return "–"
    if stats.half_width is None:
        return f"{stats.mean:.{digits}f}"
    return f"{stats.mean:.{digits}f} ± {stats.half_width:.{digits}f} (n={stats.n})"


def _difference_text(diff: PairedDifference | None) -> str:
    if diff is None:
        return "–"
    if diff.half_width is None:
        return f"{diff.mean:+.3f} (1 seed)"
    mark = " **significant**" if diff.significant else ""
    return f"{diff.mean:+.3f} ± {diff.half_width:.3f} (n={diff.n}){mark}"


def differences_table(
    diffs: dict[tuple[str, float], PairedDifference],
    methods: Sequence[str],
    epsilons: Sequence[float],
    reference: str = REFERENCE,
) -> str:
    """Per method and budget: mean over shared seeds of (method − reference) ± 95 % interval."""
    header = "| method − " + method_label(reference) + " | "
    header += " | ".join(_epsilon_header(e) for e in epsilons) + " |"
    lines = [header, "|---|" + "---|" * len(epsilons)]
    for method in methods:
        if method == reference:
            continue
        cells = [_difference_text(diffs.get((method, e))) for e in epsilons]
        lines.append(f"| {method_label(method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def significance_sentences(
    diffs: dict[tuple[str, float], PairedDifference], reference: str = REFERENCE
) -> list[str]:
    """One plain sentence per budget: which methods differ significantly from the reference."""
    out = []
    for epsilon in sorted({e for _, e in diffs}, key=lambda e: (math.isinf(e), e)):
        here = {m: d for (m, e), d in diffs.items() if e == epsilon}
        better = [method_label(m) for m, d in here.items() if d.significant and d.mean > 0]
        worse = [method_label(m) for m, d in here.items() if d.significant and d.mean < 0]
        tied = [
            method_label(m)
            for m, d in here.items()
            if not d.significant and d.half_width is not None
        ]
        untested = [method_label(m) for m, d in here.items() if d.half_width is None]
        parts = []
        if worse:
            parts.append(f"{method_label(reference)} is significantly ahead of {', '.join(worse)}")
        if better:
            parts.append(f"{', '.join(better)} significantly ahead of {method_label(reference)}")
        if tied:
            parts.append(f"no significant difference to {', '.join(tied)}")
        if untested:
            parts.append(f"not testable yet (one seed in common) for {', '.join(untested)}")
        out.append(f"- {_epsilon_header(epsilon)}: " + "; ".join(parts) + ".")
    return out


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


OPTIMIZER_TEXT = {"kept": "state kept across rounds", "fresh": "fresh every round"}


def _adapter_text(base: RunConfig) -> str:
    """Where the adapter sits, when not on every layer's query and value (older summaries had
    no such words, and keep none)."""
    text = ""
    if base.adapter_layers is not None:
        text += f", adapter on the top {base.adapter_layers} layers"
    if tuple(base.target_modules) != DEFAULT_TARGET_MODULES:
        text += f", adapter modules: {', '.join(base.target_modules)}"
    return text


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
        f"{base.batch_size}, AdamW lr {base.lr:g}"
        + ("" if base.lr_schedule == "constant" else f" with {base.lr_schedule} decay")
        + f" ({OPTIMIZER_TEXT[base.optimizer_state]})"
        + (f", clip {base.clip:g}" if private else "")
        + f", δ={base.delta:g}, model layers: {base.num_layers or 'all'}"
        + _adapter_text(base)
        + f", max examples: {base.max_examples or 'all'}.",
        f"Cells finished: {len(rows)} of {total}; seeds: {', '.join(map(str, seeds_done)) or '–'}.",
        "",
        "Test accuracy, unweighted mean over clients (each client's full test split); mean over "
        "seeds ± half-width of its 95 % confidence interval (Student t):",
        "",
        markdown_table(accuracy, spec.methods, spec.epsilons),
        "",
    ]
    diffs = differences_to(rows, REFERENCE)
    if diffs:
        lines += [
            f"Paired difference to {method_label(REFERENCE)} (same seeds, so the same clients and "
            "partitions), mean ± half-width of its 95 % interval; **significant** when the "
            "interval excludes 0 (5 %, two-sided, not corrected for the number of comparisons):",
            "",
            differences_table(diffs, spec.methods, spec.epsilons),
            "",
            *significance_sentences(diffs),
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
