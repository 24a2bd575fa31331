"""`counterpick`: run the whole mesh (`up`), one service (`serve`), check health, load dumps,
recompute, or inspect and replay dead letters (`dlq`)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

from services.cli.dlq import REASONS as DLQ_REASONS
from services.cli.dlq import run_dlq
from services.cli.health import check_health
from services.cli.mesh_state import MeshState, describe_child
from services.cli.up import (
    CREDENTIAL_HOLDERS,
    EDGE_PORT,
    PUBLIC_TLS_PORTS,
    SERVICES,
    MeshPlan,
    run_up,
)
from services.common.config import DEFAULT_GRPC_PORTS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="counterpick", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start stores, the six services and the edge")
    up.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    up.add_argument("--edge-port", type=int, default=EDGE_PORT)
    for name in SERVICES:
        up.add_argument(f"--{name}-port", type=int, default=DEFAULT_GRPC_PORTS[name])
    up.add_argument(
        "--kafka-port",
        type=int,
        default=9092,
        help="port of the embedded broker (a free one is used if taken)",
    )
    up.add_argument(
        "--embedded-stores",
        action="store_true",
        help="start embedded PostgreSQL and Redis even if servers answer on the standard ports",
    )
    up.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".counterpick"),
        help="where embedded stores keep data and services write logs",
    )
    up.add_argument(
        "--tls-cert",
        type=Path,
        help="PEM certificate chain: draft, model and auth also serve TLS on public ports",
    )
    up.add_argument("--tls-key", type=Path, help="PEM private key of --tls-cert")
    up.add_argument(
        "--no-seed",
        action="store_true",
        help="leave an empty warehouse empty (default: load the bundled seed on first start)",
    )
    for name, port in PUBLIC_TLS_PORTS.items():
        up.add_argument(f"--{name}-tls-port", type=int, default=port)

    load = commands.add_parser(
        "import", help="load dump files (CSV/JSON match data) into the warehouse"
    )
    load.add_argument("paths", nargs="+", type=Path)
    load.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".counterpick"),
        help="where the embedded warehouse lives (unless WAREHOUSE_DSN is set)",
    )

    migrate = commands.add_parser("migrate", help="apply pending warehouse migrations")
    migrate.add_argument("--state-dir", type=Path, default=Path(".counterpick"))

    recompute = commands.add_parser(
        "recompute", help="recompute statistics and win models now (progress), then list runs"
    )
    recompute.add_argument("--full", action="store_true", help="recount every match")
    recompute.add_argument("--list", action="store_true", help="only list the recent runs")
    recompute.add_argument("--redis-url", default=None, help="default: REDIS_URL or local")
    recompute.add_argument("--state-dir", type=Path, default=Path(".counterpick"))

    dlq = commands.add_parser(
        "dlq", help="list dead letters by reason, or replay them after a fix (through etl)"
    )
    dlq.add_argument("action", nargs="?", choices=["list", "replay"], default="list")
    dlq.add_argument("--reason", choices=DLQ_REASONS, help="only letters with this reason")
    dlq.add_argument(
        "--match-id", type=int, action="append", default=[], help="only this match (repeatable)"
    )
    dlq.add_argument("--all", action="store_true", help="replay: every open letter")
    dlq.add_argument("--limit", type=int, default=100, help="list: at most this many entries")
    dlq.add_argument("--etl-address", default=None, help="host:port (default: from --state-dir)")
    dlq.add_argument("--state-dir", type=Path, default=Path(".counterpick"))

    serve = commands.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=[*SERVICES, "edge"])

    status = commands.add_parser(
        "status", help="gRPC health of every service, and restarts seen by `counterpick up`"
    )
    status.add_argument("--host", default="127.0.0.1")
    for name in SERVICES:
        status.add_argument(
            f"--{name}-port",
            type=int,
            default=None,
            help=f"default: from --state-dir, else {DEFAULT_GRPC_PORTS[name]}",
        )
    status.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".counterpick"),
        help="where a running `counterpick up` keeps mesh.json (addresses, restarts)",
    )

    token = commands.add_parser(
        "token", help="mint an access token from the local deployment's signing keys"
    )
    token.add_argument("--account-id", type=int, required=True, help="32-bit Steam account id")
    token.add_argument("--role", choices=["admin", "service"], action="append", default=[])
    token.add_argument(
        "--scope", action="append", default=[], help="narrow the token to a scope (repeatable)"
    )
    token.add_argument("--ttl-seconds", type=int, default=900)
    token.add_argument("--state-dir", type=Path, default=Path(".counterpick"))

    credentials = commands.add_parser(
        "credentials",
        help="write the service credentials and the hashes auth accepts (kept when they exist)",
    )
    credentials.add_argument("--state-dir", type=Path, default=Path(".counterpick"))

    check = commands.add_parser("healthcheck", help="exit 0 only if ADDRESS is SERVING")
    check.add_argument("address", help="host:port")
    check.add_argument("--service", default="", help="one gRPC service name (default: overall)")
    return parser


def _status(args: argparse.Namespace) -> int:
    state = MeshState.read(args.state_dir)
    if state is not None and not state.supervisor_alive():
        state = None  # left behind by a `counterpick up` that is gone

    def address(name: str) -> str:
        port = getattr(args, f"{name}_port")
        if port is None and state is not None and name in state.children:
            return state.children[name].address
        return f"{args.host}:{port or DEFAULT_GRPC_PORTS[name]}"

    async def gather() -> list[tuple[str, str, str]]:
        addresses = {name: address(name) for name in SERVICES}
        results = await asyncio.gather(*(check_health(a) for a in addresses.values()))
        return [(n, addresses[n], r) for n, r in zip(SERVICES, results, strict=True)]

    rows = asyncio.run(gather())
    for name, where, result in rows:
        child = state.children.get(name) if state is not None else None
        print(f"{name:<8} {where:<22} {result:<12} {describe_child(child)}".rstrip())
    edge = state.children.get("edge") if state is not None else None
    if edge is not None:
        print(f"{'edge':<8} {edge.address:<22} {'':<12} {describe_child(edge)}".rstrip())
    return 0 if all(result == "SERVING" for *_, result in rows) else 1


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 - one return per command
    """Parse the command line and run the chosen command; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "token":
        from services.cli.token import mint_token, registered_user_id

        user_id = registered_user_id(args.state_dir, args.account_id)
        if user_id is None:
            print(
                "counterpick: no running user service in the state dir; the token's user is not "
                "registered (fine for services that only check the signature)",
                file=sys.stderr,
            )
        print(
            mint_token(
                args.state_dir,
                account_id=args.account_id,
                roles=args.role,
                scopes=args.scope,
                ttl_seconds=args.ttl_seconds,
                user_id=user_id,
            )
        )
        return 0
    if args.command == "credentials":
        from services.cli.credentials import provision

        # The same files `counterpick up` gives its children; for docker compose, point
        # SERVICE_CREDENTIALS_DIR at the directory printed.
        _, accepted = provision(args.state_dir, CREDENTIAL_HOLDERS)
        print(accepted.parent)
        return 0
    if args.command == "up":
        if (args.tls_cert is None) != (args.tls_key is None):
            parser.error("--tls-cert and --tls-key go together")
        plan = MeshPlan(
            host=args.host,
            edge_port=args.edge_port,
            grpc_ports={name: getattr(args, f"{name}_port") for name in SERVICES},
            state_dir=args.state_dir,
            kafka_port=args.kafka_port,
            embedded_stores=args.embedded_stores,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ports={name: getattr(args, f"{name}_tls_port") for name in PUBLIC_TLS_PORTS},
            seed=not args.no_seed,
        )

        return asyncio.run(run_up(plan))
    if args.command == "import":
        from services.cli.importing import run_import

        return run_import(args.paths, args.state_dir)
    if args.command == "migrate":
        from services.cli.importing import run_migrate

        return run_migrate(args.state_dir)
    if args.command == "recompute":
        from services.cli.recompute import run_recompute

        return run_recompute(
            args.state_dir, full=args.full, list_only=args.list, redis_url=args.redis_url
        )
    if args.command == "dlq":
        return run_dlq(
            args.state_dir,
            action=args.action,
            address=args.etl_address,
            reason=args.reason,
            match_ids=args.match_id,
            replay_all=args.all,
            limit=args.limit,
        )
    if args.command == "serve":
        module = (
            "gateway.__main__" if args.service == "edge" else f"services.{args.service}.__main__"
        )
        importlib.import_module(module).main()
        return 0
    if args.command == "status":
        return _status(args)
    result = asyncio.run(check_health(args.address, args.service))
    print(result)
    return 0 if result == "SERVING" else 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
