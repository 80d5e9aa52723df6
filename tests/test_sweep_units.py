"""The sweep's pure parts: list parsing, statistics over seeds, time left, the figure, the table."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secure_fedsa.app.sweep.plot import build_figure
from secure_fedsa.app.sweep.report import render_summary
from secure_fedsa.app.sweep.results import parse_row, render_csv, row_from_summary
from secure_fedsa.app.sweep.spec import (
    Cell,
    SweepSpec,
    parse_epsilons,
    parse_methods,
    parse_seeds,
)
from secure_fedsa.app.sweep.stats import eta_seconds, format_duration, group_over_seeds, seed_stats
from secure_fedsa.config import RunConfig
from secure_fedsa.errors import ConfigError

pytestmark = pytest.mark.unit

METHODS = ("fedsa", "fedit", "ffa", "local")


def test_epsilons_parse_inf_and_numbers():
    assert parse_epsilons("inf, 8,4,2,1") == (math.inf, 8.0, 4.0, 2.0, 1.0)
    assert parse_epsilons("8,8.0,INF") == (8.0, math.inf)


@pytest.mark.parametrize("text", ["0", "-1", "8,-2", "abc", "nan", "", " , "])
def test_bad_epsilons(text):
    with pytest.raises(ConfigError, match="--epsilons"):
        parse_epsilons(text)


def test_methods():
    assert parse_methods("fedsa,ffa", METHODS) == ("fedsa", "ffa")
    with pytest.raises(ConfigError, match="unknown method 'fedprox'"):
        parse_methods("fedsa,fedprox", METHODS)
    with pytest.raises(ConfigError, match="empty"):
        parse_methods("", METHODS)


def test_seeds_count_or_list():
    assert parse_seeds("3") == (0, 1, 2)
    assert parse_seeds("5,") == (5,)
    assert parse_seeds("0,4,4,7") == (0, 4, 7)
    for bad in ("0", "-2", "x", "", "1,-1"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)


def test_cells_set_method_budget_and_seed():
    spec = SweepSpec(RunConfig(), ("fedsa", "ffa"), (math.inf, 2.0), (0, 1), alone=False)
    cells = spec.cells()
    assert len(cells) == 8 and len({c.name for c in cells}) == 8
    private = Cell("ffa", 2.0, 1).config(spec.base)
    assert (private.method, private.seed, private.dp, private.epsilon) == ("ffa", 1, True, 2.0)
    plain = Cell("fedsa", math.inf, 0).config(spec.base)
    assert plain.dp is False and plain.epsilon is None and plain.noise_multiplier is None
    assert Cell("fedsa", math.inf, 0).name == "fedsa-epsinf-seed0"
    assert Cell("fedsa", 0.5, 2).name == "fedsa-eps0.5-seed2"


def test_spec_round_trip():
    spec = SweepSpec(RunConfig(num_layers=1), METHODS, (math.inf, 8.0, 0.5), (0, 3), "cmd")
    again = SweepSpec.from_dict(spec.to_dict())
    assert again == spec and again.digest() == spec.digest()
    assert spec.digest() != SweepSpec(RunConfig(), METHODS, (8.0,), (0,)).digest()


def test_seed_stats_and_eta():
    stats = seed_stats([0.6, 0.7, 0.8])
    assert stats.n == 3 and stats.mean == pytest.approx(0.7)
    assert stats.std == pytest.approx(0.1) and (stats.low, stats.high) == (0.6, 0.8)
    assert seed_stats([0.5]).std == 0.0
    assert eta_seconds([], 3) is None
    assert eta_seconds([10.0, 20.0], 4) == pytest.approx(60.0)
    assert eta_seconds([10.0], 0) == 0.0
    assert format_duration(None) == "unknown"
    assert format_duration(3725) == "1h02m"
    assert format_duration(65) == "1m05s"


def _summary(accuracies, epsilons=None):
    privacy = (
        {
            cid: {"epsilon": e, "delta": 1e-5, "noise_multiplier": 1.0 + i}
            for i, (cid, e) in enumerate(epsilons.items())
        }
        if epsilons
        else "no differential privacy"
    )
    return {
        "accuracy": {
            "per_client": accuracies,
            "mean": sum(accuracies.values()) / len(accuracies),
            "weighted_mean": 0.5,
        },
        "privacy": privacy,
        "differential_privacy": bool(epsilons),
        "encryption": True,
        "rounds_completed": 2,
    }


def _rows(methods, epsilons, seeds):
    rows = []
    for method in methods:
        for eps in epsilons:
            for seed in seeds:
                acc = 0.6 + 0.01 * seed + (0.1 if math.isinf(eps) else 0.0)
                spent = None if math.isinf(eps) else {"client-0": eps * 0.9, "client-1": eps}
                summary = _summary({"client-0": acc, "client-1": acc}, spent)
                rows.append(row_from_summary(Cell(method, eps, seed), summary, 12.0))
    return rows


def test_row_from_summary():
    row = _rows(["fedsa"], [4.0], [0])[0]
    assert row["epsilon_target"] == "4"
    assert float(row["epsilon_spent_max"]) == 4.0
    assert float(row["epsilon_spent_mean"]) == pytest.approx(3.8)
    assert float(row["noise_multiplier_min"]) == 1.0 and float(row["noise_multiplier_max"]) == 2.0
    assert row["dp"] == "on" and row["encryption"] == "on"
    plain = parse_row(_rows(["fedsa"], [math.inf], [0])[0])
    assert math.isinf(plain["epsilon_target"]) and math.isnan(plain["epsilon_spent_max"])
    assert plain["accuracy_per_client"] == {"client-0": 0.7, "client-1": 0.7}


def test_validation_columns_and_old_files_without_them():
    import csv
    import io

    summary = _summary({"client-0": 0.6, "client-1": 0.8}, {"client-0": 1.0, "client-1": 2.0})
    summary["accuracy"].update(
        validation_per_client={"client-0": 0.55, "client-1": 0.75}, validation_mean=0.65
    )
    row = row_from_summary(Cell("fedsa", 2.0, 0), summary, 1.0)
    assert float(row["accuracy_validation_mean"]) == pytest.approx(0.65)
    parsed = parse_row(next(csv.DictReader(io.StringIO(render_csv([row])))))
    assert parsed["accuracy_validation_per_client"] == {"client-0": 0.55, "client-1": 0.75}
    assert parsed["accuracy_validation_mean"] == pytest.approx(0.65)
    # no validation split: empty columns
    plain = row_from_summary(Cell("fedsa", 2.0, 0), _summary({"client-0": 0.6}, None), 1.0)
    assert plain["accuracy_validation_mean"] == "" == plain["accuracy_validation_per_client"]
    # a results.csv written before the columns existed reads them as empty, and is rewritten
    # with them
    from secure_fedsa.app.sweep.results import COLUMNS

    before = [c for c in COLUMNS if "validation" not in c]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=before, extrasaction="ignore")
    writer.writeheader()
    writer.writerow(row)
    raw = next(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert "accuracy_validation_mean" not in raw
    parsed = parse_row(raw)
    assert math.isnan(parsed["accuracy_validation_mean"])
    assert parsed["accuracy_validation_per_client"] == {}
    assert parsed["accuracy_per_client"] == {"client-0": 0.6, "client-1": 0.8}
    rewritten = next(csv.DictReader(io.StringIO(render_csv([raw]))))
    assert rewritten["accuracy_validation_mean"] == "" and rewritten["cell"] == row["cell"]


def test_csv_round_trip_keeps_every_row():
    import csv
    import io

    rows = _rows(METHODS, [math.inf, 2.0], [0, 1])
    back = list(csv.DictReader(io.StringIO(render_csv(rows))))
    assert [r["cell"] for r in back] == [r["cell"] for r in rows]


def test_a_full_disk_leaves_the_sweep_files_as_they_were(tmp_path, monkeypatch):
    """Issue 35: results.csv, summary.md and the curves are written atomically: no temporary
    file and no half-written table is left when the disk is full."""
    import errno
    import os

    from secure_fedsa.app.sweep.plot import save_curve
    from secure_fedsa.app.sweep.results import write_rows
    from secure_fedsa.app.sweep.runner import write_outputs

    spec = SweepSpec(RunConfig(num_layers=1), METHODS, (math.inf, 2.0), (0, 1), "cmd")
    rows = _rows(METHODS, [math.inf, 2.0], [0, 1])
    write_rows(tmp_path / "results.csv", rows[:1])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    for write in (
        lambda: write_rows(tmp_path / "results.csv", rows),
        lambda: save_curve(build_figure([parse_row(r) for r in rows], title="t"), tmp_path),
        lambda: write_outputs(spec, tmp_path),
    ):
        with pytest.raises(OSError, match="No space left"):
            write()
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    monkeypatch.undo()
    written = write_outputs(spec, tmp_path)
    assert sorted(p.name for p in written) == ["curve.png", "curve.svg", "summary.md"]
    names = ["curve.png", "curve.svg", "results.csv", "summary.md"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # and no temporary file


@pytest.mark.parametrize(
    ("epsilons", "expected_per_method"),
    [([math.inf, 8.0, 2.0], 2), ([8.0, 2.0], 1), ([math.inf], 1)],
)
def test_figure_has_one_line_per_method_and_reference(epsilons, expected_per_method):
    rows = [parse_row(r) for r in _rows(METHODS, epsilons, [0, 1, 2])]
    figure = build_figure(rows, title="test", methods=METHODS, delta=1e-5)
    ax = figure.axes[0]
    assert len(ax.get_lines()) == expected_per_method * len(METHODS)
    labels = ax.get_legend_handles_labels()[1]
    assert "FedSA-LoRA" in labels or "FedSA-LoRA, no DP" in labels
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() and ax.get_ylabel() and "test" in ax.get_title()


def test_long_title_and_axis_labels_stay_inside_the_figure():
    rows = [parse_row(r) for r in _rows(METHODS, [math.inf, 8.0, 2.0], [0, 1])]
    title = "a_long_user_file_name.jsonl, 64 clients, Dirichlet α=0.05 partition, " * 3
    figure = build_figure(rows, title=title.strip(), methods=METHODS, delta=1e-5)
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    box = figure.bbox
    ax = figure.axes[0]
    for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
        extent = text.get_window_extent(renderer)
        assert extent.x0 >= box.x0 - 0.5 and extent.x1 <= box.x1 + 0.5, text.get_text()
        assert extent.y0 >= box.y0 - 0.5 and extent.y1 <= box.y1 + 0.5, text.get_text()


def test_figure_mean_over_seeds():
    rows = [parse_row(r) for r in _rows(["fedsa"], [4.0], [0, 1, 2])]
    line = build_figure(rows, title="t").axes[0].get_lines()[0]
    assert list(line.get_xdata()) == [4.0]
    assert line.get_ydata()[0] == pytest.approx(0.61)


def test_summary_table():
    spec = SweepSpec(
        RunConfig(), ("fedsa", "ffa"), (math.inf, 2.0), (0, 1), "secure-fedsa sweep", alone=False
    )
    rows = [parse_row(r) for r in _rows(["fedsa", "ffa"], [math.inf, 2.0], [0, 1])]
    text = render_summary(spec, rows)
    assert "| method | no DP | ε=2 |" in text
    # two seeds (0.70, 0.71): sd 0.00707, t(0.975, 1) = 12.706: half-width 0.0635
    assert "| FedSA-LoRA | 0.705 ± 0.064 (n=2) | 0.605 ± 0.064 (n=2) |" in text
    # ffa and fedsa have identical rows: a paired difference of exactly 0 (p = 1), not significant
    assert "| FFA-LoRA | no DP | 2 | +0.000 ± 0.000 | 1 | 1 | 1 | no |" in text
    assert "| FFA-LoRA | ε=2 | 2 | +0.000 ± 0.000 | 1 | 1 | 1 | no |" in text
    assert "no significant difference to FFA-LoRA" in text
    assert "Holm-adjusted sign-flip p < 0.05 within this table" in text
    assert "Gain from joining: not measured: this sweep has no alone cells" in text
    one_seed = render_summary(spec, [r for r in rows if r["seed"] == 0])
    assert "not testable yet (one seed in common) for FFA-LoRA" in one_seed
    assert "no significant difference" not in one_seed
    assert "secure-fedsa sweep" in text and "encryption on" in text.lower()
    stats = group_over_seeds(rows)
    assert stats[("ffa", 2.0)].n == 2


def _example_argv(path):
    import shlex

    text = path.read_text().replace("\\\n", " ")
    commands = [line for line in text.splitlines() if line.startswith("secure-fedsa sweep")]
    assert len(commands) == 1, "each example is a single sweep command"
    words = shlex.split(commands[0])
    assert words[-1] == "$@"
    return words[1:-1]


@pytest.mark.parametrize(
    ("script", "cells"),
    [("privacy_utility_rotten_tomatoes.sh", 12), ("tweets_natural_topics.sh", 8)],
)
def test_examples_are_valid_sweeps(script, cells):
    from pathlib import Path

    from secure_fedsa.app.cli import build_parser
    from secure_fedsa.app.sweep.command import spec_from_args

    path = Path(__file__).resolve().parents[1] / "examples" / script
    argv = _example_argv(path)
    parser = build_parser()
    args = parser.parse_args(argv)
    sweep_parser = parser._subparsers._group_actions[0].choices["sweep"]
    spec = spec_from_args(args, sweep_parser)
    assert len(spec.cells()) == cells
    assert spec.base.encryption and spec.command.startswith("secure-fedsa sweep")


# --------------------------------------------------------------------------- statistics
def test_confidence_interval_against_known_values():
    from secure_fedsa.app.sweep.stats import seed_stats, t_critical

    assert t_critical(4) == pytest.approx(2.776445, abs=1e-6)
    assert t_critical(1) == pytest.approx(12.706205, abs=1e-6)
    stats = seed_stats([0.80, 0.82, 0.81, 0.79, 0.83])
    assert stats.mean == pytest.approx(0.81)
    assert stats.std == pytest.approx(0.0158114, abs=1e-7)
    assert stats.half_width == pytest.approx(0.0196327, abs=1e-6)
    assert stats.ci == pytest.approx((0.81 - 0.0196327, 0.81 + 0.0196327), abs=1e-6)
    assert seed_stats([0.5]).half_width is None and seed_stats([0.5]).ci is None


def test_paired_difference_against_known_values():
    from secure_fedsa.app.sweep.stats import paired_difference

    reference = {0: 0.80, 1: 0.82, 2: 0.81, 9: 0.5}  # seed 9 has no partner: left out
    other = {0: 0.78, 1: 0.80, 2: 0.80}
    diff = paired_difference(other, reference)
    assert diff.n == 3 and diff.mean == pytest.approx(-0.0166667, abs=1e-6)
    # sd of (-0.02, -0.02, -0.01) is 0.0057735; t(0.975, 2) = 4.302653
    assert diff.half_width == pytest.approx(4.302653 * 0.0057735 / 3**0.5, abs=1e-6)
    assert diff.interval_excludes_zero
    # three seeds, all below: the exact sign-flip p is 2/8, so not significant under any table
    assert diff.sign_flip_p == 0.25 and diff.wilcoxon_p == 0.25
    noisy = paired_difference({0: 0.78, 1: 0.84, 2: 0.80}, reference)
    assert not noisy.interval_excludes_zero


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.4, 0.9), st.floats(-0.05, 0.05)), min_size=2, max_size=8))
def test_t_interval_agrees_with_scipys_paired_t_test(pairs):
    """Independent check: the interval excludes 0 exactly when scipy's paired t-test gives
    p < 0.05."""
    from scipy.stats import ttest_rel

    from secure_fedsa.app.sweep.stats import paired_difference

    reference = {i: a for i, (a, _) in enumerate(pairs)}
    other = {i: a + d for i, (a, d) in enumerate(pairs)}
    diffs = [other[i] - reference[i] for i in reference]
    if max(diffs) - min(diffs) < 1e-9:
        return  # no variance: the t-test is undefined
    p_value = ttest_rel(list(other.values()), list(reference.values())).pvalue
    if abs(p_value - 0.05) < 1e-6:
        return  # on the boundary
    assert paired_difference(other, reference).interval_excludes_zero == (p_value < 0.05)


def test_method_variants_parse_and_label():
    from secure_fedsa.app.sweep.plot import method_label
    from secure_fedsa.app.sweep.spec import parse_variant

    assert parse_variant("fedit+head") == ("fedit", "shared", None)
    assert parse_variant("fedsa@vera") == ("fedsa", None, "vera")
    assert parse_variant("ffa+head@rslora") == ("ffa", "shared", "rslora")
    for bad, message in (
        ("local+head", "local shares nothing"),
        ("fedsa@dora", "unknown adapter"),
        ("fedprox", "unknown method"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_variant(bad)
    assert method_label("fedsa@vera") == "FedSA-VeRA"
    assert method_label("fedsa@rslora") == "FedSA-rsLoRA"
    assert method_label("fedit+head") == "FedIT (shared head)"
    assert method_label("ffa+head@vera") == "FFA-VeRA (shared head)"
    cell = Cell("fedit+head@rslora", 8.0, 3)
    config = cell.config(RunConfig())
    assert (config.method, config.head, config.adapter, config.seed) == (
        "fedit",
        "shared",
        "rslora",
        3,
    )
    assert Cell("fedsa", math.inf, 0).config(RunConfig(adapter="vera")).adapter == "vera"
