"""A package the audit needs is missing: a problem with the installation, not with the run."""

from __future__ import annotations

from secure_fedsa.errors import ToolMissing


def tool_missing(exc: ImportError) -> ToolMissing:
    """The error for a package that is not installed (exit code 2, never a verdict)."""
    name = (exc.name or str(exc)).split(".")[0]
    return ToolMissing(
        f"the audit needs the Python package {name!r}, which is not installed in this "
        f"environment ({exc}). This says nothing about the run: install secure-fedsa as "
        "docs/auditor-guide.md says (`make install`, or `pip install .` in the repository), "
        "then audit again"
    )
