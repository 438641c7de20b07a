"""Problems found in rule files: each names the file, line, column and rule."""
from __future__ import annotations

from dataclasses import dataclass

from service.policy.model import Location


@dataclass(frozen=True)
class Problem:
    location: Location
    message: str
    rule_id: str | None = None
    level: str = "error"  # error | warning
    code: str = "schema"

    def __str__(self) -> str:
        rule = f" [{self.rule_id}]" if self.rule_id else ""
        return f"{self.location}: {self.level}{rule}: {self.message} ({self.code})"

    def to_dict(self) -> dict:
        return {
            "file": self.location.file, "line": self.location.line, "column": self.location.column,
            "rule_id": self.rule_id, "level": self.level, "code": self.code, "message": self.message,
        }


class RulePackError(Exception):
    """A rule pack that cannot be used. ``problems`` lists every problem found, not the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.level == "error"]
        head = "; ".join(str(p) for p in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        super().__init__(f"rule pack has {len(errors)} error(s): {head}{more}")
