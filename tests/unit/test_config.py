"""Settings: environment variables in, typed values out, and a clear exit on bad input."""

from __future__ import annotations

import pytest

from services.auth.config import AuthSettings
from services.common.config import load_settings
from services.draft.config import DraftSettings
from services.user.config import UserSettings


def test_defaults_address_the_local_mesh(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PORT", "MODEL_ADDR", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(DraftSettings)
    assert settings.port == 50056
    assert settings.model_addr == "127.0.0.1:50053"
    assert settings.redis_url.startswith("redis://")


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "6001")
    monkeypatch.setenv("MODEL_ADDR", "model.internal:7000")
    monkeypatch.setenv("SHUTDOWN_GRACE_SECONDS", "1.5")
    settings = load_settings(DraftSettings)
    assert (settings.port, settings.model_addr, settings.shutdown_grace_seconds) == (
        6001,
        "model.internal:7000",
        1.5,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "not-a-number"),
        ("PORT", "70000"),
        ("MODEL_ADDR", "model-without-port"),
        ("MODEL_ADDR", "model:0"),
        ("LOG_LEVEL", "LOUD"),
        ("REDIS_URL", "http://wrong-scheme"),
    ],
)
def test_bad_value_exits_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SystemExit) as exited:
        load_settings(DraftSettings)
    assert exited.value.code == 2
    message = capsys.readouterr().err
    assert "invalid configuration for DraftSettings" in message
    assert variable in message
    assert repr(value) in message


def test_postgres_dsn_must_be_a_postgres_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_DSN", "mysql://root@localhost/db")
    with pytest.raises(SystemExit):
        load_settings(UserSettings)


@pytest.mark.parametrize(
    ("environment", "generate", "starts"),
    [
        ("prod", "true", False),
        (None, None, True),  # dev by default, where a first run makes its own key
        ("prod", "false", True),
        ("test", "true", True),
    ],
)
def test_production_never_generates_auth_keys(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environment: str | None,
    generate: str | None,
    starts: bool,
) -> None:
    for name, value in (("ENVIRONMENT", environment), ("AUTH_GENERATE_KEY", generate)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    if starts:
        assert load_settings(AuthSettings).auth_generate_key == (generate != "false")
        return
    with pytest.raises(SystemExit) as exited:
        load_settings(AuthSettings)
    assert exited.value.code == 2
    message = capsys.readouterr().err
    assert "invalid configuration for AuthSettings" in message
    assert "AUTH_GENERATE_KEY=true" in message
    assert "ENVIRONMENT=prod" in message


def test_production_refuses_the_default_auth_key_generation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("AUTH_GENERATE_KEY", raising=False)
    monkeypatch.setenv("ENVIRONMENT", "prod")
    with pytest.raises(SystemExit):
        load_settings(AuthSettings)
