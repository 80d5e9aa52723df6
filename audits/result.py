"""One check's outcome: a name, a plain statement, a result and the evidence behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["pass", "inconclusive", "warn", "fail", "error"]

# "inconclusive": the check ran but had no power to decide (e.g. a claimed ε above what the
# chosen number of canaries can certify): never shown as a pass.
# "error": the check could not be carried out (evidence missing or unreadable). It is never a
# pass: the overall verdict treats it like a failure.
SEVERITY: dict[str, int] = {"pass": 0, "inconclusive": 1, "warn": 2, "fail": 3, "error": 4}


@dataclass
class CheckResult:
    name: str
    statement: str
    status: Status = "pass"
    findings: list[str] = field(default_factory=list)  # why it is not a pass (one per problem)
    evidence: dict[str, Any] = field(default_factory=dict)

    def fail(self, message: str) -> None:
        self._raise_to("fail", message)

    def warn(self, message: str) -> None:
        self._raise_to("warn", message)

    def error(self, message: str) -> None:
        self._raise_to("error", message)

    def inconclusive(self, message: str) -> None:
        self._raise_to("inconclusive", message)

    def note(self, message: str) -> None:
        """A finding that does not change the result (e.g. the limits of what was verified)."""
        self.findings.append(f"note: {message}")

    def _raise_to(self, status: Status, message: str) -> None:
        self.findings.append(f"{status}: {message}")
        if SEVERITY[status] > SEVERITY[self.status]:
            self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "statement": self.statement,
            "result": self.status,
            "findings": list(self.findings),
            "evidence": self.evidence,
        }


def verdict(results: list[CheckResult]) -> Status:
    """The worst result; "error" (could not verify) counts as "fail" for the verdict."""
    worst = max((SEVERITY[r.status] for r in results), default=SEVERITY["error"])
    if worst >= SEVERITY["fail"]:
        return "fail"
    return next(name for name, rank in SEVERITY.items() if rank == worst)  # type: ignore[return-value]
