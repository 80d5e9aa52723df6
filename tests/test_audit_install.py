"""The audit on the install the auditor's guide names (issue: "the auditor's install").

The guide says `make install`, which installs the package without its test extras. These tests
run the audit in a fresh interpreter in which the test-only packages cannot be imported, and
check that a package that is really missing is reported as a problem with the installation (exit
2, what to install, nothing written), never as bad evidence. `.ci/plain-install-audit.sh` does
the same from a virtual environment built by `make install` alone.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TEST_ONLY = ("pytest", "_pytest", "hypothesis", "ruff")

BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys
    BLOCKED = {blocked!r}

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    sys.meta_path.insert(0, Blocker())
    from secure_fedsa.app.cli import main
    sys.exit(main({argv!r}))
    """
)


def _audit_without(blocked: tuple[str, ...], argv: list[str]) -> subprocess.CompletedProcess:
    code = BLOCKER.format(blocked=blocked, argv=argv)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


def test_the_audit_runs_without_the_test_extras(audited_run, tmp_path):
    out = tmp_path / "report"
    done = _audit_without(TEST_ONLY, ["audit", str(audited_run), "--out", str(out)])
    assert done.returncode == 0, done.stdout + done.stderr  # WARN: small clients
    assert "PASS          accounting" in done.stdout
    assert "ERROR" not in done.stdout
    assert (out / "report.html").is_file()


def test_a_missing_package_is_a_tool_problem_not_bad_evidence(audited_run, tmp_path):
    out = tmp_path / "report"
    done = _audit_without(("scipy",), ["audit", str(audited_run), "--out", str(out)])
    assert done.returncode == 2, done.stdout + done.stderr
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("error: the audit needs the Python package 'scipy'")
    assert "says nothing about the run" in error and "make install" in error
    assert "FAIL" not in done.stdout and not out.exists()  # no verdict, nothing written


def test_a_directory_that_is_not_a_run_is_refused_and_left_alone(tmp_path, capsys):
    from secure_fedsa.app.cli import main

    stranger = tmp_path / "photos"
    stranger.mkdir()
    (stranger / "holiday.txt").write_text("not a run")
    assert main(["audit", str(stranger)]) == 2
    assert "neither a run directory nor an auditor bundle" in capsys.readouterr().err
    assert sorted(p.name for p in stranger.iterdir()) == ["holiday.txt"]


def test_the_guides_install_holds_everything_the_audit_imports():
    """Every third-party module the audits import is a runtime dependency, not a test extra."""
    import ast

    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    runtime = " ".join(project["dependencies"]).lower().replace("-", "_")
    test_extra = " ".join(project["optional-dependencies"]["test"]).lower().replace("-", "_")
    stdlib = set(sys.stdlib_module_names)
    imported = set()
    for path in (root / "audits").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    third_party = imported - stdlib - {"audits", "secure_fedsa", "__future__"}
    for module in sorted(third_party):
        assert module.lower() in runtime, f"audits import {module}, not a runtime dependency"
        assert module.lower() not in test_extra
