"""Masking of credentials in database and HTTP URLs before they are shown or stored."""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@")


def mask_url(url: str) -> str:
    """Return `url` with any password replaced by `***` (`postgresql://u:***@host/db`)."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def mask_secrets(text: str) -> str:
    """Mask every URL password found anywhere in `text` (error messages, log lines)."""
    return mask_url(text)
