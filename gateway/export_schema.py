"""Export the GraphQL schema to gateway/schema.graphql, or check it (`--check`): the checked-in
SDL must match the code, and must not break the released contract (the SDL at the commit in
proto/BREAKING_BASELINE; none there reads as an empty schema).

    uv run python -m gateway.export_schema          # write gateway/schema.graphql
    uv run python -m gateway.export_schema --check  # CI: fail when stale or breaking
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from graphql import build_schema, find_breaking_changes

ROOT = Path(__file__).resolve().parent.parent
SDL_FILE = ROOT / "gateway" / "schema.graphql"
SDL_PATH = "gateway/schema.graphql"


def current_sdl() -> str:
    """The SDL the code builds."""
    from gateway.graphql.schema import schema

    return schema.as_str() + "\n"


def stale(sdl_file: Path = SDL_FILE) -> bool:
    """True when the checked-in file differs from what the code builds."""
    return not sdl_file.exists() or sdl_file.read_text() != current_sdl()


def baseline_sdl(root: Path = ROOT) -> str:
    """The SDL at the baseline commit, "" when that commit has none."""
    commit = (root / "proto" / "BREAKING_BASELINE").read_text().strip()
    shown = subprocess.run(
        ["git", "-C", str(root), "show", f"{commit}:{SDL_PATH}"],
        capture_output=True,
        text=True,
        check=False,
    )
    return shown.stdout if shown.returncode == 0 else ""


def breaking_changes(old_sdl: str, new_sdl: str) -> list[str]:
    """What `new_sdl` breaks for clients of `old_sdl` (nothing when there was none)."""
    if not old_sdl.strip():
        return []
    changes = find_breaking_changes(build_schema(old_sdl), build_schema(new_sdl))
    # graphql-core also reports a standard scalar no longer referenced; no client can break on it.
    return [
        f"{change.type.name}: {change.description}"
        for change in changes
        if not change.description.startswith("Standard scalar")
    ]


def main(argv: list[str]) -> int:
    if "--check" not in argv:
        SDL_FILE.write_text(current_sdl())
        print(f"wrote {SDL_PATH}")
        return 0
    failed = False
    if stale():
        print(f"{SDL_PATH} is stale: run python -m gateway.export_schema", file=sys.stderr)
        failed = True
    for change in breaking_changes(baseline_sdl(), current_sdl()):
        print(f"breaking GraphQL change: {change}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
