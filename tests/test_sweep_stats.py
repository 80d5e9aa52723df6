"""The sweep's tests of differences (sign-flip, Wilcoxon, Holm), the gain from joining, the alone
cells, and how the summary and curve show them."""

from __future__ import annotations

import itertools
import json
import math
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from secure_fedsa.app.sweep import significance
from secure_fedsa.app.sweep.joining import gain_from_joining, per_client_gains
from secure_fedsa.app.sweep.report import accounting_text, render_summary
from secure_fedsa.app.sweep.significance import (
    holm,
    sign_flip_p,
    smallest_sign_flip_p,
    wilcoxon_p,
)
from secure_fedsa.app.sweep.spec import Cell, SweepSpec
from secure_fedsa.app.sweep.stats import difference_stats, holm_adjusted
from secure_fedsa.config import RunConfig
from secure_fedsa.errors import ConfigError

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
# accuracy differences: multiples of 1/1000 in [-0.3, 0.3] (ties and zeros are common)
DIFFS = st.lists(st.integers(-300, 300).map(lambda k: k / 1000), min_size=1, max_size=10)


def brute_force_sign_flip(values: list[Fraction]) -> Fraction:
    """Every sign pattern, in exact arithmetic: the share with |sum| >= the observed |sum|."""
    observed = abs(sum(values))
    patterns = list(itertools.product((1, -1), repeat=len(values)))
    hits = sum(
        1
        for signs in patterns
        if abs(sum(s * v for s, v in zip(signs, values, strict=True))) >= observed
    )
    return Fraction(hits, len(patterns))


# --------------------------------------------------------------------------- sign-flip
@pytest.mark.parametrize(
    ("differences", "expected"),
    [
        ([0.01, 0.02, 0.03, 0.04, 0.05], 2 / 32),  # n = 5, all positive: the smallest p
        ([-0.01] * 5, 2 / 32),
        ([0.01, 0.02, 0.03], 2 / 8),
        ([0.3, 0.2, 0.1, 0.1], 2 / 16),  # 3+2+1+1 = 7: only it and its mirror reach 7
        ([0.3, 0.2, -0.1], 4 / 8),  # 0.3+0.2-0.1 in floats is not 0.4, and still ties with it
        ([0.1, 0.1, -0.1], 1.0),
        ([0.5], 1.0),
        ([0.0, 0.0, 0.0], 1.0),
        ([0.0, 0.01, 0.02, 0.03, 0.04, 0.05], 2 / 32),  # a zero changes nothing
    ],
)
def test_sign_flip_hand_computed(differences, expected):
    assert sign_flip_p(differences) == pytest.approx(expected, abs=1e-15)


@settings(max_examples=80, deadline=None)
@given(DIFFS)
def test_sign_flip_matches_brute_force_in_exact_arithmetic(differences):
    exact = brute_force_sign_flip([Fraction(round(d * 1000), 1000) for d in differences])
    assert sign_flip_p(differences) == pytest.approx(float(exact), abs=1e-15)


@settings(max_examples=80, deadline=None)
@given(DIFFS)
def test_sign_flip_properties(differences):
    p = sign_flip_p(differences)
    assert 0 < p <= 1
    assert sign_flip_p([-d for d in differences]) == p  # symmetric under negating all
    assert sign_flip_p(list(reversed(differences))) == p  # the order of seeds is irrelevant
    assert sign_flip_p([*differences, 0.0]) == p  # a zero difference changes nothing
    if any(differences):
        assert p >= smallest_sign_flip_p(sum(1 for d in differences if d)) - 1e-15


def test_smallest_p_needs_six_seeds_for_five_percent():
    assert smallest_sign_flip_p(5) == 0.0625 and smallest_sign_flip_p(6) == 0.03125
    assert smallest_sign_flip_p(1) == 1.0
    with pytest.raises(ValueError, match="at least 1"):
        smallest_sign_flip_p(0)


