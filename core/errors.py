"""Domain errors. Each carries a stable snake_case ``code`` and a message that says what to change.

The APIs map these onto HTTP in one function each; workers record them with the event.
"""

from __future__ import annotations


class StratumError(Exception):
    """Base of every error a user of Stratum can cause."""

    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.field = field

    def as_dict(self) -> dict[str, str]:
        out = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


class InvalidIdentifier(StratumError):
    """A value is not valid for its identifier type (bad email syntax, unparsable phone...)."""

    code = "invalid_identifier"


class BlockedIdentifier(StratumError):
    """A value that must never identify anyone (``undefined``, ``0``, ``guest``...)."""

    code = "blocked_identifier"


class InvalidEvent(StratumError):
    """An event that cannot be accepted as sent."""

    code = "invalid_event"
