"""Steam sign-in for the browser: the cookie side of the auth service's login and token RPCs.

The page never sees a refresh token and no token ever travels in a URL:
- `GET /auth/steam/login` asks auth for a Steam OpenID redirect (BeginSteamLogin), binds its
  state to the browser in an HttpOnly, SameSite=Lax cookie (Lax so it comes back on Steam's
  top-level redirect) and sends the browser to Steam.
- `GET /auth/steam/callback` checks that the state in the URL is the browser's own, hands every
  `openid.*` parameter to CompleteSteamLogin, keeps the refresh token in an HttpOnly,
  SameSite=Strict cookie scoped to /auth, sets a CSRF cookie the page can read, and redirects to /.
- `POST /auth/refresh` gives the page a fresh access token in JSON (rotating the refresh cookie);
  `POST /auth/logout` revokes the session (RevokeToken) and clears the cookies. Both refuse
  cross-site requests twice over: the Origin / Sec-Fetch-Site headers must say same origin, and the
  X-CSRF-Token header must equal the CSRF cookie (double submit).
- `POST /auth/api-key` trades an API key in the JSON body for an access token, for pages that
  hold a key instead of a session: the OBS overlay link carries a read-only key in its fragment.

Cookies are Secure except on http://localhost and http://127.0.0.1, where browsers have no TLS.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import grpc
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse

from counterpick.auth.v1 import auth_service_pb2 as pb
from counterpick.auth.v1 import auth_service_pb2_grpc as pb_grpc
from gateway.clients import bearer, client_address
from gateway.config import EdgeSettings

log = logging.getLogger(__name__)

STATE_COOKIE = "cp_login_state"
REFRESH_COOKIE = "cp_refresh"
CSRF_COOKIE = "cp_csrf"
CSRF_HEADER = "x-csrf-token"
CALLBACK_PATH = "/auth/steam/callback"
_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# How long the browser keeps the login state; auth forgets it sooner (its own TTL).
_STATE_MAX_AGE_SECONDS = 600
# gRPC status of a failed auth call -> the HTTP status the browser gets.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 503,
}


def public_origin(settings: EdgeSettings, request: Request) -> str:
    """scheme://host[:port] the browser sees the edge at."""
    if settings.edge_public_url:
        return settings.edge_public_url.rstrip("/")
    return str(request.base_url).rstrip("/")


def cookies_secure(origin: str) -> bool:
    """Secure cookies everywhere but plain-http localhost."""
    parts = urlsplit(origin)
    return not (parts.scheme == "http" and (parts.hostname or "") in _LOCAL_HOSTS)


def _seconds_until(moment: datetime) -> int:
    return max(0, int((moment - datetime.now(UTC)).total_seconds()))


