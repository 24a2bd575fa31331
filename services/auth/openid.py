"""Steam OpenID 2.0, the real protocol, as pure functions (no HTTP, no storage).

Steam is an OpenID 2.0 provider with identifier_select: we redirect to it with
`openid.mode=checkid_setup`, it redirects back with a positive assertion (`openid.mode=id_res`),
and we must not trust that assertion until (1) it is for us: return_to is the URL we sent,
op_endpoint is Steam's, claimed_id and identity are a Steam id URL; (2) it is fresh and unseen:
response_nonce is recent and never used before (the replay store is the caller's); (3) Steam
confirms it: every parameter posted back with `openid.mode=check_authentication` answers
`is_valid:true`. Steam uses no association we could check the signature with ourselves, so (3)
is the signature check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from services.common.errors import InvalidArgument, Unauthenticated
from services.common.tokens import STEAM_ID64_BASE

OPENID_NS = "http://specs.openid.net/auth/2.0"
IDENTIFIER_SELECT = "http://specs.openid.net/auth/2.0/identifier_select"
STEAM_ENDPOINT = "https://steamcommunity.com/openid/login"
CLAIMED_ID = re.compile(r"^https://steamcommunity\.com/openid/id/(7656119\d{10})$")
NONCE = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)(.{0,255})$")
STEAM_ID64_MAX = 76561202255233023
NONCE_MAX_AGE = timedelta(minutes=5)
# Fields Steam signs; an assertion whose openid.signed omits one could have it forged.
REQUIRED_SIGNED = frozenset(
    {"op_endpoint", "claimed_id", "identity", "return_to", "response_nonce", "assoc_handle"}
)


class LoginFailed(Unauthenticated):
    """The assertion cannot be trusted (ERROR_REASON_LOGIN_FAILED)."""

    reason = "ERROR_REASON_LOGIN_FAILED"


def redirect_url(endpoint: str, return_to: str, realm: str) -> str:
    """The checkid_setup URL the browser is sent to."""
    query = urlencode(
        {
            "openid.ns": OPENID_NS,
            "openid.mode": "checkid_setup",
            "openid.return_to": return_to,
            "openid.realm": realm,
            "openid.identity": IDENTIFIER_SELECT,
            "openid.claimed_id": IDENTIFIER_SELECT,
        }
    )
    return f"{endpoint}?{query}"


def with_state(return_to: str, state: str) -> str:
    """return_to with our state added as a query parameter."""
    parts = urlsplit(return_to)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("state", state)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def realm_of(url: str) -> str:
    """scheme://host[:port]/ of a URL: the realm shown to the user by Steam."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


def check_return_to(url: str, allowed_origins: frozenset[str]) -> str:
    """return_to must be absolute https on an allowed origin (http only for localhost)."""
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    local = parts.hostname in {"localhost", "127.0.0.1", "::1"}
    if parts.scheme not in ("https", "http") or (parts.scheme == "http" and not local):
        raise InvalidArgument("return_to must be an absolute https URL", field="return_to")
    if origin not in allowed_origins:
        raise InvalidArgument(f"return_to origin {origin} is not allowed", field="return_to")
    if parts.fragment:
        raise InvalidArgument("return_to must not have a fragment", field="return_to")
    return url


@dataclass(frozen=True)
class Assertion:
    """A positive assertion that passed every local check (Steam must still confirm it)."""

    steamid64: int
    nonce: str
    nonce_time: datetime

    @property
    def account_id(self) -> int:
        """The 32-bit Steam account id."""
        return self.steamid64 - STEAM_ID64_BASE


def check_assertion(
    params: Mapping[str, str], *, expected_return_to: str, endpoint: str, now: datetime
) -> Assertion:
    """Every check that needs no network; raises InvalidArgument or LoginFailed."""
    mode = params.get("openid.mode")
    if mode is None:
        raise InvalidArgument("openid.mode is missing", field="openid_params")
    if mode != "id_res":
        raise InvalidArgument(
            f"openid.mode is {mode!r}, not 'id_res' (the login was cancelled or failed)",
            field="openid_params",
        )
    for name in (
        "ns",
        "op_endpoint",
        "claimed_id",
        "identity",
        "return_to",
        "response_nonce",
        "assoc_handle",
        "signed",
        "sig",
    ):
        if not params.get(f"openid.{name}"):
            raise InvalidArgument(f"openid.{name} is missing", field="openid_params")
    if params["openid.ns"] != OPENID_NS:
        raise LoginFailed("openid.ns is not OpenID 2.0")
    if params["openid.op_endpoint"] != endpoint:
        raise LoginFailed("the assertion comes from another OpenID provider")
    if params["openid.return_to"] != expected_return_to:
        raise LoginFailed("the assertion's return_to is not the URL this login sent")
    signed = set(params["openid.signed"].split(","))
    if not signed >= REQUIRED_SIGNED:
        missing = ", ".join(sorted(REQUIRED_SIGNED - signed))
        raise LoginFailed(f"the assertion does not sign {missing}")
    claimed = CLAIMED_ID.match(params["openid.claimed_id"])
    if claimed is None or params["openid.identity"] != params["openid.claimed_id"]:
        raise LoginFailed("claimed_id is not a Steam community id URL")
    steamid64 = int(claimed.group(1))
    if not STEAM_ID64_BASE < steamid64 <= STEAM_ID64_MAX:
        raise LoginFailed("claimed_id is not an individual Steam account")
    nonce = params["openid.response_nonce"]
    stamp = NONCE.match(nonce)
    if stamp is None:
        raise LoginFailed("response_nonce is malformed")
    issued = datetime.strptime(stamp.group(1), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    if not -timedelta(minutes=1) <= now - issued <= NONCE_MAX_AGE:
        raise LoginFailed("response_nonce is stale")
    return Assertion(steamid64, nonce, issued)


def check_authentication_form(params: Mapping[str, str]) -> dict[str, str]:
    """The form posted back to Steam: every openid.* parameter, mode switched."""
    form = {key: value for key, value in params.items() if key.startswith("openid.")}
    form["openid.mode"] = "check_authentication"
    return form


def is_valid_response(body: str) -> bool:
    """True only for a key-value response that says `is_valid:true`."""
    fields = dict(line.split(":", 1) for line in body.splitlines() if ":" in line)
    return fields.get("ns") == OPENID_NS and fields.get("is_valid") == "true"