def test_sign_flip_above_twenty_is_a_seeded_monte_carlo():
    differences = [0.01 * (1 + i % 3) for i in range(24)]
    p = sign_flip_p(differences)
    assert p == sign_flip_p(differences)  # fixed seed: the same p every time
    assert p == sign_flip_p([-d for d in differences])
    # exact p is 2 / 2^24; with 100 000 draws the estimate (1 + hits) / (1 + draws) is tiny,
    # never 0
    assert 1 / (1 + significance.MONTE_CARLO_DRAWS) <= p < 1e-4
    mixed = [0.01, -0.01] * 11
    assert sign_flip_p(mixed) == 1.0  # observed sum 0: every draw reaches it


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([], "at least one"),
        ([0.1, math.nan], "finite"),
        ([math.inf], "finite"),
        (["x"], "numbers"),
        ([1e10, 1e10], "too large"),
    ],
)
def test_tests_refuse_bad_input(bad, message):
    with pytest.raises(ValueError, match=message):
        sign_flip_p(bad)
    with pytest.raises(ValueError, match=message):
        wilcoxon_p(bad)


# --------------------------------------------------------------------------- Wilcoxon
@pytest.mark.parametrize(
    ("differences", "expected"),
    [
        ([0.01, 0.02, 0.03, 0.04, 0.05], 0.0625),
        ([0.0, 0.01, 0.02, 0.03, 0.04, 0.05], 0.0625),  # the zero is dropped: n = 5
        ([0.02] * 5, 0.0625),  # all tied: midranks, the exact conditional p
        ([0.1, 0.2, -0.2], 1.0),  # ranks 1, 2.5, 2.5: signed sum 1 is the smallest possible
        ([0.0, 0.0], 1.0),  # nothing left after dropping zeros
        ([0.8 - 0.7, 0.9 - 0.8, 0.3], 0.25),  # equal on paper: tied, not ranked apart
    ],
)
def test_wilcoxon_hand_computed(differences, expected):
    assert wilcoxon_p(differences) == pytest.approx(expected, abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=12, unique=True), st.data())
def test_wilcoxon_without_ties_is_scipys_exact_and_a_sign_flip_of_the_ranks(sizes, data):
    """Without ties, scipy's exact table and our enumeration of the signed ranks agree."""
    signs = data.draw(st.lists(st.sampled_from((1, -1)), min_size=len(sizes), max_size=len(sizes)))
    differences = [s * k / 10_000 for s, k in zip(signs, sizes, strict=True)]
    ranks = {k: r for r, k in enumerate(sorted(sizes), start=1)}
    signed_ranks = [s * ranks[k] for s, k in zip(signs, sizes, strict=True)]
    assert wilcoxon_p(differences) == pytest.approx(sign_flip_p(signed_ranks), abs=1e-12)


@settings(max_examples=60, deadline=None)
@given(DIFFS)
def test_wilcoxon_properties(differences):
    p = wilcoxon_p(differences)
    assert 0 < p <= 1
    assert wilcoxon_p([-d for d in differences]) == pytest.approx(p, abs=1e-12)
    assert wilcoxon_p([*differences, 0.0]) == pytest.approx(p, abs=1e-12)


# --------------------------------------------------------------------------- Holm
def test_holm_hand_computed():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.0625] * 21) == [1.0] * 21
    assert holm([0.2]) == [0.2] and holm([]) == []
    # 4 comparisons: 0.005·4, then max(0.02, 0.011·3), 0.02·2, 0.9
    assert holm([0.9, 0.005, 0.02, 0.011]) == pytest.approx([0.9, 0.02, 0.04, 0.033])