def _error(error: grpc.aio.AioRpcError, what: str) -> JSONResponse:
    status = _HTTP_STATUS.get(error.code(), 502)
    # The status code and our own words only: auth's details may echo request values.
    log.info("%s refused: %s", what, error.code().name, extra={"fields": {"status": status}})
    return JSONResponse(
        {"error": what + " failed", "code": error.code().name},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def csrf_refusal(settings: EdgeSettings, request: Request) -> str | None:
    """Why a cookie-authenticated POST is refused as cross-site, or None when it is not."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {fetch_site}"
    origin = request.headers.get("origin")
    if origin is not None and origin.rstrip("/") != public_origin(settings, request):
        return "the Origin is not this site"
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), header.encode()):
        return f"the {CSRF_HEADER} header does not match the CSRF cookie"
    return None


def set_session(response: Response, origin: str, tokens: pb.TokenPair) -> None:
    secure = cookies_secure(origin)
    response.set_cookie(
        REFRESH_COOKIE,
        tokens.refresh_token,
        max_age=_seconds_until(tokens.refresh_expires_at.ToDatetime(tzinfo=UTC)),
        path="/auth",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    # Readable by the page (it echoes it in X-CSRF-Token); worthless without the session.
    response.set_cookie(
        CSRF_COOKIE,
        secrets.token_urlsafe(24),
        max_age=_seconds_until(tokens.refresh_expires_at.ToDatetime(tzinfo=UTC)),
        path="/",
        secure=secure,
        httponly=False,
        samesite="strict",
    )


def clear_session(response: Response, origin: str) -> None:
    secure = cookies_secure(origin)
    response.delete_cookie(
        REFRESH_COOKIE, path="/auth", secure=secure, httponly=True, samesite="strict"
    )
    response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, samesite="strict")


def set_login_state(response: Response, origin: str, state: str | None) -> None:
    """Bind a login's state to the browser (Lax: it must come back on Steam's redirect); None
    forgets it."""
    if state is None:
        response.delete_cookie(
            STATE_COOKIE,
            path="/auth/steam",
            secure=cookies_secure(origin),
            httponly=True,
            samesite="lax",
        )
        return
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=_STATE_MAX_AGE_SECONDS,
        path="/auth/steam",
        secure=cookies_secure(origin),
        httponly=True,
        samesite="lax",
    )


# The five route closures count as the factory's statements; each is short on its own.
def web_auth_router(  # noqa: PLR0915
    settings: EdgeSettings, channel: Callable[[], grpc.aio.Channel], timeout_seconds: float
) -> APIRouter:
    """The /auth/steam/* and /auth/{refresh,logout} routes, calling auth over `channel()`."""
    router = APIRouter(prefix="/auth", tags=["browser sign-in"])

    def stub() -> pb_grpc.AuthServiceAsyncStub:
        return pb_grpc.AuthServiceStub(channel())

    @router.get("/steam/login", summary="Send the browser to Steam to sign in.")
    async def steam_login(request: Request) -> Response:
        origin = public_origin(settings, request)
        try:
            begun = await stub().BeginSteamLogin(
                pb.BeginSteamLoginRequest(return_to=origin + CALLBACK_PATH),
                timeout=timeout_seconds,
            )
        except grpc.aio.AioRpcError as error:
            return _error(error, "starting the Steam login")
        response = RedirectResponse(begun.redirect_url, status_code=303)
        set_login_state(response, origin, begun.state)
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.get(CALLBACK_PATH.removeprefix("/auth"), summary="Where Steam sends the browser back.")
    async def steam_callback(request: Request) -> Response:
        origin = public_origin(settings, request)
        state = request.query_params.get("state", "")
        cookie = request.cookies.get(STATE_COOKIE, "")
        if not state or not cookie or not hmac.compare_digest(state.encode(), cookie.encode()):
            # Not the login this browser started: a forged or replayed callback (login CSRF).
            log.info("Steam callback refused: the state is not this browser's")
            return RedirectResponse("/?login=failed", status_code=303)
        params = {k: v for k, v in request.query_params.items() if k.startswith("openid.")}
        try:
            done = await stub().CompleteSteamLogin(
                pb.CompleteSteamLoginRequest(state=state, openid_params=params),
                timeout=timeout_seconds,
            )
        except grpc.aio.AioRpcError as error:
            log.info("Steam login not completed: %s", error.code().name)
            response = RedirectResponse("/?login=failed", status_code=303)
        else:
            log.info(
                "signed in through Steam",
                extra={"fields": {"user_id": done.user_id, "new_user": done.new_user}},
            )
            response = RedirectResponse("/", status_code=303)
            set_session(response, origin, done.tokens)
        set_login_state(response, origin, None)
        response.headers["Cache-Control"] = "no-store"
        return response

    @router.post("/refresh", summary="A fresh access token for the signed-in page.")
    async def refresh(request: Request) -> Response:
        origin = public_origin(settings, request)
        refusal = csrf_refusal(settings, request)
        if refusal is not None:
            return JSONResponse({"error": "cross-site request refused: " + refusal}, 403)
        token = request.cookies.get(REFRESH_COOKIE)
        if not token:
            return JSONResponse({"error": "not signed in"}, 401, {"Cache-Control": "no-store"})
        try:
            renewed = await stub().RefreshToken(
                pb.RefreshTokenRequest(refresh_token=token), timeout=timeout_seconds
            )
        except grpc.aio.AioRpcError as error:
            response = _error(error, "refreshing the session")
            if error.code() == grpc.StatusCode.UNAUTHENTICATED:
                clear_session(response, origin)
            return response
        tokens = renewed.tokens
        response = JSONResponse(
            {
                "access_token": tokens.access_token,
                "token_type": tokens.token_type or "Bearer",
                "expires_at": tokens.access_expires_at.ToJsonString(),
            },
            headers={"Cache-Control": "no-store"},
        )
        set_session(response, origin, tokens)
        return response

    @router.post("/logout", summary="Revoke this browser's session and forget its cookies.")
    async def logout(request: Request) -> Response:
        origin = public_origin(settings, request)
        refusal = csrf_refusal(settings, request)
        if refusal is not None:
            return JSONResponse({"error": "cross-site request refused: " + refusal}, 403)
        token = request.cookies.get(REFRESH_COOKIE)
        revoked = 0
        if token:
            try:
                answer = await stub().RevokeToken(
                    pb.RevokeTokenRequest(refresh_token=token), timeout=timeout_seconds
                )
            except grpc.aio.AioRpcError as error:
                # Keep the cookies: the session still lives, so the page may try again.
                return _error(error, "signing out")
            revoked = answer.revoked_count
        response = JSONResponse({"revoked": revoked}, headers={"Cache-Control": "no-store"})
        clear_session(response, origin)
        return response

    @router.post("/api-key", summary="An access token for an API key (an overlay link's key).")
    async def exchange_api_key(request: Request) -> Response:
        """A page holding an API key (the read-only key of an OBS overlay link, in the URL
        fragment the browser never sends) trades it for a short-lived access token. No cookie
        is read or set, so there is nothing for another site to forge: no CSRF check."""
        try:
            body = await request.json()
        except ValueError:
            body = None
        key = body.get("api_key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key.strip():
            return JSONResponse({"error": 'the body must be {"api_key": "..."}'}, 400)
        client_address.set(request.client.host if request.client else None)
        try:
            exchanged = await stub().ExchangeApiKey(
                pb.ExchangeApiKeyRequest(api_key=key.strip()),
                metadata=bearer(None),
                timeout=timeout_seconds,
            )
        except grpc.aio.AioRpcError as error:
            return _error(error, "exchanging the API key")
        return JSONResponse(
            {
                "access_token": exchanged.access_token,
                "token_type": "Bearer",
                "expires_at": exchanged.access_expires_at.ToJsonString(),
                "scopes": list(exchanged.scopes),
            },
            headers={"Cache-Control": "no-store"},
        )

    return router
