"""``summary.md``: the method x epsilon table (mean and 95 % interval over seeds), which privacy
accounting made it, the gain from joining (every cell against the site alone: the median client,
and each client), each method's paired difference to FedSA, and the command.

Every table that tests differences shows the paired-t interval, the exact sign-flip p, the exact
Wilcoxon p and the sign-flip p after Holm's correction over that table; a difference is
**significant** only when its Holm-adjusted sign-flip p is below 0.05 (:mod:`significance`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from secure_fedsa.app.sweep.joining import (
    ALONE_LABEL,
    JoiningGain,
    alone_accuracy,
    client_order,
    gain_from_joining,
    is_alone,
)
from secure_fedsa.app.sweep.plot import majority_reference, method_label
from secure_fedsa.app.sweep.spec import SweepSpec, format_epsilon
from secure_fedsa.app.sweep.stats import (
    PairedDifference,
    SeedStats,
    differences_to,
    group_over_seeds,
    seed_stats,
)
from secure_fedsa.config import RunConfig
from secure_fedsa.model.encoder import DEFAULT_TARGET_MODULES

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


ACCOUNTING = {
    "prv": "ε accounted under add/remove-one neighbours (Opacus PRV/RDP; made before the "
    "replace-one correction)",
    "rdp": "ε accounted under add/remove-one neighbours (Opacus PRV/RDP; made before the "
    "replace-one correction)",
    "pld": "ε accounted under replace-one neighbours (dp_accounting PLD)",
}


def accounting_text(accountant: str | None) -> str:
    """Which accounting made the budgets, from the base configuration's ``accountant``."""
    if accountant in ACCOUNTING:
        return ACCOUNTING[accountant]
    if accountant is None:
        return "ε accounting unknown (sweep.json names no accountant)"
    return f"ε accounting unknown (sweep.json names the accountant {accountant!r})"


def tests_caption(family: int) -> str:
    """What a tested table shows and when it says "significant" (``family``: its comparisons)."""
    return (
        "mean over paired seeds ± half-width of the paired Student-t 95 % interval; "
        "p = exact two-sided sign-flip (permutation) test over seeds; Wilcoxon p = exact "
        "signed-rank test (zeros dropped; shown, not used for the label); Holm p = the sign-flip "
        f"p after Holm–Bonferroni over the {family} tested comparison{_s(family)} of this table; "
        "**significant** = Holm-adjusted sign-flip p < 0.05 within this table. No sign-flip p "
        "can be below 2/2^n with n paired seeds (0.0625 for 5): fewer than 6 paired seeds are "
        "never significant."
    )


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def p_text(p: float | None) -> str:
    return "–" if p is None else f"{p:.4g}"


def verdict(diff: PairedDifference) -> str:
    if not diff.testable:
        return "not testable (1 seed)"
    return "**significant**" if diff.significant else "no"


def _family(diffs: Mapping[Any, PairedDifference]) -> int:
    return sum(1 for d in diffs.values() if d.testable)


def _tested_columns(diff: PairedDifference) -> list[str]:
    """Mean ± interval, sign-flip p, Wilcoxon p, Holm p and the verdict of one difference."""
    if not diff.testable:
        return [f"{diff.mean:+.3f}", "–", "–", "–", verdict(diff)]
    return [
        f"{diff.mean:+.3f} ± {diff.half_width:.3f}",
        p_text(diff.sign_flip_p),
        p_text(diff.wilcoxon_p),
        p_text(diff.holm_p),
        verdict(diff),
    ]


TESTED_HEADER = "sign-flip p | Wilcoxon p | Holm p | significant? |"


