"""Secrets kept out of sight: files only their owner can read, and text with secrets masked.

- :func:`write_private` creates a file with mode 600 from its first byte (a file written and then
  ``chmod``-ed is readable by anyone for the moments in between), and replaces it atomically.
- :func:`redact` masks every secret in a settings document: values of keys that name a secret
  (``password``, ``secret``, ``token``, ``s3_key``) and the password inside any URL
  (``postgresql://u:***@h/db``). ``fjord config show`` prints what it returns.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

MASK = "***"
_SECRET_KEY = re.compile(r"(password|secret|token|s3_key|api_key|jwt)", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@/\s]+)(?P<at>@)", re.I)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only (mode 600) from the start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(descriptor, 0o600)  # an existing file keeps its mode otherwise
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def mask_urls(text: str) -> str:
    """``text`` with the password of every URL in it masked."""
    return _URL_PASSWORD.sub(lambda m: f"{m['head']}{MASK}{m['at']}", text)


def redact(data: Any, key: str = "") -> Any:
    """A copy of a settings document (dicts, lists, strings) with every secret masked."""
    if isinstance(data, dict):
        return {k: redact(v, str(k)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v, key) for v in data]
    if data is not None and _SECRET_KEY.search(key):
        return MASK
    if isinstance(data, str):
        return mask_urls(data)
    return data
