"""Errors the user sees as one line (the CLI prints them without a traceback)."""
from __future__ import annotations


class TestbedError(Exception):
    """Any error caused by input or environment, shown to the user as a single line."""

    __test__ = False  # not a pytest test class


class SpecError(TestbedError):
    """A spec file breaks a rule: names the file, line, element and the rule."""

    def __init__(self, source: str, where: str, rule: str, line: int | None = None):
        self.source, self.where, self.rule, self.line = source, where, rule, line
        super().__init__(str(self))

    def __str__(self) -> str:
        loc = f"{self.source}:{self.line}" if self.line else self.source
        return f"{loc}: {self.where}: {self.rule}" if self.where else f"{loc}: {self.rule}"


class CapabilityError(TestbedError):
    """The machine cannot do what was asked (missing tool, kernel feature, or privilege)."""
