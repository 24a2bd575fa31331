"""`counterpick token`: the token it prints is what a service of the deployment accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli.__main__ import main
from services.common.interceptors import access_rule
from services.common.tokens import STEAM_ID64_BASE, DenyList, TokenVerifier
from tests.auth_keys import SigningKeys


async def test_the_printed_token_is_verified_with_the_deployments_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_url: str
) -> None:
    keys = SigningKeys.create(tmp_path / "auth-keys")
    argv = ["token", "--account-id", "42", "--role", "admin", "--state-dir", str(tmp_path)]
    assert main([*argv, "--scope", "model:read", "--ttl-seconds", "120"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    verifier = TokenVerifier(
        issuer="counterpick-auth",
        audience="counterpick",
        fetch_keys=keys.source,
        deny_list=DenyList(redis_url),
    )
    caller = await verifier.verify(token)
    assert caller.roles == frozenset({"user", "admin"})
    assert caller.steamid64 == STEAM_ID64_BASE + 42
    assert caller.scopes == ("model:read",)
    # What the services' interceptor then decides: admitted where the admin role or the
    # model:read scope is asked for, refused where another scope is.
    from counterpick.draft.v1 import draft_service_pb2  # noqa: F401 - registers the options
    from counterpick.etl.v1 import etl_service_pb2  # noqa: F401
    from counterpick.model.v1 import model_service_pb2  # noqa: F401
    from services.common.errors import PermissionDenied

    access_rule("/counterpick.etl.v1.EtlService/GetEtlStatus").admit(caller)
    access_rule("/counterpick.model.v1.ModelService/GetPersonalScores").admit(caller)
    with pytest.raises(PermissionDenied):
        access_rule("/counterpick.draft.v1.DraftService/CreateDraft").admit(caller)


def test_without_signing_keys_it_says_to_start_the_deployment(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="counterpick up"):
        main(["token", "--account-id", "1", "--state-dir", str(tmp_path)])
