"""What a doctor check reports: findings, each with its evidence and its fix."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = ["STATUSES", "Finding", "Report", "Status"]

Status = Literal["ok", "info", "warning", "problem"]
STATUSES: Final[tuple[Status, ...]] = ("ok", "info", "warning", "problem")


@dataclass(slots=True)
class Finding:
    """One thing a check found.

    ``check`` names it ("unix.stale"); ``summary`` says what was found in one sentence;
    ``evidence`` lists what it was read from (file modes, /proc lines, pids); ``fix`` says
    what to do (None when nothing needs doing); ``data`` carries the same facts for tools.
    ``problem`` means something is wrong; ``warning`` means it will bite under some use.
    """

    check: str
    status: Status
    summary: str
    evidence: list[str] = field(default_factory=list)
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "check": self.check,
            "status": self.status,
            "summary": self.summary,
            "evidence": list(self.evidence),
            "fix": self.fix,
            "data": dict(self.data),
        }


@dataclass(slots=True)
class Report:
    """Everything one ``ipcwire doctor`` target gave."""

    target: str
    findings: list[Finding] = field(default_factory=list)

    def add(
        self,
        check: str,
        status: Status,
        summary: str,
        evidence: list[str] | None = None,
        fix: str | None = None,
        **data: Any,
    ) -> Finding:
        """Record a finding and return it."""
        finding = Finding(check, status, summary, evidence or [], fix, data)
        self.findings.append(finding)
        return finding

    @property
    def problems(self) -> list[Finding]:
        """The findings that say something is wrong."""
        return [f for f in self.findings if f.status == "problem"]

    def find(self, check: str) -> list[Finding]:
        """The findings of one check (``"unix.stale"``) or family (``"unix."``)."""
        if check.endswith("."):
            return [f for f in self.findings if f.check.startswith(check)]
        return [f for f in self.findings if f.check == check]

    @property
    def ok(self) -> bool:
        """True when no finding is a problem."""
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        return {
            "target": self.target,
            "ok": self.ok,
            "problems": len(self.problems),
            "findings": [f.as_dict() for f in self.findings],
        }
