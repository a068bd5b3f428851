"""The one retry helper for tracking-store calls: classify a failure, back off, give up clearly.

Permission errors are raised at once, transient ones (connection refused, 5xx) are retried with
jittered exponential backoff within a time budget, anything else is a plain StoreError. The
original exceptions are never chained: their text may hold credentials.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass

from mlflow.exceptions import MlflowException, RestException

from tracker.store.errors import StoreError, StorePermissionError, StoreUnavailable
from tracker.store.redact import one_line as _summary

_log = logging.getLogger("hype.stores")


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient failures, bounded in total time.

    The bound covers our own attempts and sleeps: no attempt starts after `total_s`. One
    attempt is one call into MLflow, and MLflow's HTTP layer retries on its own first
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7, about 4 minutes at worst). Set that variable
    low (e.g. 0) in processes that need `total_s` to be the whole story.
    """

    total_s: float = 60.0  # give up once this much time has passed since the first attempt
    first_delay_s: float = 0.5  # sleep before the 2nd attempt; doubles after each failure
    max_delay_s: float = 8.0  # cap on one sleep, so a long budget still polls regularly

    def __post_init__(self):
        for name in ("total_s", "first_delay_s", "max_delay_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"RetryPolicy.{name} must be >= 0 seconds, got {value!r}")



# --- classifying failures --------------------------------------------------------------------

PERMISSION, TRANSIENT, NOT_FOUND = "permission", "transient", "not_found"
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_MLFLOW_CODES = frozenset(
    {"INTERNAL_ERROR", "TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED"}
)
_PERMISSION_MLFLOW_CODES = frozenset({"PERMISSION_DENIED", "UNAUTHENTICATED"})
# A database server (PostgreSQL, MySQL) that is down or restarting, or one that refused the
# credentials: DB-API drivers say so only in the text of an OperationalError.
_SQL_DOWN = ("Connection refused", "timeout expired", "server closed the connection unexpectedly",
             "the database system is starting up", "Can't connect to MySQL server")
_SQL_REFUSED = ("password authentication failed", "Access denied for user")


def _http_status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)  # requests
    if status is None and isinstance(response, dict):  # botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def _classify_one(exc: BaseException) -> str | None:
    import requests

    if isinstance(exc, PermissionError):
        return PERMISSION
    if "database is locked" in str(exc):  # SQLite: another writer holds the lock for a moment
        return TRANSIENT
    if type(exc).__name__ == "OperationalError":  # SQLAlchemy's, or the driver's own
        text = str(exc)
        if any(s in text for s in _SQL_REFUSED):
            return PERMISSION
        if any(s in text for s in _SQL_DOWN):
            return TRANSIENT
    if isinstance(exc, FileNotFoundError):
        return NOT_FOUND
    status = _http_status(exc)
    if status in (401, 403):
        return PERMISSION
    if status == 404:
        return NOT_FOUND
    if status in _TRANSIENT_STATUS:
        return TRANSIENT
    if isinstance(exc, MlflowException):
        if exc.error_code in _PERMISSION_MLFLOW_CODES:
            return PERMISSION
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return NOT_FOUND
        # A server that answered with an error body; a bare MlflowException with the default
        # INTERNAL_ERROR code is how MLflow wraps everything, so look at its cause instead.
        if isinstance(exc, RestException) and exc.error_code in _TRANSIENT_MLFLOW_CODES:
            return TRANSIENT
    if isinstance(
        exc,
        # RetryError: MLflow's own retries on 5xx ran out; ConnectionError covers refused,
        # reset and DNS failures.
        requests.ConnectionError | requests.Timeout | requests.exceptions.RetryError
        | ConnectionError | TimeoutError,
    ):
        return TRANSIENT
    return None


def classify(exc: BaseException) -> str | None:
    """PERMISSION, TRANSIENT, NOT_FOUND or None (a plain failure), from exc and its causes.

    MLflow's HTTP client re-raises connection failures as a bare MlflowException inside an
    `except` block, so the real cause is only on __context__.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        kind = _classify_one(exc)
        if kind is not None:
            return kind
        exc = exc.__cause__ or exc.__context__
    return None


class _Missing(Exception):
    """Internal: the store said the path does not exist."""


def call_with_retry(what: str, fn, policy: RetryPolicy, *, missing_ok: bool = False):
    """Run fn(); retry transient failures with backoff until policy.total_s has passed.

    `what` names the operation and target for messages. Permission errors are raised at once
    as StorePermissionError; with missing_ok, "not found" raises _Missing for the caller.
    Original exceptions are not chained: their text may hold credentials.
    """
    start = time.monotonic()
    delay = policy.first_delay_s
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except StoreError:
            raise  # already ours, already worded
        except Exception as exc:
            kind = classify(exc)
            if kind == PERMISSION:
                raise StorePermissionError(
                    f"{what}: permission denied ({_summary(exc)})", status=_http_status(exc)
                ) from None
            if kind == NOT_FOUND and missing_ok:
                raise _Missing() from None
            if kind != TRANSIENT:
                raise StoreError(f"{what} failed: {_summary(exc)}") from None
            elapsed = time.monotonic() - start
            remaining = policy.total_s - elapsed
            if remaining <= 0:
                raise StoreUnavailable(
                    f"{what} still failing after {attempt} attempts over {elapsed:.1f} s "
                    f"(retry budget {policy.total_s:g} s): {_summary(exc)}"
                ) from None
            if attempt == 1:  # say it once, so that a long wait is not silent
                _log.warning("tracking store unreachable (%s): %s; retrying for up to %.0f s",
                             _summary(exc), what, remaining)
            # Jitter keeps several trainers that lost the same server from retrying in step.
            time.sleep(min(delay * random.uniform(0.8, 1.2), remaining))
            delay = min(delay * 2, policy.max_delay_s)

