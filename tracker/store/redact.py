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
# A URI's userinfo: from just after "scheme://" to the LAST "@" of the same run of non-space
# characters, so that "/", "@" and ":" inside a password (http://u:p@ss@h, postgresql://u:pa/ss@h)
# are all inside it. It never starts with "/" (file:///a@b.db is a path) and never reaches into
# the next URI. Only text after "://" is looked at: an email address in a message is left alone.
# The cost: a URL whose path holds an "@" loses the part before it too; better than a password.
_USERINFO = re.compile(r"(?<=://)(?!/)(?P<userinfo>(?:(?!://)\S)*)@")
_SIGNED_QUERY = re.compile(
    r"([?&](?:X-Amz-[A-Za-z-]+|sig|signature|token|access_token)=)[^&\s]+",
    re.IGNORECASE,
)
# password=... in a query string, a libpq DSN ("host=h password=x"), an environment dump
# (MLFLOW_TRACKING_PASSWORD=x), or a JSON/dict body ("password": "x"); quoted values may hold
# spaces. A bare "password: " is prose ("no password: set ..."), not a value.
_KEY = r"(?:\w*(?:password|passwd)|pwd)"
_PASSWORD_KV = re.compile(
    rf"""(\b{_KEY}\s*=\s*|["']{_KEY}["']\s*:\s*)('[^']*'|"[^"]*"|[^\s&,;'")}}\]]+)""",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(r"\b(Basic|Bearer)\s+[A-Za-z0-9._~+/=-]+")


def userinfo_of(uri: str) -> str | None:
    """The user name and password of one URI as written (what redact hides), or None."""
    start = uri.find("://")
    m = _USERINFO.match(uri, start + 3) if start >= 0 else None
    return m.group("userinfo") if m else None


def redact(text: str) -> str:
    """Remove credentials from text meant for a message or a log: one line, no secrets."""
    text = str(text)
    # key=value first: a value may hold an "@" that would otherwise end a URI's userinfo early
    text = _PASSWORD_KV.sub(_masked_value, text)
    text = _SIGNED_QUERY.sub(r"\1***", text)
    text = _USERINFO.sub("***@", text)  # say that credentials were there, not which
    text = _AUTH_HEADER.sub(r"\1 ***", text)
    for var in _SECRET_ENV_VARS:
        secret = os.environ.get(var)
        if secret and len(secret) >= 4:  # masking "a" would garble every message
            text = text.replace(secret, "***")
    return " ".join(text.split())


def _masked_value(m: re.Match) -> str:
    """`password: 'x y'` -> `password: '***'`: keep the quotes, so JSON stays JSON."""
    value = m.group(2)
    quote = value[0] if value[0] in "'\"" else ""
    return f"{m.group(1)}{quote}***{quote}"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one redacted line, "Type: message", at most `limit` characters."""
    text = redact(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= limit else text[: limit - 3] + "..."
