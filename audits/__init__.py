"""Independent audits of a finished (or interrupted) run directory.

Audits read only what a run wrote to disk (configuration, setup, metrics, per-client privacy
ledgers, egress records, the server's key bundle) and re-derive every claim from it, without
calling the code that wrote those files. ``secure-fedsa audit RUN_DIR`` writes ``report.json``
and a self-contained ``report.html``; ``--bundle OUT`` writes the auditor bundle (those files and
nothing secret, with a SHA-256 manifest), which the same command audits. The core
(``secure_fedsa``) never imports this package.
"""

from audits.result import CheckResult, Status

__all__ = ["CheckResult", "Status"]
