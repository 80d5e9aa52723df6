"""`secure-fedsa sweep` end to end on the one-layer model and 400 Rotten Tomatoes snippets.

One module-scoped sweep (2 methods x 2 budgets x 1 seed) is interrupted after two cells and
resumed; the tests below read what it wrote, and rerun it to check what is skipped.
"""

from __future__ import annotations

import csv
import json
import math

import pytest

from secure_fedsa.app.cli import main
from secure_fedsa.transports import federation

pytestmark = pytest.mark.integration

TINY = [
    "--num-layers", "1", "--max-examples", "400", "--partition", "iid", "--rounds", "1",
    "--local-steps", "2", "--batch-size", "32", "--physical-batch-size", "32",
    "--max-length", "24", "--eval-examples", "20", "--quiet",
]  # fmt: skip
SWEEP = ["--methods", "fedsa,local", "--epsilons", "inf,4", "--seeds", "1"]
CELLS = {"fedsa-epsinf-seed0", "local-epsinf-seed0", "fedsa-eps4-seed0", "local-eps4-seed0"}


def _argv(out):
    return ["sweep", *SWEEP, *TINY, "--out", str(out)]


class Calls:
    """Counts run_federation calls (and can interrupt one), then runs the real thing."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.real = federation.run_federation
        self.calls: list[tuple[str, bool]] = []
        self.interrupt_at = interrupt_at

    def __call__(self, config, run_dir, progress=None, *, resume=False):
        self.calls.append((run_dir.name, resume))
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        return self.real(config, run_dir, progress, resume=resume)


def _rows(out):
    with open(out / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _write_rows(out, rows, *, like):
    """Replace ``out``'s results.csv with ``rows`` (columns as in ``like``'s)."""
    with open(out / "results.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(_rows(like)[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "out"
    with pytest.MonkeyPatch.context() as mp:
        first = Calls(interrupt_at=3)
        mp.setattr(federation, "run_federation", first)
        interrupted = main(_argv(out))
        rows_after_interrupt = _rows(out)
        second = Calls()
        mp.setattr(federation, "run_federation", second)
        finished = main(_argv(out))
    return {
        "out": out,
        "codes": (interrupted, finished),
        "rows_after_interrupt": rows_after_interrupt,
        "first": first.calls,
        "second": second.calls,
    }


def test_interrupted_sweep_keeps_whole_rows_and_resumes(sweep):
    assert sweep["codes"] == (130, 0)
    assert len(sweep["rows_after_interrupt"]) == 2
    assert all(r["accuracy_mean"] for r in sweep["rows_after_interrupt"])
    # the third cell was interrupted before it wrote anything; the rerun ran only the last two
    assert [name for name, _ in sweep["first"]][:2] == ["fedsa-epsinf-seed0", "local-epsinf-seed0"]
    assert sweep["second"] == [("fedsa-eps4-seed0", False), ("local-eps4-seed0", False)]


def test_csv_has_every_cell(sweep):
    rows = _rows(sweep["out"])
    assert {r["cell"] for r in rows} == CELLS and len(rows) == 4
    for row in rows:
        per_client = json.loads(row["accuracy_per_client"])
        assert len(per_client) == 3
        assert float(row["accuracy_mean"]) == pytest.approx(sum(per_client.values()) / 3, abs=1e-9)
        assert row["encryption"] == "on" and float(row["wall_seconds"]) > 0
        if row["epsilon_target"] == "inf":
            assert row["dp"] == "off" and row["epsilon_spent_max"] == ""
        else:
            assert row["dp"] == "on" and float(row["delta"]) == 1e-5
            assert 0 < float(row["epsilon_spent_max"]) <= 4.0 + 1e-6
            assert float(row["noise_multiplier_max"]) > 0
    spec = json.loads((sweep["out"] / "sweep.json").read_text())
    assert spec["epsilons"] == ["inf", "4"] and spec["seeds"] == [0]


def test_rerun_skips_finished_cells(sweep, monkeypatch):
    out = sweep["out"]
    summaries = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/summary.json")}
    calls = Calls()
    monkeypatch.setattr(federation, "run_federation", calls)
    assert main(_argv(out)) == 0
    assert main(["sweep", "--resume", str(out), "--quiet"]) == 0
    assert calls.calls == []
    assert {p: p.stat().st_mtime_ns for p in summaries} == summaries


def test_a_rerun_in_other_words_keeps_the_summary_plot_only_gives(sweep, monkeypatch, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(sweep["out"], out)
    monkeypatch.setattr(federation, "run_federation", Calls())
    options = [TINY[i : i + 2] for i in range(0, len(TINY) - 1, 2)]  # (flag, value) pairs
    reordered = [x for pair in reversed(options) for x in pair] + ["--quiet"]
    assert main(["sweep", *SWEEP, *reordered, "--out", str(out)]) == 0
    written = (out / "summary.md").read_text()
    stored = json.loads((out / "sweep.json").read_text())["command"]
    assert stored in written  # the command that made the sweep, not this one's words
    assert main(["sweep", "--plot-only", str(out)]) == 0
    assert (out / "summary.md").read_text() == written


def test_half_finished_cell_is_resumed_and_lost_row_recovered(sweep, monkeypatch, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(sweep["out"], out)
    (out / "cells" / "fedsa-eps4-seed0" / "summary.json").unlink()  # interrupted cell
    rows = [r for r in _rows(out) if r["cell"] not in ("fedsa-eps4-seed0", "local-eps4-seed0")]
    _write_rows(out, rows, like=sweep["out"])  # row lost, summary kept
    calls = Calls()
    monkeypatch.setattr(federation, "run_federation", calls)
    assert main(["sweep", "--resume", str(out), "--quiet"]) == 0
    assert calls.calls == [("fedsa-eps4-seed0", True)]
    assert {r["cell"] for r in _rows(out)} == CELLS


def test_a_sweep_carried_with_its_small_files_keeps_its_rows(sweep, monkeypatch, tmp_path):
    """Another machine gets sweep.json and results.csv from the repository, no run directories:
    the rows are kept and only cells without a row run."""
    import shutil

    out = tmp_path / "carried"
    out.mkdir()
    for name in ("sweep.json", "results.csv"):
        shutil.copy2(sweep["out"] / name, out / name)
    rows = [r for r in _rows(out) if r["cell"] != "local-eps4-seed0"]
    _write_rows(out, rows, like=sweep["out"])  # one cell never finished
    calls = Calls()
    monkeypatch.setattr(federation, "run_federation", calls)
    assert main(["sweep", "--resume", str(out), "--quiet"]) == 0
    assert calls.calls == [("local-eps4-seed0", False)]
    assert {r["cell"] for r in _rows(out)} == CELLS
    assert (out / "summary.md").exists() and (out / "curve.svg").exists()


def test_curve_is_a_png_with_one_line_per_series(sweep):
    import matplotlib.image

    from secure_fedsa.app.sweep.plot import build_figure
    from secure_fedsa.app.sweep.results import parse_row, read_rows

    out = sweep["out"]
    png = out / "curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(png)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert (out / "curve.svg").read_text().lstrip().startswith("<?xml")
    rows = [parse_row(r) for r in read_rows(out / "results.csv")]
    figure = build_figure(rows, title="t", methods=["fedsa", "local"])
    # per method: DP line + no-DP reference; and one majority-class reference for all
    assert len(figure.axes[0].get_lines()) == 5
    labels = [line.get_label() for line in figure.axes[0].get_lines()]
    assert any(label.startswith("majority class") for label in labels)
    assert all(0 < r["majority_mean"] < 1 for r in rows)
    assert any(math.isinf(r["epsilon_target"]) for r in rows)
    summary = (out / "summary.md").read_text()
    assert "| FedSA-LoRA |" in summary and "secure-fedsa sweep" in summary
    assert "--epsilons inf,4" in summary and "encryption on" in summary.lower()
    assert "Majority-class reference: 0." in summary
    # two sweeps differing only in lr or clip must not read the same
    assert ", AdamW lr " in summary and ", clip " in summary
    assert "(fresh every round)" in summary  # the default; "(state kept across rounds)" if kept


def test_plot_only_redraws(sweep, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(sweep["out"], out)
    before = {n: (out / n).read_bytes() for n in ("curve.svg", "summary.md")}
    for name in ("curve.png", "curve.svg", "summary.md"):
        (out / name).unlink()
    assert main(["sweep", "--plot-only", str(out)]) == 0
    assert all((out / n).exists() for n in ("curve.png", "curve.svg", "summary.md"))
    # committed outputs: redrawing unchanged results changes no byte (no date, fixed SVG ids)
    assert {n: (out / n).read_bytes() for n in before} == before
    assert b"<dc:date>" not in before["curve.svg"]


def test_other_sweep_in_same_directory_is_refused(sweep, capsys):
    argv = ["sweep", "--methods", "fedsa", "--epsilons", "inf,4", "--seeds", "1", *TINY]
    code = main([*argv, "--out", str(sweep["out"])])
    err = capsys.readouterr().err
    assert code == 2 and "different sweep" in err


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--epsilons", "8,0"], "positive"),
        (["--epsilons", "8,-1"], "positive"),
        (["--epsilons", "eight"], "not a number"),
        (["--epsilons", ""], "empty"),
        (["--methods", "fedsa,fedprox"], "unknown method"),
        (["--methods", ","], "empty"),
        (["--seeds", "0"], "at least 1"),
        (["--method", "fedsa"], "--methods"),
        (["--epsilon", "3"], "--epsilons"),
        (["--no-dp"], "inf"),
        (["--rounds", "0"], "rounds"),
    ],
)
def test_bad_input_writes_nothing(tmp_path, capsys, monkeypatch, args, needle):
    calls = Calls()
    monkeypatch.setattr(federation, "run_federation", calls)
    out = tmp_path / "sweep"
    code = main(["sweep", *TINY, *args, "--out", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(err) == 1 and needle in err[0], err
    assert not out.exists() and calls.calls == []


def test_data_error_in_first_cell_leaves_nothing(tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(
        ["sweep", *SWEEP, *TINY, "--dataset", str(tmp_path / "missing.csv"), "--out", str(out)]
    )
    assert code == 2 and "missing.csv" in capsys.readouterr().err
    assert not out.exists()


def test_plot_only_needs_a_sweep(tmp_path, capsys):
    assert main(["sweep", "--plot-only", str(tmp_path)]) == 2
    assert "not a sweep directory" in capsys.readouterr().err
