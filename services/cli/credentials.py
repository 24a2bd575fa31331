"""Service credentials of a local deployment, without a browser: one secret per service in the
state dir (mode 0600, kept across runs), and the list of their hashes auth accepts.

Each service is told only the path of its own secret (SERVICE_CREDENTIAL_FILE); auth is told the
path of the hash list (AUTH_SERVICE_CREDENTIALS_FILE), so no secret sits in an environment.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from services.auth.api_keys import new_service_credential, service_credential_entry

CREDENTIALS_DIR = "service-credentials"
ACCEPTED_FILE = "accepted"


def provision(state_dir: Path, services: Iterable[str]) -> tuple[dict[str, Path], Path]:
    """The credential file of each service (created when missing) and auth's hash list file."""
    directory = (state_dir / CREDENTIALS_DIR).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    files: dict[str, Path] = {}
    entries: list[str] = []
    for name in services:
        path = directory / name
        if not path.exists():
            path.touch(mode=0o600)
            path.write_text(new_service_credential() + "\n")
        files[name] = path
        entries.append(service_credential_entry(name, path.read_text().strip()))
    accepted = directory / ACCEPTED_FILE
    accepted.write_text("\n".join(entries) + "\n")
    return files, accepted
