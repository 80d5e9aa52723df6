"""One check's outcome: a name, a plain statement, a result and the evidence behind it; and the
overall verdict, in the one vocabulary every output uses (PASS, WARN, FAIL, INCONCLUSIVE)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from audits.advice import COULD_NOT_VERIFY, advice_for

Status = Literal["pass", "inconclusive", "warn", "fail", "error"]
Scope = Literal["run", "installed-mechanism"]
RUN: Scope = "run"
# a check of the code installed where the audit runs, not of the run's files (the canary test):
# its pass is shown as "consistent", never as a pass of the run
INSTALLED_MECHANISM: Scope = "installed-mechanism"
Verdict = Literal["PASS", "WARN", "FAIL", "INCONCLUSIVE"]

# "inconclusive": the check ran but had no power to decide (e.g. a claimed ε above what the
# chosen number of canaries can certify): never shown as a pass.
# "error": the check could not be carried out (evidence missing or unreadable). It is never a
# pass: the overall verdict treats it like a failure (FAIL); only a check's badge says ERROR.
SEVERITY: dict[str, int] = {"pass": 0, "inconclusive": 1, "warn": 2, "fail": 3, "error": 4}
VERDICT_WORDS: dict[str, Verdict] = {
    "pass": "PASS",
    "inconclusive": "INCONCLUSIVE",
    "warn": "WARN",
    "fail": "FAIL",
}
# the verdicts with which the CLI exits 0 (nothing failed, nothing unverifiable)
NOT_FAILED: frozenset[str] = frozenset({"PASS", "WARN", "INCONCLUSIVE"})


@dataclass
class CheckResult:
    name: str
    statement: str
    status: Status = "pass"
    findings: list[str] = field(default_factory=list)  # why it is not a pass (one per problem)
    evidence: dict[str, Any] = field(default_factory=dict)
    # what to do about each warn / inconclusive / error finding: {finding, code, advice}
    advice: list[dict[str, str]] = field(default_factory=list)
    scope: Scope = RUN

    def fail(self, message: str) -> None:
        self._raise_to("fail", message)

    def warn(self, message: str, *, code: str | None = None) -> None:
        """A warning; ``code`` names its advice in :data:`audits.advice.ADVICE`."""
        self._raise_to("warn", message)
        self._advise(code, advice_for(code))

    def error(self, message: str) -> None:
        self._raise_to("error", message)
        self._advise("could-not-verify", COULD_NOT_VERIFY)

    def inconclusive(self, message: str, *, code: str | None = None) -> None:
        self._raise_to("inconclusive", message)
        self._advise(code, advice_for(code))

    def note(self, message: str) -> None:
        """A finding that does not change the result (e.g. the limits of what was verified)."""
        self.findings.append(f"note: {message}")

    def _raise_to(self, status: Status, message: str) -> None:
        self.findings.append(f"{status}: {message}")
        if SEVERITY[status] > SEVERITY[self.status]:
            self.status = status

    def _advise(self, code: str | None, advice: str) -> None:
        self.advice.append({"finding": self.findings[-1], "code": code or "", "advice": advice})

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "statement": self.statement,
            "result": self.status,
            "findings": list(self.findings),
            "advice": [dict(a) for a in self.advice],
            "evidence": self.evidence,
            "scope": self.scope,
        }


def shown_result(check: dict[str, Any]) -> str:
    """The result word a report shows for ``check`` (a :meth:`CheckResult.to_dict`): an
    installed-mechanism test that passed reads "consistent", never "pass"."""
    result = str(check.get("result", "error"))
    if check.get("scope") == INSTALLED_MECHANISM and result == "pass":
        return "consistent"
    return result


def of_the_run(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The checks of the run's own files (a check without a scope is one)."""
    return [c for c in checks if c.get("scope", RUN) == RUN]


def verdict(results: list[CheckResult]) -> Status:
    """The worst result; "error" (could not verify) counts as "fail" for the verdict."""
    worst = max((SEVERITY[r.status] for r in results), default=SEVERITY["error"])
    if worst >= SEVERITY["fail"]:
        return "fail"
    return next(name for name, rank in SEVERITY.items() if rank == worst)  # type: ignore[return-value]


def verdict_word(results: list[CheckResult]) -> Verdict:
    """The overall verdict as report.json, the HTML report and the CLI all write it."""
    return VERDICT_WORDS[verdict(results)]
