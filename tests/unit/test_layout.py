"""The package boundaries of services/: a service package imports only services/common, the
generated `counterpick` code and third-party libraries, never another service's package, so
each can be changed, deployed and tested on its own. Only the `counterpick` command
(services/cli) ties services together; services/common imports no service at all.

Every import counts, including those inside functions (a deferred import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
# Packages allowed to import service packages: the command that starts and drives them.
COMMANDS = {"cli"}
SHARED = "common"


def _service_packages() -> set[str]:
    return {
        path.name
        for path in SERVICES.iterdir()
        if path.is_dir() and (path / "__init__.py").exists() and path.name != SHARED
    }


def _imported_modules(path: Path) -> set[str]:
    """Absolute module names `path` imports, wherever in the file the import is."""
    tree = ast.parse(path.read_text(), filename=str(path))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                # A relative import stays inside its own package.
                continue
            if node.module is not None:
                modules.add(node.module)
                # `from services import model` names a package too.
                modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def _foreign_imports(package: str, services: set[str]) -> list[str]:
    """`file: module` for every import in services/<package> of a service package other than
    its own."""
    found = []
    for path in sorted((SERVICES / package).rglob("*.py")):
        for module in sorted(_imported_modules(path)):
            parts = module.split(".")
            if len(parts) >= 2 and parts[0] == "services":
                target = parts[1]
                if target in services and target != package:
                    found.append(f"{path.relative_to(SERVICES.parent)}: {module}")
    return found


def test_no_service_imports_another_service() -> None:
    services = _service_packages()
    assert {"etl", "model", "ingest"} <= services  # the scan looks where the services are
    offending = [
        line
        for package in sorted(services - COMMANDS)
        for line in _foreign_imports(package, services)
    ]
    assert offending == []


def test_common_imports_no_service() -> None:
    assert _foreign_imports(SHARED, _service_packages()) == []
