"""Secrets of the external API clients, kept out of error strings and log lines.

API keys travel as query parameters (both upstreams want them there), so each client registers its
key here: error strings and httpx's own request log lines are scrubbed of it.
"""

from __future__ import annotations

import logging
from urllib.parse import quote, quote_plus

import httpx


class _SecretRedactor(logging.Filter):
    """Replaces registered secrets with *** in error strings and in httpx's log records.

    httpx logs every request URL at INFO (`HTTP Request: GET https://...?key=...`), so without
    this filter the Steam key would land in the service logs whenever LOG_LEVEL=INFO.
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add(self, secret: str) -> None:
        if secret:
            # The raw value and its URL-encoded forms, as they may appear inside a URL.
            self._secrets.update({secret, quote(secret, safe=""), quote_plus(secret)})

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            record.msg = self.redact(str(record.msg))
            if isinstance(record.args, tuple):
                record.args = tuple(
                    self.redact(str(arg)) if isinstance(arg, str | httpx.URL) else arg
                    for arg in record.args
                )
        return True


_REDACTOR = _SecretRedactor()
logging.getLogger("httpx").addFilter(_REDACTOR)


def register_secret(value: str) -> None:
    """Never show `value` again: it is scrubbed from error strings and httpx log lines."""
    _REDACTOR.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by ***."""
    return _REDACTOR.redact(text)
