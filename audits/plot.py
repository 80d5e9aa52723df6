"""The ε-over-rounds plot, as an inline PNG (base64) for the self-contained HTML report."""

from __future__ import annotations

import base64
import io


def epsilon_plot_png(series: dict[str, list[list[float]]], budget: float | None) -> str | None:
    """Base64 PNG of cumulative ε per client over rounds; None when there is nothing to plot."""
    if not any(series.values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4, 3.4), dpi=100)
    axes = figure.add_subplot()
    for cid, points in sorted(series.items()):
        if points:
            axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=cid)
    if isinstance(budget, (int, float)):
        axes.axhline(
            budget, color="grey", linestyle="--", linewidth=1, label=f"budget ε = {budget:g}"
        )
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("round")
    axes.set_ylabel("cumulative ε (ledger)")
    axes.set_title("Privacy spent per client")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
