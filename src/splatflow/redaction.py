"""The one redactor: every text that may reach a log, an error record or a message goes through :func:`redact`.

It removes, in this order:

1. the values of the secret settings (``SECRET_ENV``, or the files their ``<NAME>_FILE`` names) and, for values
   that look like URLs, each part a secret may sit in: the userinfo and its password, the path, the query, each
   query value, the fragment (so an error that quotes only part of a webhook URL, e.g. urllib's "URL can't
   contain control characters. '/services/T0/B1?token=...'", still leaks nothing);
2. in any URL-looking text (``scheme://...``), the userinfo (``user:password@``), the query string and the
   fragment, whatever the URL is and whether or not it parses (presigned links, tokens in query strings);
3. ``name=value`` pairs whose name says secret (``token``, ``password``, ``secret``, ``signature``, ``key``,
   ``credential`` ..., e.g. ``X-Amz-Signature=...``), wherever they appear.

URLs are split by hand, never with :mod:`urllib.parse`, so a malformed URL (a bad port, an unclosed IPv6
bracket, spaces) is redacted like any other.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

__all__ = [
    "MASK", "SECRET_ENV", "redact", "secret_values", "setting", "url_parts"
]

SECRET_ENV = ("SPLATFLOW_WEBHOOK_URL", "SPLATFLOW_NOTIFY_URL", "SPLATFLOW_SMTP_PASSWORD", "AWS_SECRET_ACCESS_KEY",
              "AWS_SESSION_TOKEN", "KFP_TOKEN", "KFP_COOKIE")
MASK = "[redacted]"
_MIN_SECRET = 4  # shorter values would redact ordinary words
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]{0,15}://[^\s'\"<>`]*")
_SECRET_PAIR = re.compile(
    r"(?i)\b([A-Za-z0-9_-]*(?:token|passw(?:or)?d|pwd|secret|signature|sig|key|credential|auth|session)"
    r"[A-Za-z0-9_-]*)=([^\s&'\"<>;,]+)")


def setting(name: str, *, strict: bool = False) -> str | None:
    """A (secret) setting's value: the variable ``name``, else the content of the file ``<name>_FILE`` names (a
    mounted Secret); None when neither is set. An unreadable ``<name>_FILE`` gives None, or with ``strict`` an
    InputError naming the file and the fix (for the stage that needs the value; redaction never fails)."""
    value = os.environ.get(name)
    if value and value.strip():
        return value.strip()
    path = os.environ.get(f"{name}_FILE")
    if path:
        try:
            with open(path) as f:
                return f.read().strip() or None
        except OSError as exc:
            if strict:
                from splatflow.errors import InputError

                raise InputError(f"{name}_FILE names {path}, which cannot be read ({exc.strerror})",
                                 hint=f"mount the Secret there or unset {name}_FILE") from None
            return None
    return None


def url_parts(url: str) -> dict[str, str]:
    """The parts of ``scheme://userinfo@host/path?query#fragment`` split by hand (never raises): keys ``scheme``,
    ``userinfo``, ``host``, ``path``, ``query``, ``fragment``; missing parts are empty strings."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, host = authority.rpartition("@")
    if not at:
        userinfo, host = "", authority
    return {"scheme": scheme, "userinfo": userinfo, "host": host, "path": slash + path if slash else "",
            "query": query, "fragment": fragment}


def secret_values() -> list[str]:
    """Every known secret value and the parts of it a text may quote, longest first."""
    out: set[str] = set()
    for name in SECRET_ENV:
        value = setting(name)
        if not value or len(value) < _MIN_SECRET:
            continue
        out.add(value)
        if "://" in value:
            parts = url_parts(value)
            out.update(p for p in (parts["userinfo"], parts["userinfo"].partition(":")[2], parts["query"],
                                   parts["fragment"]) if p)
            if len(parts["path"]) > 1:
                out.add(parts["path"])
                out.add(parts["path"] + ("?" + parts["query"] if parts["query"] else ""))
            for pair in re.split(r"[&;]", parts["query"]):
                out.add(pair.partition("=")[2])
    return sorted((v for v in out if len(v) >= _MIN_SECRET), key=len, reverse=True)


def _scrub_url(match: re.Match[str]) -> str:
    parts = url_parts(match.group(0))
    text = f"{parts['scheme']}://" + (f"{MASK}@" if parts["userinfo"] else "") + parts["host"] + parts["path"]
    if parts["query"]:
        text += "?" + MASK
    if parts["fragment"]:
        text += "#" + MASK
    return text


def redact(text: str, extra: Iterable[str | None] = ()) -> str:
    """``text`` without secrets: known secret values and their parts, the ``extra`` values (secrets held elsewhere,
    e.g. a token read from a file), URL userinfo, query strings and fragments, and secret-named ``name=value``
    pairs are replaced by ``[redacted]``."""
    more = [v for v in extra if v and len(v) >= _MIN_SECRET]
    for secret in sorted({*secret_values(), *more}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = _URL.sub(_scrub_url, text)
    return _SECRET_PAIR.sub(lambda m: f"{m.group(1)}={MASK}", text)
