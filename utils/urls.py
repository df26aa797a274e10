"""Masking of credentials before anything is shown, logged or stored.

Two places hold secrets in a URL: the password of its user part (`postgresql://u:pw@host/db`)
and query parameters named like a secret (`?password=…`, `?token=…`, `?api_key=…`). Both are
replaced by `***`, in one URL (`mask_url`) or anywhere in a text (`mask_secrets`, for error
messages and log lines). Settings are masked by key name too (`is_secret_key`).
"""

from __future__ import annotations

import re

# The password runs to the last '@' before the host: a password holding a raw '@' is masked whole.
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^/\s]*)@")
SECRET_NAMES = (
    "password", "passwd", "pwd", "pass", "secret", "client_secret", "token", "access_token", "refresh_token", "auth",
    "api_key", "apikey", "key", "sig", "signature", "sslpassword", "credentials",
)  # fmt: skip
_PARAM = re.compile(r"(?P<lead>[?&;](?:" + "|".join(SECRET_NAMES) + r")=)[^&#\s'\"]*", re.IGNORECASE)
_KEY = re.compile(
    r"(^|[_.\-])(" + "|".join(n for n in SECRET_NAMES if n not in ("key", "auth", "pass", "sig")) + r")($|[_.\-])", re.IGNORECASE
)


def mask_url(url: str) -> str:
    """`url` with its password and secret query parameters replaced by `***`
    (`postgresql://u:***@host/db?sslpassword=***`)."""
    return _PARAM.sub(r"\g<lead>***", _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url))


def mask_secrets(text: str) -> str:
    """Mask every URL password and secret URL parameter found anywhere in `text`."""
    return mask_url(text)


def is_secret_key(name: str) -> bool:
    """Whether a setting's name says it holds a secret (password, token, api_key, …)."""
    return bool(_KEY.search(name))


def has_secret(value: object) -> bool:
    """Whether a value holds a credential: a URL with a password or a secret parameter."""
    return isinstance(value, str) and mask_url(value) != value
