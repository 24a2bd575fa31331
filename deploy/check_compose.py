"""Static checks of docker-compose.yml, deploy/ and the Dockerfile that need no Docker engine.

Run with the project venv: `.venv/bin/python deploy/check_compose.py`. Exits 1 listing every
problem found. It checks what `docker compose config` cannot: that each container's environment
matches its service's settings class (names and values), that ports, peers and health probes
agree with the code's defaults, that every variable is documented in deploy/.env.example, and
that the collector config and the Dockerfile only reference what exists.
"""

from __future__ import annotations

import ast
import importlib
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from pydantic import ValidationError
from pydantic_settings import BaseSettings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"
COLLECTOR = ROOT / "deploy" / "otel-collector.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

APP_IMAGE_PREFIX = "${COUNTERPICK_IMAGE"
# Container -> (module run by `python -m`, settings class), for every counterpick container.
APP_SETTINGS = {
    "ingest": ("services.ingest", "services.ingest.config:IngestSettings"),
    "etl": ("services.etl", "services.etl.config:EtlSettings"),
    "model": ("services.model", "services.model.config:ModelSettings"),
    "auth": ("services.auth", "services.auth.config:AuthSettings"),
    "user": ("services.user", "services.user.config:UserSettings"),
    "draft": ("services.draft", "services.draft.config:DraftSettings"),
    "gateway": ("gateway", "gateway.config:EdgeSettings"),
}
# Settings whose code default points at the developer's machine: a container must override them.
# (Topic names are the only store settings whose code defaults are production values.)
MUST_OVERRIDE = re.compile(
    r"^(host|port|.*_addr|postgres_dsn|redis_url|warehouse_dsn|kafka_bootstrap_servers)$"
)
# Variables compose already passes for a planned setting the code does not have yet: reported as a
# note, and as a problem once the settings class gains the field (then delete the entry here).
NOT_YET_READ: dict[str, set[str]] = {}
# Peers reached only lazily, never at start-up: the JWKS is fetched on the first token to verify
# (and cached), so waiting for auth would only add a cycle (auth waits for user).
LAZY_PEER_FIELDS = {"auth_addr"}
VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")
DEPENDENCY_CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}

problems: list[str] = []
notes: list[str] = []


