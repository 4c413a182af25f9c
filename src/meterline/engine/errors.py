"""The one exception the engine raises: a business rule that input breaks."""

from __future__ import annotations


class RuleViolation(Exception):
    def __init__(self, param: str | None, message: str, code: str = "parameter_invalid") -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code
