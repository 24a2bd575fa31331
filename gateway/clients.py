"""The edge's gRPC channels to every mesh service, opened once per process.

Every call carries the edge's deadline (settings.grpc_timeout_seconds) and the caller's own access
token, so each service applies its `access` rule to the real caller; `token=None` is anonymous.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc

from counterpick.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from counterpick.draft.v1 import draft_service_pb2 as draft_pb
from counterpick.draft.v1 import draft_service_pb2_grpc as draft_grpc
from counterpick.model.v1 import model_service_pb2 as model_pb
from counterpick.model.v1 import model_service_pb2_grpc as model_grpc
from counterpick.user.v1 import user_service_pb2 as user_pb
from counterpick.user.v1 import user_service_pb2_grpc as user_grpc
from services.common.channels import open_channel
from services.common.health import check_health

Metadata = tuple[tuple[str, str], ...]


def bearer(token: str | None) -> Metadata:
    """Call metadata presenting the caller's access token (none for an anonymous caller)."""
    return (("authorization", f"Bearer {token}"),) if token else ()


@dataclass(frozen=True)
class ServiceHealth:
    """The health of one mesh service as the edge sees it."""

    service: str
    address: str
    status: str


class MeshClients:
    """One traced channel per service; stubs are cheap and built per call."""

    def __init__(self, addresses: dict[str, str], timeout_seconds: float) -> None:
        self.addresses = addresses
        self.timeout_seconds = timeout_seconds
        self.channels: dict[str, grpc.aio.Channel] = {
            name: open_channel(address) for name, address in addresses.items()
        }

    async def health(self, service: str) -> ServiceHealth:
        """Check one service's overall health; a dead or slow peer reads as UNREACHABLE."""
        status = await check_health(self.channels[service], timeout_seconds=self.timeout_seconds)
        return ServiceHealth(service, self.addresses[service], status)

    async def mesh_health(self) -> list[ServiceHealth]:
        """Every service's health, checked concurrently."""
        return list(await asyncio.gather(*(self.health(name) for name in self.channels)))

    async def jwks_json(self) -> str:
        """The auth service's JWK Set document (GetJwks)."""
        stub = auth_service_pb2_grpc.AuthServiceStub(self.channels["auth"])
        response = await stub.GetJwks(
            auth_service_pb2.GetJwksRequest(), timeout=self.timeout_seconds
        )
        return response.jwks_json

    # -- model (anonymous reads allowed, except personal scores) --------------------------------

    def _model(self) -> model_grpc.ModelServiceAsyncStub:
        return model_grpc.ModelServiceStub(self.channels["model"])

    async def list_heroes(
        self, request: model_pb.ListHeroesRequest, token: str | None
    ) -> model_pb.ListHeroesResponse:
        """ModelService.ListHeroes."""
        return await self._model().ListHeroes(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def get_matchups(
        self, request: model_pb.GetMatchupsRequest, token: str | None
    ) -> model_pb.GetMatchupsResponse:
        """ModelService.GetMatchups."""
        return await self._model().GetMatchups(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def get_synergies(
        self, request: model_pb.GetSynergiesRequest, token: str | None
    ) -> model_pb.GetSynergiesResponse:
        """ModelService.GetSynergies."""
        return await self._model().GetSynergies(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def suggest_picks(
        self, request: model_pb.SuggestPicksRequest, token: str | None
    ) -> model_pb.SuggestPicksResponse:
        """ModelService.SuggestPicks."""
        return await self._model().SuggestPicks(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def suggest_bans(
        self, request: model_pb.SuggestBansRequest, token: str | None
    ) -> model_pb.SuggestBansResponse:
        """ModelService.SuggestBans."""
        return await self._model().SuggestBans(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def predict_win(
        self, request: model_pb.PredictWinRequest, token: str | None
    ) -> model_pb.PredictWinResponse:
        """ModelService.PredictWin."""
        return await self._model().PredictWin(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def personal_scores(
        self, request: model_pb.GetPersonalScoresRequest, token: str | None
    ) -> model_pb.GetPersonalScoresResponse:
        """ModelService.GetPersonalScores (needs a token)."""
        return await self._model().GetPersonalScores(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def model_info(self, token: str | None) -> model_pb.GetModelInfoResponse:
        """ModelService.GetModelInfo."""
        return await self._model().GetModelInfo(
            model_pb.GetModelInfoRequest(), timeout=self.timeout_seconds, metadata=bearer(token)
        )

    # -- draft (every RPC needs a token) -----------------------------------------------------

    def _draft(self) -> draft_grpc.DraftServiceAsyncStub:
        return draft_grpc.DraftServiceStub(self.channels["draft"])

    async def create_draft(
        self, request: draft_pb.CreateDraftRequest, token: str | None
    ) -> draft_pb.CreateDraftResponse:
        """DraftService.CreateDraft."""
        return await self._draft().CreateDraft(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def join_draft(
        self, request: draft_pb.JoinDraftRequest, token: str | None
    ) -> draft_pb.JoinDraftResponse:
        """DraftService.JoinDraft."""
        return await self._draft().JoinDraft(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def get_draft(self, draft_id: str, token: str | None) -> draft_pb.GetDraftResponse:
        """DraftService.GetDraft."""
        return await self._draft().GetDraft(
            draft_pb.GetDraftRequest(draft_id=draft_id),
            timeout=self.timeout_seconds,
            metadata=bearer(token),
        )

    async def submit_action(
        self, request: draft_pb.SubmitActionRequest, token: str | None
    ) -> draft_pb.SubmitActionResponse:
        """DraftService.SubmitAction."""
        return await self._draft().SubmitAction(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def watch_draft(
        self, request: draft_pb.WatchDraftRequest, token: str | None
    ) -> AsyncIterator[draft_pb.WatchDraftResponse]:
        """DraftService.WatchDraft: a stream without a deadline (it lives as long as the
        watcher); the call is cancelled when the consumer stops iterating."""
        call = self._draft().WatchDraft(request, metadata=bearer(token))
        try:
            async for message in call:
                yield message
        finally:
            call.cancel()

    # -- user ----------------------------------------------------------------------------------

    def _user(self) -> user_grpc.UserServiceAsyncStub:
        return user_grpc.UserServiceStub(self.channels["user"])

    async def get_profile(self, token: str | None) -> user_pb.GetProfileResponse:
        """UserService.GetProfile of the caller."""
        return await self._user().GetProfile(
            user_pb.GetProfileRequest(), timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def update_profile(
        self, request: user_pb.UpdateProfileRequest, token: str | None
    ) -> user_pb.UpdateProfileResponse:
        """UserService.UpdateProfile."""
        return await self._user().UpdateProfile(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def get_preferences(self, token: str | None) -> user_pb.GetPreferencesResponse:
        """UserService.GetPreferences of the caller."""
        return await self._user().GetPreferences(
            user_pb.GetPreferencesRequest(), timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def update_preferences(
        self, request: user_pb.UpdatePreferencesRequest, token: str | None
    ) -> user_pb.UpdatePreferencesResponse:
        """UserService.UpdatePreferences."""
        return await self._user().UpdatePreferences(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    # -- auth ----------------------------------------------------------------------------------

    def _auth(self) -> auth_service_pb2_grpc.AuthServiceAsyncStub:
        return auth_service_pb2_grpc.AuthServiceStub(self.channels["auth"])

    async def create_api_key(
        self, request: auth_service_pb2.CreateApiKeyRequest, token: str | None
    ) -> auth_service_pb2.CreateApiKeyResponse:
        """AuthService.CreateApiKey."""
        return await self._auth().CreateApiKey(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def list_api_keys(self, token: str | None) -> auth_service_pb2.ListApiKeysResponse:
        """AuthService.ListApiKeys."""
        return await self._auth().ListApiKeys(
            auth_service_pb2.ListApiKeysRequest(),
            timeout=self.timeout_seconds,
            metadata=bearer(token),
        )

    async def revoke_api_key(
        self, key_id: str, token: str | None
    ) -> auth_service_pb2.RevokeApiKeyResponse:
        """AuthService.RevokeApiKey."""
        return await self._auth().RevokeApiKey(
            auth_service_pb2.RevokeApiKeyRequest(key_id=key_id),
            timeout=self.timeout_seconds,
            metadata=bearer(token),
        )

    async def revoke_token(
        self, request: auth_service_pb2.RevokeTokenRequest, token: str | None
    ) -> auth_service_pb2.RevokeTokenResponse:
        """AuthService.RevokeToken."""
        return await self._auth().RevokeToken(
            request, timeout=self.timeout_seconds, metadata=bearer(token)
        )

    async def close(self) -> None:
        """Close every channel."""
        await asyncio.gather(*(channel.close() for channel in self.channels.values()))
