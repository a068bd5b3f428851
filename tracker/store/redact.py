"""The one redactor: credentials out of any text meant for a message, a log, a tag or a file."""

from __future__ import annotations

import os
import re

_SECRET_ENV_VARS = (
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
)
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_SIGNED_QUERY = re.compile(
    r"([?&](?:X-Amz-[A-Za-z-]+|sig|signature|token|access_token|password)=)[^&\s]+",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9._~+/=-]+")


def redact(text: str) -> str:
    """Remove credentials from text meant for a message or a log: one line, no secrets."""
    text = _USERINFO.sub("***@", str(text))  # say that credentials were there, not which
    text = _SIGNED_QUERY.sub(r"\1***", text)
    text = _AUTH_HEADER.sub(r"\1 ***", text)
    for var in _SECRET_ENV_VARS:
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:  # masking "a" would garble every message
            text = text.replace(secret, "***")
    return " ".join(text.split())


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one redacted line, "Type: message", at most `limit` characters."""
    text = redact(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= limit else text[: limit - 3] + "..."
