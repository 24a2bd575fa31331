"""Opaque page tokens for list RPCs (common.v1.PageRequest / PageResponse).

A token carries the offset of the next item, a fingerprint of every other request field (a token
may only continue the same query) and its issue time (tokens expire after an hour). It is not a
secret: the offset is not sensitive, and a forged token can only page through data the caller may
read anyway.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from services.common.errors import InvalidArgument

MAX_PAGE_SIZE = 500
TOKEN_TTL_SECONDS = 3600


@dataclass(frozen=True)
class Page:
    """Where a page starts, how long it is, and the token of the next one."""

    offset: int
    size: int
    next_token: str


def fingerprint(*fields: object) -> str:
    """A stable digest of the request fields a token is bound to."""
    return hashlib.sha256(repr(fields).encode()).hexdigest()[:16]


def page(page_size: int, page_token: str, total: int, query: str, default_size: int) -> Page:
    """Resolve a page of a list of `total` items for the query whose fingerprint is `query`."""
    if page_size < 0:
        raise InvalidArgument(f"page.page_size {page_size} is negative", field="page.page_size")
    size = default_size if page_size == 0 else min(page_size, MAX_PAGE_SIZE)
    offset = 0
    if page_token:
        offset = _decode(page_token, query)
    end = min(total, offset + size)
    next_token = _encode(end, query) if end < total else ""
    return Page(offset, end - offset, next_token)


def slice_page[T](
    items: Sequence[T], page_size: int, page_token: str, query: str, default_size: int
) -> tuple[Sequence[T], str]:
    """The items of the requested page and the next token."""
    resolved = page(page_size, page_token, len(items), query, default_size)
    return items[resolved.offset : resolved.offset + resolved.size], resolved.next_token


def _encode(offset: int, query: str) -> str:
    body = json.dumps({"o": offset, "q": query, "t": int(time.time())}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def _decode(token: str, query: str) -> int:
    try:
        padded = token + "=" * (-len(token) % 4)
        body = json.loads(base64.urlsafe_b64decode(padded.encode()))
        offset, token_query, issued = int(body["o"]), str(body["q"]), int(body["t"])
    except (ValueError, KeyError, TypeError) as error:
        raise InvalidArgument(
            f"page.page_token is not a token this service issued ({error})",
            field="page.page_token",
        ) from None
    if token_query != query:
        raise InvalidArgument(
            "page.page_token belongs to a request with other parameters", field="page.page_token"
        )
    if time.time() - issued > TOKEN_TTL_SECONDS or offset < 0:
        raise InvalidArgument("page.page_token has expired", field="page.page_token")
    return offset
