"""The package's layers: dependencies point one way, and a new import that breaks that fails here.

    cli → {asterisk, admin} → call → {providers, audio, text, storage} → foundation

The foundation is ``types``, ``config``, ``errors``, ``logs``, ``deadline`` and ``system`` (the
machine: safe files, trust, privileges). Every import counts, also one inside a function.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "voiceassist"
FOUNDATION = {"types", "config", "errors", "logs", "deadline", "system", "__init__"}
RANK = {"cli": 4, "__main__": 4, "asterisk": 3, "admin": 3, "call": 2, "providers": 1, "audio": 1, "text": 1, "storage": 1,
        "events": 1, **{name: 0 for name in FOUNDATION}}
# Within one rank only these edges exist (a provider may convert audio and read the knowledge file;
# the admin's commands may speak to the FastAGI listener); everything else is forbidden.
ALLOWED_SIDEWAYS = {("providers", "audio"), ("providers", "text"), ("admin", "asterisk"), ("__main__", "cli")}


def layer(module: str) -> str:
    """``voiceassist.call.turn`` -> ``call``; ``voiceassist.config`` -> ``config``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module) for every import of a voiceassist module in ``path``."""
    module = "voiceassist." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "voiceassist" or target.startswith("voiceassist."):
                # "from .. import providers": the names may be modules themselves
                names = [f"{target}.{a.name}" for a in node.names] if target.count(".") < 1 else [target]
                found += [(node.lineno, name) for name in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("voiceassist.")]
    return found


def violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = layer("voiceassist." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts))
        for line, target in imports(path):
            destination = layer(target)
            if destination == source or destination not in RANK:
                continue
            higher = RANK[destination] > RANK[source]
            sideways = RANK[destination] == RANK[source] and (source, destination) not in ALLOWED_SIDEWAYS
            if higher or (sideways and RANK[source] > 0):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {source} imports {target}")
    return found


def test_dependencies_point_one_way():
    assert violations() == []


def test_every_folder_of_the_package_is_a_known_layer():
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    assert folders | modules <= set(RANK) | {"templates"}, (folders | modules) - set(RANK)


@pytest.mark.parametrize("source, target", [("voiceassist/call/turn.py", "voiceassist.asterisk.agi"),
                                            ("voiceassist/storage/store.py", "voiceassist.providers.base"),
                                            ("voiceassist/providers/gemini.py", "voiceassist.call.turn")])
def test_the_check_would_catch_a_forbidden_import(source, target, tmp_path, monkeypatch):
    """The three edges the design names as never allowed are caught (the check is not vacuous)."""
    copy = tmp_path / "voiceassist"
    for path in PACKAGE.rglob("*.py"):
        destination = copy / path.relative_to(PACKAGE)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(path.read_text())
    planted = copy / Path(source).relative_to("voiceassist")
    planted.write_text(planted.read_text() + f"\n\ndef _planted():\n    import {target}\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", copy)
    assert any(target in v for v in violations())
