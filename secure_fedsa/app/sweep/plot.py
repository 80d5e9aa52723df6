"""The privacy-utility curve: accuracy against epsilon, one line per method, with the site alone
(local-only training without DP) as a reference line.

:func:`build_figure` is pure (rows in, a matplotlib Figure out; no pyplot state, no files), so
tests can count its lines; :func:`save_curve` writes ``curve.png`` and ``curve.svg``.
"""

from __future__ import annotations

import io
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from secure_fedsa.app.sweep.spec import ALONE_LABEL, ALONE_METHOD, format_epsilon
from secure_fedsa.app.sweep.stats import group_over_seeds
from secure_fedsa.atomic import atomic_write

METHOD_NAMES = {
    "fedsa": "FedSA-LoRA",
    "fedit": "FedIT",
    "ffa": "FFA-LoRA",
    "local": "local only",
}
ADAPTER_NAMES = {"lora": "LoRA", "rslora": "rsLoRA", "vera": "VeRA"}
CURVE_FILES = ("curve.png", "curve.svg")
# Title lines are wrapped at this many characters: at this font size they fit the figure's width.
TITLE_WIDTH = 80
TITLE_FONT_SIZE = 10


def method_label(method: str) -> str:
    """``fedsa`` -> FedSA-LoRA, ``fedsa@vera`` -> FedSA-VeRA, ``fedit+head`` -> FedIT (shared
    head); anything else as given."""
    base, _, adapter = method.partition("@")
    head = base.endswith("+head")
    base = base.removesuffix("+head")
    if base not in METHOD_NAMES or (adapter and adapter not in ADAPTER_NAMES):
        return method
    label = METHOD_NAMES[base]
    if adapter:
        label = (
            label.replace("-LoRA", "-" + ADAPTER_NAMES[adapter])
            if label.endswith("-LoRA")
            else f"{label} ({ADAPTER_NAMES[adapter]})"
        )
    return f"{label} (shared head)" if head else label


def dodge(index: int, count: int, step: float = 0.015) -> float:
    """Factor that moves series ``index`` of ``count`` sideways on a log axis (1.0 at the centre).

    Methods often tie at the same budget; a small offset keeps one marker from hiding another.
    """
    return 10 ** (step * (index - (count - 1) / 2))


def majority_reference(rows: Sequence[dict[str, Any]]) -> float | None:
    """Mean over rows of the majority-class accuracy (None when no row records it)."""
    values = [r.get("majority_mean") for r in rows]
    known = [v for v in values if isinstance(v, float) and math.isfinite(v)]
    return sum(known) / len(known) if known else None


def build_figure(
    rows: Sequence[dict[str, Any]],
    *,
    title: str,
    methods: Sequence[str] | None = None,
    delta: float | None = None,
) -> Figure:
    """Mean accuracy over seeds against target epsilon (log axis), 95 % interval error bars.

    Per method: one solid line over the finite budgets and one dashed horizontal line for its
    no-DP (epsilon = inf) result, so ``len(ax.get_lines())`` is the number of such series. The
    no-DP result of ``local`` is the site alone: when it exists it is drawn as the black
    dash-dotted reference line "alone (local, no DP)" (mean over seeds) instead of a dashed
    line of the method's colour. Markers are offset slightly sideways per method
    (:func:`dodge`); ticks sit at the true budgets.
    """
    stats = group_over_seeds(rows)
    alone = stats.get((ALONE_METHOD, math.inf))
    order = list(methods) if methods else list(dict.fromkeys(r["method"] for r in rows))
    seeds = max((s.n for s in stats.values()), default=0)
    figure = Figure(figsize=(7.5, 5.0), dpi=120)
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    colors = [f"C{i % 10}" for i in range(len(order))]
    finite: set[float] = set()
    for number, (method, color) in enumerate(zip(order, colors, strict=True)):
        points = sorted((e, s) for (m, e), s in stats.items() if m == method and math.isfinite(e))
        if points:
            finite.update(e for e, _ in points)
            xs = [e * dodge(number, len(order)) for e, _ in points]
            ax.plot(
                xs,
                [s.mean for _, s in points],
                marker="o",
                color=color,
                label=method_label(method),
            )
            if seeds > 1:
                ax.errorbar(
                    xs,
                    [s.mean for _, s in points],
                    yerr=[s.half_width or 0.0 for _, s in points],
                    fmt="none",
                    ecolor=color,
                    capsize=0,  # bars only: no cap lines among the plotted series
                    linewidth=1,
                )
        reference = stats.get((method, math.inf))
        if reference is not None and method != ALONE_METHOD:
            ax.axhline(
                reference.mean,
                color=color,
                linestyle="--",
                linewidth=1.2,
                label=f"{method_label(method)}, no DP",
            )
            if reference.half_width is not None:
                ax.axhspan(
                    reference.mean - reference.half_width,
                    reference.mean + reference.half_width,
                    color=color,
                    alpha=0.06,
                    linewidth=0,
                )
    if alone is not None:
        ax.axhline(alone.mean, color="k", linestyle="-.", linewidth=1.4, label=ALONE_LABEL)
        if alone.half_width is not None:
            ax.axhspan(
                alone.mean - alone.half_width,
                alone.mean + alone.half_width,
                color="k",
                alpha=0.05,
                linewidth=0,
            )
    majority = majority_reference(rows)
    if majority is not None:
        ax.axhline(
            majority,
            color="0.35",
            linestyle=":",
            linewidth=1.4,
            label="majority class (always the most frequent label)",
        )
    ax.set_xscale("log")
    if finite:
        ticks = sorted(finite)
        ax.set_xticks(ticks)
        ax.set_xticklabels([format_epsilon(e) for e in ticks])
        ax.minorticks_off()
        ax.set_xlim(ticks[0] / 1.5, ticks[-1] * 1.5)
    else:
        ax.set_xlim(0.5, 16)
    delta_text = f", δ={delta:g}" if delta is not None else ""
    ax.set_xlabel(
        f"privacy budget ε per client (target{delta_text}; log scale; right = less private)"
    )
    ax.set_ylabel("test accuracy (unweighted mean over clients)")
    spread = f"mean over {seeds} seeds, bars and bands = 95 % interval" if seeds > 1 else "one seed"
    spread += "; markers offset sideways to stay visible" if len(order) > 1 else ""
    styles = "dashed = no DP" + ("; dash-dot = alone" if alone is not None else "")
    lines = ["Privacy–utility trade-off", title, f"({spread}; {styles}; dotted = majority)"]
    ax.set_title(
        "\n".join(textwrap.fill(line, TITLE_WIDTH) for line in lines), fontsize=TITLE_FONT_SIZE
    )
    ax.grid(True, alpha=0.3)
    if ax.get_lines():
        ax.legend(fontsize=8, loc="best")
    figure.tight_layout()
    return figure


def save_curve(figure: Figure, directory: Path) -> list[Path]:
    """Write the figure as ``curve.png`` and ``curve.svg`` (each atomically).

    The files carry no date and fixed SVG element ids, so that redrawing unchanged results
    leaves the committed files unchanged."""
    paths = []
    for name in CURVE_FILES:
        path = directory / name
        fmt = name.rsplit(".", 1)[1]
        metadata = {"Date": None} if fmt == "svg" else None
        image = io.BytesIO()
        with matplotlib.rc_context({"svg.hashsalt": "secure_fedsa"}):
            figure.savefig(image, format=fmt, metadata=metadata)
        atomic_write(path, image.getvalue())
        paths.append(path)
    return paths