def differences_table(
    diffs: dict[tuple[str, float], PairedDifference],
    methods: Sequence[str],
    epsilons: Sequence[float],
    reference: str = REFERENCE,
) -> str:
    """One row per method and budget: mean over shared seeds of (method − reference) ± paired-t
    interval, sign-flip, Wilcoxon and Holm p, and whether it is significant."""
    lines = [
        f"| method − {method_label(reference)} | budget | seeds | difference | {TESTED_HEADER}",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        for epsilon in epsilons:
            diff = diffs.get((method, epsilon))
            if method == reference or diff is None:
                continue
            cells = [method_label(method), _epsilon_header(epsilon), str(diff.n)]
            lines.append("| " + " | ".join(cells + _tested_columns(diff)) + " |")
    return "\n".join(lines)


def _sorted_budgets(keys: Sequence[float]) -> list[float]:
    return sorted(set(keys), key=lambda e: (math.isinf(e), e))


def significance_sentences(
    diffs: dict[tuple[str, float], PairedDifference], reference: str = REFERENCE
) -> list[str]:
    """One plain sentence per budget: which methods differ significantly from the reference
    (Holm-adjusted sign-flip p < 0.05 within the table)."""
    out = []
    for epsilon in _sorted_budgets([e for _, e in diffs]):
        here = {method_label(m): d for (m, e), d in diffs.items() if e == epsilon}
        better, worse, tied, untested = _split(here)
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


def _split(here: Mapping[str, PairedDifference]) -> tuple[list[str], ...]:
    """Labels whose difference is significantly above 0, below 0, neither, or untestable."""
    above = [k for k, d in here.items() if d.testable and d.significant and d.mean > 0]
    below = [k for k, d in here.items() if d.testable and d.significant and d.mean < 0]
    neither = [k for k, d in here.items() if d.testable and not d.significant]
    untested = [k for k, d in here.items() if not d.testable]
    return above, below, neither, untested


def _seeds_paired(gain: JoiningGain) -> str:
    if gain.seeds_paired == gain.seeds_run:
        return str(gain.seeds_paired)
    return f"{gain.seeds_paired} of {gain.seeds_run}"


def joining_table(
    gains: Mapping[tuple[str, float], JoiningGain],
    methods: Sequence[str],
    epsilons: Sequence[float],
) -> str:
    """One row per cell: the median client's gain from joining over paired seeds, tested."""
    lines = [
        f"| method | budget | seeds paired | median client's gain | {TESTED_HEADER}",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method in methods:
        for epsilon in epsilons:
            gain = gains.get((method, epsilon))
            if gain is None:
                continue
            cells = [method_label(method), _epsilon_header(epsilon), _seeds_paired(gain)]
            if gain.median_client is None:
                cells += ["–", "–", "–", "–", "no seed paired (no alone cell of its seeds)"]
            else:
                cells += _tested_columns(gain.median_client)
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def joining_sentences(gains: Mapping[tuple[str, float], JoiningGain]) -> list[str]:
    """One plain sentence per budget: for which methods the median client gains or loses
    significantly by joining."""
    out = []
    tested = {k: g.median_client for k, g in gains.items() if g.median_client is not None}
    for epsilon in _sorted_budgets([e for _, e in tested]):
        here = {method_label(m): d for (m, e), d in tested.items() if e == epsilon}
        gains_, losses, neither, untested = _split(here)
        parts = []
        if gains_:
            parts.append(f"the median client gains significantly with {', '.join(gains_)}")
        if losses:
            parts.append(f"the median client loses significantly with {', '.join(losses)}")
        if neither:
            parts.append(f"no significant gain or loss with {', '.join(neither)}")
        if untested:
            parts.append(f"not testable yet (one paired seed) with {', '.join(untested)}")
        out.append(f"- {_epsilon_header(epsilon)}: " + "; ".join(parts) + ".")
    return out


def per_client_table(
    gains: Mapping[tuple[str, float], JoiningGain],
    methods: Sequence[str],
    epsilons: Sequence[float],
) -> str:
    """One row per cell, one column per client: each client's mean gain from joining over the
    paired seeds ± paired-t interval (p, W = Wilcoxon p, Holm p)."""
    clients = sorted({c for g in gains.values() for c in g.per_client}, key=client_order)
    lines = [
        "| method | budget | seeds paired | " + " | ".join(clients) + " |",
        "|---|---|---|" + "---|" * len(clients),
    ]
    for method in methods:
        for epsilon in epsilons:
            gain = gains.get((method, epsilon))
            if gain is None or gain.median_client is None:
                continue
            cells = [method_label(method), _epsilon_header(epsilon), _seeds_paired(gain)]
            cells += [_client_text(gain.per_client.get(c)) for c in clients]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _client_text(diff: PairedDifference | None) -> str:
    if diff is None:
        return "–"
    if not diff.testable:
        return f"{diff.mean:+.3f} (1 seed)"
    mark = " **significant**" if diff.significant else ""
    return (
        f"{diff.mean:+.3f} ± {diff.half_width:.3f} (p {p_text(diff.sign_flip_p)}, "
        f"W {p_text(diff.wilcoxon_p)}, Holm {p_text(diff.holm_p)}){mark}"
    )


def _natural(base: RunConfig) -> bool:
    """Whether clients are whole groups of the data (files, a client column, or the natural
    partition of a dataset with groups), as :meth:`SweepSpec.title` reads it."""
    return bool(base.data_files) or base.client_column is not None or base.partition == "natural"


def joining_lines(
    spec: SweepSpec, rows: Sequence[dict[str, Any]], gains: Mapping[Any, JoiningGain]
) -> list[str]:
    """The gain-from-joining part of the summary: the alone baseline, the median client's table
    and one sentence per budget (or why there is none)."""
    if all(is_alone(r["method"], r["epsilon_target"]) for r in rows):
        return []
    alone = alone_accuracy(rows)
    if not alone:
        why = (
            "no alone cell has finished yet"
            if any(is_alone(c.method, c.epsilon) for c in spec.cells())
            else "this sweep has no alone cells (local-only training without DP; sweeps made "
            "before they were added, and sweeps made with --no-alone, have none)"
        )
        return [f"Gain from joining: not measured: {why}.", ""]
    if not any(g.median_client for g in gains.values()):
        why = "no cell shares a seed and a client with an alone cell (accuracy_per_client empty?)"
        return [f"Gain from joining: not measured: {why}.", ""]
    stats = seed_stats(list(alone.values()))
    alone_text = f"{stats.mean:.3f}" + (
        f" ± {stats.half_width:.3f} (n={stats.n})" if stats.half_width is not None else " (1 seed)"
    )
    return [
        f"Gain from joining: what a site gains by joining rather than training alone. "
        f"Alone = local-only training without DP on the same client split and seed (the cell "
        f"local at no DP; {ALONE_LABEL}: {alone_text} mean accuracy). Per seed, a client's gain "
        "is its accuracy in the cell minus its accuracy alone (same client id, same seed); the "
        "median client's gain is the median over clients of those gains. A seed without its "
        "alone cell is left out of the pairing. Median client's gain: "
        + tests_caption(
            _family({k: g.median_client for k, g in gains.items() if g.median_client is not None})
        )
        + " The local-only rows under DP join nothing: they show what DP costs a site alone.",
        "",
        joining_table(gains, spec.table_methods(), spec.table_epsilons()),
        "",
        *joining_sentences(gains),
        "",
    ]


def per_client_lines(spec: SweepSpec, gains: Mapping[Any, JoiningGain]) -> list[str]:
    """The per-client gain-from-joining table with its caption (nothing without pairs)."""
    family = {(k, c): d for k, g in gains.items() for c, d in g.per_client.items()}
    if not family:
        return []
    where = (
        "Under this natural partition a client id holds the same groups in every seed (unless "
        "group sizes tie); its train/test split still changes with the seed."
        if _natural(spec.base)
        else "Under this partition every seed draws new clients, so a client id is a position, "
        "not a site: its row averages different clients."
    )
    return [
        "Gain from joining per client: each client's accuracy in the cell minus its accuracy "
        "alone, same seed; "
        + tests_caption(_family(family)).replace("Wilcoxon p", "W (Wilcoxon p)", 1)
        + " "
        + where,
        "",
        per_client_table(gains, spec.table_methods(), spec.table_epsilons()),
        "",
    ]


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
    if base.adapter_layers is not None:  # never above num_layers (RunConfig records so)
        count = base.adapter_layers
        text += f", adapter on the top {count} layer{'s' if count != 1 else ''}"
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
    gains = gain_from_joining(rows)
    accounting = (
        accounting_text(getattr(base, "accountant", None)) if private else "none (no cell uses DP)"
    )
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
        markdown_table(accuracy, spec.table_methods(), spec.table_epsilons()),
        "",
        f"Privacy accounting: {accounting}.",
        "",
        *joining_lines(spec, rows, gains),
    ]
    diffs = differences_to(rows, REFERENCE)
    if diffs:
        lines += [
            f"Paired difference to {method_label(REFERENCE)} (method − {method_label(REFERENCE)}, "
            "same seeds, so the same clients and partitions): " + tests_caption(_family(diffs)),
            "",
            differences_table(diffs, spec.table_methods(), spec.table_epsilons()),
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
    lines += per_client_lines(spec, gains)
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
