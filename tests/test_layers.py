"""The package's layers, checked: who may import whom, and no private names across modules.

Dependencies point down (CONTRIBUTING.md draws it):

    cli, commands, shell_completions  the command line
    client, mail, script, explain,    features; mail and script drive client's
    servers, practice                 live-session engine, client shows explain's view
    errors                            the error funnel
    knowledge, net, store,            data and matcher, the network, the mail store,
    config_file                       the config file's per-host defaults
    protocols                         sans-IO cores, used by clients and servers
    exitcodes, terminal, environment  the base: no mailtalk imports above it

``ALLOWED`` is that picture as a table; every import in the package (at the top of a
module or inside a function) must be in it. A feature never imports a sibling feature
that is not listed; a shared step moves down a layer instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mailtalk"

BASE = frozenset({"mailtalk", "exitcodes", "terminal", "environment", "language"})
# group -> the groups it may import (besides itself and the base).
ALLOWED: dict[str, frozenset[str]] = {
    "protocols": frozenset(),
    "knowledge": frozenset({"protocols"}),
    "store": frozenset(),
    "net": frozenset({"protocols", "knowledge"}),
    "errors": frozenset({"net", "protocols"}),
    "explain": frozenset({"knowledge", "errors"}),
    "client": frozenset({"protocols", "net", "knowledge", "errors", "explain"}),
    "config_file": frozenset({"net"}),
    "script": frozenset({"protocols", "net", "knowledge", "errors", "client", "config_file"}),
    "mail": frozenset({"protocols", "net", "knowledge", "errors", "client"}),
    "servers": frozenset({"protocols", "net", "knowledge", "store", "errors"}),
    "practice": frozenset(
        {"protocols", "net", "knowledge", "store", "errors", "client", "servers", "mail"}
    ),
    # click's own words in the chosen language, said while the command line is read
    "clicklanguage": frozenset({"knowledge"}),
    "cli": frozenset({"errors", "net", "clicklanguage"}),
    # describes the command line (walks cli's tree), so it sits beside it
    "shell_completions": frozenset({"cli", "net"}),
    "commands": frozenset(
        {
            "cli", "shell_completions", "errors", "net", "knowledge", "protocols",
            "client", "mail", "script", "explain", "servers", "practice", "config_file",
            "clicklanguage",
        }
    ),
    "pytest_plugin": frozenset({"servers"}),
    "__main__": frozenset({"cli"}),
}
for _base in BASE:
    ALLOWED[_base] = frozenset()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def group(module: str) -> str:
    """``mailtalk.client.repl.app`` -> ``client``; ``mailtalk.errors`` -> ``errors``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "mailtalk"


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) for every mailtalk import in ``path``, wherever it stands."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "mailtalk" or node.module.startswith("mailtalk."):
                names = [alias.name for alias in node.names]
                if node.module == "mailtalk":
                    # from mailtalk import errors: each name is a module (or __version__)
                    for name in names:
                        if not name.startswith("__"):  # __version__
                            found.append((node.lineno, f"mailtalk.{name}", []))
                else:
                    found.append((node.lineno, node.module, names))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("mailtalk."):
                    found.append((node.lineno, alias.name, []))
    return found


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_group_is_in_the_table() -> None:
    groups = {group(module_name(path)) for path in sources()}
    groups.discard("mailtalk")
    assert groups <= set(ALLOWED), sorted(groups - set(ALLOWED))


def test_imports_point_down() -> None:
    wrong = []
    for path in sources():
        own = group(module_name(path))
        for line, module, _names in imports(path):
            target = group(module)
            if target in (own, "mailtalk") or target in BASE:
                continue
            if target not in ALLOWED.get(own, frozenset()):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {own} -> {module}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_no_private_names_across_modules() -> None:
    """A leading underscore means "this module only": another module needing it makes it
    public where it lives."""
    wrong = []
    for path in sources():
        own = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported_modules: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not node.module.startswith("mailtalk") or node.module == own:
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        wrong.append(
                            f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: "
                            f"from {node.module} import {alias.name}"
                        )
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("mailtalk."):
                        imported_modules[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
            ):
                base = ast.unparse(node.value)
                if base in imported_modules and imported_modules[base] != own:
                    wrong.append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {base}.{node.attr}"
                    )
    assert not wrong, "private names used across modules:\n" + "\n".join(wrong)


def test_the_table_has_no_cycles() -> None:
    """The table itself points down: no group reaches back to itself."""

    def reach(start: str, seen: frozenset[str]) -> None:
        for target in ALLOWED.get(start, frozenset()):
            if target in ("cli", "commands") and start in ("cli", "commands"):
                continue  # cli loads commands by name, commands declare on cli's group
            assert target not in seen, f"cycle: {' -> '.join([*seen, target])}"
            reach(target, seen | {target})

    for name in ALLOWED:
        reach(name, frozenset({name}))


def test_the_layout_pages_name_every_folder() -> None:
    """CONTRIBUTING.md and the README's design notes draw the package; a folder added or
    renamed without them leaves a newcomer a wrong map."""
    root = PACKAGE.parent
    folders = sorted(
        str(init.parent.relative_to(PACKAGE)).split("/")[-1]
        for init in PACKAGE.rglob("__init__.py")
        if init.parent != PACKAGE
    )
    for page in ("CONTRIBUTING.md", "README.md"):
        text = (root / page).read_text(encoding="utf-8")
        missing = [name for name in folders if f"{name}/" not in text]
        assert not missing, f"{page} does not name {missing}"