def problem(message: str) -> None:
    """Record one failed check."""
    problems.append(message)


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Resolve compose `${VAR}`, `${VAR:-default}` and `${VAR:?error}` the way compose does."""

    def replace(match: re.Match[str]) -> str:
        name, operator, argument = match.group(1), match.group(2), match.group(3)
        value = env.get(name)
        if operator in (":-", "-"):
            use_default = value is None or (operator == ":-" and value == "")
            return argument if use_default else str(value)
        if operator in (":?", "?") and (value is None or (operator == ":?" and value == "")):
            raise KeyError(f"{name}: {argument}")
        return value or ""

    return VARIABLE.sub(replace, text.replace("$$", "\0")).replace("\0", "$")


def documented_variables() -> tuple[set[str], set[str]]:
    """Names in .env.example (set or commented out), and the ones left empty to be filled in."""
    documented, blank = set(), set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=(.*)$", line)
        if match:
            documented.add(match.group(1))
            if not line.startswith("#") and match.group(2) == "":
                blank.add(match.group(1))
    return documented, blank


def default_grpc_ports() -> dict[str, int]:
    """DEFAULT_GRPC_PORTS as written in services/common/config.py (read, not imported)."""
    tree = ast.parse((ROOT / "services" / "common" / "config.py").read_text())
    for node in ast.walk(tree):
        target = getattr(node, "target", None)
        if isinstance(node, ast.AnnAssign) and getattr(target, "id", "") == "DEFAULT_GRPC_PORTS":
            assert node.value is not None
            value: dict[str, int] = ast.literal_eval(node.value)
            return value
    raise LookupError("DEFAULT_GRPC_PORTS not found")


def settings_class(path: str) -> type[BaseSettings]:
    """Import `module:Class`."""
    module_name, class_name = path.split(":")
    cls: type[BaseSettings] = getattr(importlib.import_module(module_name), class_name)
    return cls


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping, whichever form compose was given."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def published(service: Mapping[str, Any]) -> Iterator[tuple[str, int]]:
    """(host port, container port) for each `ports` entry in short syntax."""
    for entry in service.get("ports") or []:
        *_, host, container = str(entry).split(":")
        yield host, int(container)


def check_variables() -> None:
    """Every `${VAR}` is documented in .env.example, and required secrets are left blank there."""
    text = COMPOSE.read_text()
    documented, blank = documented_variables()
    used = {match.group(1) for match in VARIABLE.finditer(text)}
    required = {m.group(1) for m in VARIABLE.finditer(text) if m.group(2) in (":?", "?")}
    for name in sorted(used - documented):
        problem(f"${{{name}}} is used in docker-compose.yml but not documented in .env.example")
    for name in sorted(documented - used):
        problem(f"{name} is documented in .env.example but docker-compose.yml never reads it")
    for name in sorted(required - blank):
        problem(f"required secret {name} should appear in .env.example as an empty `{name}=`")


def check_dependencies(services: Mapping[str, Any]) -> None:
    """depends_on names real services, with a condition each target can actually satisfy."""
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            condition = spec.get("condition")
            if target not in services:
                problem(f"{name}: depends_on {target!r}, which is not a service")
            elif condition not in DEPENDENCY_CONDITIONS:
                problem(f"{name}: depends_on {target} with unknown condition {condition!r}")
            elif condition == "service_healthy" and "healthcheck" not in services[target]:
                problem(f"{name}: waits for {target} to be healthy; it has no healthcheck")
            elif condition == "service_completed_successfully" and services[target].get(
                "restart", "no"
            ) not in ("no", "on-failure"):
                problem(f"{name}: waits for one-shot {target}, which must not restart always")
        long_running = service.get("restart") == "unless-stopped"
        if long_running and "healthcheck" not in service and name != "otel-collector":
            problem(f"{name}: long-running service without a healthcheck")
    check_cycles(services)


def check_volumes(compose: Mapping[str, Any]) -> None:
    """Bind mounts exist in the repo; named volumes are declared."""
    declared = compose.get("volumes") or {}
    for name, service in compose["services"].items():
        for volume in service.get("volumes") or []:
            source = str(volume).split(":")[0]
            if source.startswith(".") and not (ROOT / source).exists():
                problem(f"{name}: bind-mounted {source} does not exist")
            elif not source.startswith(".") and source not in declared:
                problem(f"{name}: named volume {source!r} is not declared under volumes:")


def check_cycles(services: Mapping[str, Any]) -> None:
    """depends_on must form a DAG, or compose cannot start anything."""
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            problem("dependency cycle: " + " -> ".join([*trail, name]))
            return
        state[name] = "visiting"
        for target in services.get(name, {}).get("depends_on") or {}:
            visit(target, [*trail, name])
        state[name] = "done"

    for name in services:
        visit(name, [])


def check_app_services(services: Mapping[str, Any], test_env: Mapping[str, str]) -> None:
    """Each counterpick container against its code: entry point, settings, port, peers, probe."""
    ports = default_grpc_ports()
    for name, (module, settings_path) in APP_SETTINGS.items():
        service = services.get(name)
        if service is None:
            problem(f"missing app service {name}")
            continue
        check_entry(name, service, module)
        settings = check_settings(name, service, settings_class(settings_path), test_env)
        if settings is None:
            continue
        expected_port = 8000 if name == "gateway" else ports[name]
        check_listener(name, service, settings, expected_port)
        check_peers(name, service, settings, ports, services)


def check_entry(name: str, service: Mapping[str, Any], module: str) -> None:
    """The container runs the counterpick image with `python -m <module>`, restarting."""
    if not str(service.get("image", "")).startswith(APP_IMAGE_PREFIX):
        problem(f"{name}: does not run the counterpick image")
    if service.get("entrypoint") != ["python", "-m", module]:
        problem(f"{name}: entrypoint should be python -m {module}")
    if not (ROOT / module.replace(".", "/") / "__main__.py").exists():
        problem(f"{name}: {module}/__main__.py does not exist")
    if service.get("restart") != "unless-stopped":
        problem(f"{name}: should restart unless-stopped")


def check_settings(
    name: str, service: Mapping[str, Any], cls: type[BaseSettings], test_env: Mapping[str, str]
) -> Any:
    """Env names are settings of the service; localhost defaults are overridden; values parse."""
    raw_env = environment(service)
    fields = set(cls.model_fields)
    planned = NOT_YET_READ.get(name, set())
    for key in raw_env:
        if key in planned and key.lower() in fields:
            problem(f"{name}: {cls.__name__} reads {key} now; drop it from NOT_YET_READ")
        elif key in planned:
            notes.append(f"{name}: {key} is set for a setting {cls.__name__} does not have yet")
        elif key.lower() not in fields:
            problem(f"{name}: {key} is not a setting of {cls.__name__} (typo or wrong service?)")
    for field in sorted(fields):
        if MUST_OVERRIDE.match(field) and field.upper() not in raw_env:
            problem(f"{name}: {field.upper()} keeps its localhost default in the container")
    known = {key.lower(): interpolate(value, test_env) for key, value in raw_env.items()}
    try:
        return cls.model_validate({key: value for key, value in known.items() if key in fields})
    except ValidationError as error:
        problem(f"{name}: its environment does not validate as {cls.__name__}: {error}")
        return None


def check_listener(name: str, service: Mapping[str, Any], settings: Any, port: int) -> None:
    """Listens on all interfaces at the default port, publishes it, and probes it."""
    if settings.port != port:
        problem(f"{name}: PORT {settings.port}, expected the default {port}")
    if settings.host != "0.0.0.0":
        problem(f"{name}: HOST must be 0.0.0.0 in a container")
    if port not in [container for _, container in published(service)]:
        problem(f"{name}: port {port} is not published")
    probe = " ".join(service.get("healthcheck", {}).get("test", []))
    if f"127.0.0.1:{port}" not in probe:
        problem(f"{name}: healthcheck does not probe 127.0.0.1:{port}")
    if name != "gateway" and not probe.startswith("CMD counterpick healthcheck"):
        problem(f"{name}: healthcheck should be a gRPC health Check (counterpick healthcheck)")


STORE_HOSTS = {
    "postgres_dsn": "postgres",
    "redis_url": "redis",
    "warehouse_dsn": "clickhouse",
    "kafka_bootstrap_servers": "kafka",
}


def check_peers(
    name: str,
    service: Mapping[str, Any],
    settings: Any,
    ports: Mapping[str, int],
    services: Mapping[str, Any],
) -> None:
    """Each *_ADDR names a service at its port; peers and stores are waited for when healthy."""
    depends = service.get("depends_on") or {}
    fields = set(type(settings).model_fields)
    for field in sorted(f for f in fields if f.endswith("_addr")):
        peer, _, port = str(getattr(settings, field)).rpartition(":")
        if peer not in services:
            problem(f"{name}: {field.upper()} points at {peer!r}, which is not a service")
        elif int(port) != ports.get(peer):
            problem(f"{name}: {field.upper()} uses port {port}; {peer} uses {ports.get(peer)}")
        elif field in LAZY_PEER_FIELDS or peer == name:
            continue
        elif depends.get(peer, {}).get("condition") != "service_healthy":
            problem(f"{name}: calls {peer} but does not wait for it to be healthy")
    for field, store in STORE_HOSTS.items():
        if field in fields and depends.get(store, {}).get("condition") != "service_healthy":
            problem(f"{name}: uses {store} but does not wait for it to be healthy")
    topics_ready = depends.get("kafka-init", {}).get("condition")
    if "kafka_bootstrap_servers" in fields and topics_ready != "service_completed_successfully":
        problem(f"{name}: uses Kafka but does not wait for kafka-init to create the topics")


SECRETS_DIR = "/run/secrets/"
# How services.cli.credentials lays out a credentials directory: <dir>/<service>, <dir>/accepted.
ACCEPTED_CREDENTIALS_FILE = "accepted"


def mounted_secret(
    name: str, variable: str, value: str | None, compose: Mapping[str, Any]
) -> str | None:
    """The host file of the compose secret that `variable` (a /run/secrets/<secret> path) names,
    after checking the service mounts it and the secret is declared with a file; else None."""
    if not value:
        problem(f"{name}: {variable} is not set")
        return None
    if not value.startswith(SECRETS_DIR):
        problem(f"{name}: {variable} should name a compose secret under {SECRETS_DIR}")
        return None
    secret = value.removeprefix(SECRETS_DIR)
    mounted = [
        entry if isinstance(entry, str) else entry.get("source")
        for entry in compose["services"][name].get("secrets") or []
    ]
    if secret not in mounted:
        problem(f"{name}: {variable} names secret {secret!r}, which the service does not mount")
        return None
    declared = (compose.get("secrets") or {}).get(secret)
    if not declared or not declared.get("file"):
        problem(f"{name}: secret {secret!r} is not declared with a file under secrets:")
        return None
    return str(declared["file"])


def check_service_credentials(compose: Mapping[str, Any]) -> None:
    """Services that call peers as themselves (their settings include
    ServiceCredentialSettings) read their credential from a mounted secret, never from the
    environment, named after the service in the credentials directory; auth accepts the hashes
    from that same directory's list (services/cli/credentials.py's layout)."""
    from services.common.config import ServiceCredentialSettings

    directories: dict[str, str] = {}
    for name, (_, settings_path) in APP_SETTINGS.items():
        if name not in compose["services"]:
            continue
        if not issubclass(settings_class(settings_path), ServiceCredentialSettings):
            continue
        env = environment(compose["services"][name])
        if "SERVICE_CREDENTIAL" in env:
            problem(f"{name}: SERVICE_CREDENTIAL puts a secret in the environment; use a file")
        source = mounted_secret(
            name, "SERVICE_CREDENTIAL_FILE", env.get("SERVICE_CREDENTIAL_FILE"), compose
        )
        if source is None:
            continue
        directory, _, file_name = source.rpartition("/")
        if file_name != name:
            problem(f"{name}: its credential secret file {source} should be <dir>/{name}")
        directories[name] = directory
    if not directories or "auth" not in compose["services"]:
        return
    auth_env = environment(compose["services"]["auth"])
    accepted = mounted_secret(
        "auth",
        "AUTH_SERVICE_CREDENTIALS_FILE",
        auth_env.get("AUTH_SERVICE_CREDENTIALS_FILE"),
        compose,
    )
    if accepted is None:
        return
    directory, _, file_name = accepted.rpartition("/")
    if file_name != ACCEPTED_CREDENTIALS_FILE:
        problem(f"auth: the accepted credentials secret {accepted} should be <dir>/accepted")
    for name, own in sorted(directories.items()):
        if own != directory:
            problem(f"{name}: its credential comes from {own}, auth accepts those in {directory}")


def check_collector(services: Mapping[str, Any]) -> None:
    """Pipelines reference defined components; scrape targets are real services and ports."""
    config: dict[str, Any] = yaml.safe_load(COLLECTOR.read_text())
    service = config["service"]
    for extension in service.get("extensions", []):
        if extension not in config.get("extensions", {}):
            problem(f"collector: extension {extension} is enabled but not configured")
    for pipeline_name, pipeline in service["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                if component not in config.get(kind, {}):
                    problem(f"collector: {pipeline_name} uses {kind[:-1]} {component}, undefined")
        processors = pipeline.get("processors", [])
        if "memory_limiter" in processors and processors[0] != "memory_limiter":
            problem(f"collector: memory_limiter must come first in {pipeline_name}")
    for job in config["receivers"]["prometheus"]["config"]["scrape_configs"]:
        for group in job["static_configs"]:
            for target in group["targets"]:
                check_scrape_target(target, services)
    exporter = config["exporters"]["otlp/jaeger"]["endpoint"].partition(":")[0]
    if exporter not in services:
        problem(f"collector: exports to {exporter}, which is not a service")


def check_scrape_target(target: str, services: Mapping[str, Any]) -> None:
    """`host:port` is a service serving Prometheus metrics on that port."""
    host, _, port = target.partition(":")
    if host not in services:
        problem(f"collector: scrape target {host} is not a service")
        return
    metrics_port = "8000" if host == "gateway" else environment(services[host]).get("METRICS_PORT")
    if port != metrics_port:
        problem(f"collector: scrapes {target}; {host} serves metrics on {metrics_port}")


def check_dockerfile() -> None:
    """Every COPY source exists in the repo and is not excluded from the build context."""
    ignored = {
        line.strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for line in DOCKERFILE.read_text().splitlines():
        parts = line.split()
        if not parts or parts[0] != "COPY" or any(p.startswith("--from") for p in parts):
            continue
        for source in parts[1:-1]:
            if not (ROOT / source).exists():
                problem(f"Dockerfile: COPY {source}, which does not exist")
            if source in ignored or source.split("/")[0] in ignored:
                problem(f"Dockerfile: COPY {source}, which .dockerignore excludes")


def main() -> int:
    """Run every check; print the problems and return a shell exit status."""
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    _, blank = documented_variables()
    test_env = {name: f"check{index}secret" for index, name in enumerate(sorted(blank))}
    check_variables()
    check_dependencies(compose["services"])
    check_volumes(compose)
    check_app_services(compose["services"], test_env)
    check_service_credentials(compose)
    check_collector(compose["services"])
    check_dockerfile()
    for message in notes:
        print(f"note {message}")
    for message in problems:
        print(f"FAIL {message}")
    print(f"{len(problems)} problem(s) in docker-compose.yml, deploy/ and the Dockerfile")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