@pytest.mark.parametrize("bad", [[0.1, -0.01], [1.2], [math.nan], ["a"], [None]])
def test_holm_refuses_bad_p_values(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm(bad)


P_VALUES = st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(P_VALUES)
def test_holm_properties(p_values):
    adjusted = holm(p_values)
    assert len(adjusted) == len(p_values)
    for raw, adj in zip(p_values, adjusted, strict=True):
        assert raw <= adj <= 1.0
    for i, j in itertools.product(range(len(p_values)), repeat=2):
        if p_values[i] <= p_values[j]:
            assert adjusted[i] <= adjusted[j]  # monotone in rank
    assert holm(p_values[::-1]) == adjusted[::-1]  # the order given does not matter


@settings(max_examples=150, deadline=None)
@given(P_VALUES, st.sampled_from([0.01, 0.05, 0.1]))
def test_holm_rejects_what_the_step_down_procedure_rejects(p_values, alpha):
    """Independent check: adjusted p < α exactly for the hypotheses Holm's step-down rejects
    (compare p_(k) with α / (m − k + 1), k = 1, 2, …, stop at the first that is not below)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    rejected = set()
    for k, index in enumerate(order):
        threshold = alpha / (m - k)
        assume(abs(p_values[index] - threshold) > 1e-12)  # not on the boundary
        if p_values[index] >= threshold:
            break
        rejected.add(index)
    assert {i for i, p in enumerate(holm(p_values)) if p < alpha} == rejected


def test_holm_adjusted_family_and_labels():
    five = difference_stats([0.01, 0.02, 0.03, 0.04, 0.05, 0.06])  # p = 2/64
    one = difference_stats([0.5])
    with pytest.raises(ValueError, match="holm_adjusted"):
        _ = five.significant  # a label needs its table
    alone = holm_adjusted({"a": five, "one": one})
    assert alone["a"].holm_p == five.sign_flip_p == 0.03125 and alone["a"].significant
    assert alone["one"].holm_p is None and not alone["one"].significant  # not in the family
    pair = holm_adjusted({"a": five, "b": five})
    assert pair["a"].holm_p == 0.0625 and not pair["a"].significant


# --------------------------------------------------------------------------- gain from joining
def _row(method, epsilon, seed, per_client):
    return {
        "cell": Cell(method, epsilon, seed).name,
        "method": method,
        "epsilon_target": epsilon,
        "seed": seed,
        "accuracy_per_client": per_client,
        "accuracy_mean": sum(per_client.values()) / len(per_client) if per_client else math.nan,
        "epsilon_spent_max": math.nan if math.isinf(epsilon) else epsilon,
        "majority_mean": math.nan,
    }


ALONE = {
    0: {"client-0": 0.70, "client-1": 0.80, "client-2": 0.90},
    1: {"client-0": 0.60, "client-1": 0.70, "client-2": 0.95},
    2: {"client-0": 0.65, "client-1": 0.75, "client-2": 0.85},
}
# FedSA at no DP: per-client gains (seed 0) +0.02, +0.01, -0.03 -> median +0.01;
# (seed 1) +0.04, +0.00, -0.01 -> median +0.00; (seed 2) +0.03, +0.02, +0.01 -> median +0.02
FEDSA = {
    0: {"client-0": 0.72, "client-1": 0.81, "client-2": 0.87},
    1: {"client-0": 0.64, "client-1": 0.70, "client-2": 0.94},
    2: {"client-0": 0.68, "client-1": 0.77, "client-2": 0.86},
    3: {"client-0": 0.50, "client-1": 0.50, "client-2": 0.50},  # seed 3 has no alone cell
}


def _joining_rows():
    rows = [_row("local", math.inf, s, acc) for s, acc in ALONE.items()]
    rows += [_row("fedsa", math.inf, s, acc) for s, acc in FEDSA.items()]
    rows += [
        _row("fedsa", 8.0, s, {c: a - 0.1 for c, a in acc.items()}) for s, acc in ALONE.items()
    ]
    return rows


def test_per_client_gains_pair_client_and_seed():
    gains = per_client_gains(_joining_rows())
    assert ("local", math.inf) not in gains  # alone is the baseline, not a cell to compare
    fedsa = gains[("fedsa", math.inf)]
    assert sorted(fedsa) == [0, 1, 2]  # seed 3 left out: no alone cell of that seed
    assert fedsa[0] == pytest.approx({"client-0": 0.02, "client-1": 0.01, "client-2": -0.03})
    assert gains[("fedsa", 8.0)][1] == pytest.approx({c: -0.1 for c in ALONE[1]})


def test_gain_from_joining_median_client_and_per_client():
    gains = gain_from_joining(_joining_rows())
    fedsa = gains[("fedsa", math.inf)]
    assert (fedsa.seeds_paired, fedsa.seeds_run) == (3, 4)
    median = fedsa.median_client
    assert median.mean == pytest.approx((0.01 + 0.00 + 0.02) / 3)
    # medians +0.01, 0.00, +0.02: the zero is flipped too; |sum| 0.03 is reached by ±(.01+.02)
    assert median.sign_flip_p == pytest.approx(0.5)
    assert median.holm_p == pytest.approx(0.5)  # two tested cells: max(2 · 0.25, 1 · 0.5)
    private = gains[("fedsa", 8.0)].median_client
    assert private.mean == pytest.approx(-0.1) and private.sign_flip_p == pytest.approx(0.25)
    client = fedsa.per_client["client-0"]
    assert client.n == 3 and client.mean == pytest.approx(0.03)
    assert set(fedsa.per_client) == {"client-0", "client-1", "client-2"}
    # the per-client table is one family of 6 (2 cells x 3 clients)
    assert client.holm_p == pytest.approx(min(1.0, 6 * client.sign_flip_p))


def test_gain_from_joining_uses_shared_clients_and_skips_empty_rows():
    rows = [
        _row("local", math.inf, 0, {"client-0": 0.5, "client-1": 0.6}),
        _row("fedsa", math.inf, 0, {"client-0": 0.7, "client-9": 0.1}),
        _row("ffa", math.inf, 0, {}),  # per-client accuracy not recorded: left out
    ]
    gains = gain_from_joining(rows)
    assert gains[("fedsa", math.inf)].per_client["client-0"].mean == pytest.approx(0.2)
    assert set(gains[("fedsa", math.inf)].per_client) == {"client-0"}
    assert ("ffa", math.inf) not in gains
    with pytest.raises(ValueError, match="not a number"):
        gain_from_joining([dict(rows[1], accuracy_per_client={"client-0": "high"})])


def test_gain_table_in_the_summary():
    spec = SweepSpec(RunConfig(), ("fedsa",), (math.inf, 8.0), (0, 1, 2, 3), "cmd")
    text = render_summary(spec, _joining_rows())
    assert "| method | budget | seeds paired | median client's gain |" in text
    assert "| FedSA-LoRA | no DP | 3 of 4 | +0.010 ± " in text
    assert "| FedSA-LoRA | ε=8 | 3 | -0.100 ± 0.000 | 0.25 | 0.25 | 0.5 | no |" in text
    assert "| local only | no DP |" in text  # the alone row of the accuracy table
    assert "Gain from joining per client" in text and "| client-0 | client-1 | client-2 |" in text
    assert "Holm-adjusted sign-flip p < 0.05 within this table" in text
    # the docs copy the summary from "Test accuracy" to "Majority-class reference": the median
    # client's table is inside, the per-client table after it
    assert text.index("median client's gain |") < text.index("Gain from joining per client")


def test_gain_not_measured_without_per_client_accuracy():
    rows = [dict(r, accuracy_per_client={}) for r in _joining_rows()]
    spec = SweepSpec(RunConfig(), ("fedsa",), (math.inf, 8.0), (0, 1, 2, 3), "cmd")
    text = render_summary(spec, rows)
    assert "Gain from joining: not measured: no cell shares a seed and a client" in text
    assert "median client's gain |" not in text


@pytest.mark.parametrize(
    ("accountant", "words"),
    [
        ("prv", "add/remove-one neighbours (Opacus PRV/RDP; made before the replace-one"),
        ("rdp", "add/remove-one neighbours (Opacus PRV/RDP; made before the replace-one"),
        ("pld", "replace-one neighbours (dp_accounting PLD)"),
        ("gdp", "unknown"),
        (None, "unknown"),
    ],
)
def test_accounting_text(accountant, words):
    assert words in accounting_text(accountant)


def test_summary_states_the_accounting():
    rows = _joining_rows()
    legacy = RunConfig(accountant="rdp", version=3)  # a sweep made before the correction
    spec = SweepSpec(legacy, ("fedsa",), (math.inf, 8.0), (0, 1, 2), "c")
    assert "Privacy accounting: ε accounted under add/remove-one neighbours" in render_summary(
        spec, rows
    )
    now = SweepSpec(RunConfig(), ("fedsa",), (math.inf, 8.0), (0, 1, 2), "c")
    assert "ε accounted under replace-one neighbours" in render_summary(now, rows)
    plain = SweepSpec(RunConfig(), ("fedsa",), (math.inf,), (0, 1, 2), "c")
    no_dp = [r for r in rows if math.isinf(r["epsilon_target"])]
    assert "Privacy accounting: none (no cell uses DP)." in render_summary(plain, no_dp)


def test_curve_draws_alone_as_a_reference_line():
    from secure_fedsa.app.sweep.plot import build_figure

    rows = _joining_rows()
    figure = build_figure(rows, title="t", methods=["fedsa"])
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert "alone (local, no DP)" in lines
    mean = sum(sum(a.values()) / 3 for a in ALONE.values()) / 3
    assert lines["alone (local, no DP)"].get_ydata()[0] == pytest.approx(mean)
    # with local among the methods, its no-DP result is that line, not a second dashed one
    both = build_figure(rows, title="t", methods=["fedsa", "local"])
    labels = [line.get_label() for line in both.axes[0].get_lines()]
    assert "local only, no DP" not in labels and labels.count("alone (local, no DP)") == 1
    without = build_figure([r for r in rows if r["method"] != "local"], title="t")
    assert "alone (local, no DP)" not in [x.get_label() for x in without.axes[0].get_lines()]


# --------------------------------------------------------------------------- the alone cells
def test_alone_cells_are_added_first_in_every_seed():
    spec = SweepSpec(RunConfig(), ("fedsa", "ffa"), (8.0,), (0, 1))
    names = [c.name for c in spec.cells()]
    assert names == [
        "local-epsinf-seed0",
        "fedsa-eps8-seed0",
        "ffa-eps8-seed0",
        "local-epsinf-seed1",
        "fedsa-eps8-seed1",
        "ffa-eps8-seed1",
    ]
    assert spec.table_methods() == ("fedsa", "ffa", "local")
    assert spec.table_epsilons() == (math.inf, 8.0)
    already = SweepSpec(RunConfig(), ("fedsa", "local"), (math.inf, 8.0), (0,))
    assert len(already.cells()) == 4 and not already.alone_added()
    opted_out = SweepSpec(RunConfig(), ("fedsa",), (8.0,), (0, 1), alone=False)
    assert [c.name for c in opted_out.cells()] == ["fedsa-eps8-seed0", "fedsa-eps8-seed1"]


def test_alone_cell_keeps_the_head_local_under_a_shared_head_sweep():
    spec = SweepSpec(RunConfig(head="shared"), ("fedit",), (8.0,), (0,))
    spec.check()  # local with a shared head would be refused: the alone cell keeps it local
    alone = spec.cells()[0].config(spec.base)
    assert (alone.method, alone.head, alone.dp) == ("local", "local", False)


def test_spec_versions():
    spec = SweepSpec(RunConfig(num_layers=1), ("fedsa",), (8.0,), (0, 3), "cmd")
    data = spec.to_dict()
    assert data["version"] == 2 and data["alone"] is True
    assert SweepSpec.from_dict(data) == spec
    old = dict(data, version=1)
    old.pop("alone")
    legacy = SweepSpec.from_dict(old)
    assert legacy.alone is False and len(legacy.cells()) == 2  # exactly its old cells
    assert not legacy.same_cells(spec)  # the same command today adds the alone cells
    assert legacy.same_cells(SweepSpec.from_dict(dict(data, alone=False)))
    with pytest.raises(ConfigError, match="this version can read"):
        SweepSpec.from_dict(dict(data, version=3))


def test_same_cells_ignores_alone_where_the_cells_hold_it():
    old = SweepSpec(RunConfig(), ("fedsa", "local"), (math.inf, 8.0), (0,), alone=False)
    new = SweepSpec(RunConfig(), ("fedsa", "local"), (math.inf, 8.0), (0,), "other words")
    assert old.same_cells(new)


@pytest.mark.parametrize(
    "path",
    sorted((ROOT / "benchmarks" / "results").glob("*/sweep.json")),
    ids=lambda p: p.parent.name,
)
def test_committed_sweeps_keep_their_cells(path):
    data = json.loads(path.read_text())
    spec = SweepSpec.from_dict(data)
    if data["version"] == 1:
        expected = len(data["methods"]) * len(data["epsilons"]) * len(data["seeds"])
        assert len(spec.cells()) == expected


def test_no_alone_option(tmp_path):
    from secure_fedsa.app.cli import build_parser
    from secure_fedsa.app.sweep.command import spec_from_args

    parser = build_parser()
    sweep_parser = parser._subparsers._group_actions[0].choices["sweep"]
    base = ["sweep", "--methods", "fedsa", "--epsilons", "8", "--seeds", "2"]
    spec = spec_from_args(parser.parse_args(base), sweep_parser)
    assert spec.alone and len(spec.cells()) == 4
    spec = spec_from_args(parser.parse_args([*base, "--no-alone"]), sweep_parser)
    assert not spec.alone and len(spec.cells()) == 2
    assert "--no-alone" in spec.command


def test_a_sweep_from_before_the_alone_cells_is_named_as_such(tmp_path):
    from secure_fedsa.app.sweep.runner import open_sweep_dir

    spec = SweepSpec(RunConfig(), ("fedsa",), (8.0,), (0,), "cmd")
    old = dict(spec.to_dict(), version=1)
    old.pop("alone")
    (tmp_path / "sweep.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match="without its alone cells.*--no-alone"):
        open_sweep_dir(spec, tmp_path)
    assert not open_sweep_dir(
        SweepSpec(RunConfig(), ("fedsa",), (8.0,), (0,), alone=False), tmp_path
    )
    assert open_sweep_dir(spec, tmp_path / "new")  # a new sweep gets version 2
    assert json.loads((tmp_path / "new" / "sweep.json").read_text())["version"] == 2


def test_the_one_sided_sign_flip_test_of_a_margin():
    from secure_fedsa.app.sweep.significance import sign_flip_p_above

    # ten seeds all 3 points ahead: d - 0.02 all positive, only the all-plus pattern reaches it
    assert sign_flip_p_above([0.03] * 10, 0.02) == pytest.approx(1 / 1024)
    # all exactly at the margin: every pattern sums to 0 >= 0
    assert sign_flip_p_above([0.02] * 5, 0.02) == 1.0
    # below the margin: never evidence
    assert sign_flip_p_above([0.01] * 6, 0.02) == 1.0
    # hand count: d - m = (+1, +1, -1) -> sums over 8 patterns >= 1: (+,+,-)=1, (+,+,+)=3,
    # (+,-,+)... = 1, (-,+,+) = 1 -> 4 of 8
    assert sign_flip_p_above([3, 3, 1], 2) == pytest.approx(4 / 8)
