"""The errors a tracking store raises; each message is one line and carries no credentials."""

from __future__ import annotations


class TrackingError(RuntimeError):
    """The tracking store cannot be used; the message says what and how to go on."""


class TrackingUnavailable(RuntimeError):
    """The tracking URI cannot be used: malformed, unreachable, refused, or stuck on a lock."""


class StoreError(RuntimeError):
    """A store operation failed, or its result could not be confirmed."""


class StorePermissionError(StoreError):
    """The store refused the operation (401/403); retrying would not help."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class StoreUnavailable(StoreError):
    """Transient failures (connection errors, 5xx) outlasted the retry budget."""


class DeleteUnsupported(StoreError):
    """The artifact repository for this scheme cannot delete; callers turn this into a warning."""

