"""The one redaction of secrets in text: `check-config` output and every log line pass through it.

What counts as a secret:
- a URL's whole userinfo (`scheme://user:password@`, `redis://:password@`, and
  `nats://token@`, where the token stands in the user's place): everything from
  `://` to the last `@` of the same word becomes `***`, so a password holding `@`,
  `/` or `?` is covered too (a path holding `@` is over-redacted, never leaked);
- the value of a parameter whose name says secret (`password`, `sslpassword`,
  `token`, `client_secret`, `api_key`, ...) in a query string (`?password=x&`) or a
  libpq key/value string (`host=h password='x y'`), quoted or not.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "***"

# A name that says it holds a secret (as a whole key, or the end of one: sslpassword, client_secret).
_SECRET_WORD = r"(?:pass(?:word|wd)?|pwd|tokens?|secrets?|api_?keys?)"
SECRET_KEY = re.compile(rf"(?i)^[A-Za-z0-9_.-]*?{_SECRET_WORD}$")

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"<>]*@")
_PARAMETER = re.compile(
    rf"(?i)(?:^|(?<=[\s?&;,]))(?P<key>[A-Za-z0-9_.-]*?{_SECRET_WORD})(?P<eq>\s*=\s*)"
    r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s&;#'"]*)"""
)


def redact(text: str) -> str:
    """`text` with every URL userinfo and secret-named parameter value replaced by ***."""
    if "=" not in text and "@" not in text:
        return text
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    return _PARAMETER.sub(lambda m: f"{m['key']}{m['eq']}{MASK}", text)


def redact_value(key: str, value: Any) -> Any:
    """A value under `key` of a mapping (a config section, a log line), redacted: masked whole
    when the key names a secret, else its strings redacted, nested mappings and lists too."""
    if isinstance(key, str) and SECRET_KEY.match(key) and value:
        return [MASK] * len(value) if isinstance(value, (list, tuple)) else MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(k, v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value("", v) for v in value]
    return value
