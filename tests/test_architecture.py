"""The house's rules, read from the source with ``ast`` (README "How it is built").

Every module of ``bot/`` and ``serializers/`` is parsed; its imports (top-level and inside
functions) become edges between modules and between rooms. The checks fail on an import
circle, an arrow against the order of the rooms, a serving module importing the test kit, a
module over 600 lines, or a function over 80 lines. Each check is also run on a tiny planted
package, so a check that could never fail would show here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 80

# Which rooms each room may import. Arrows point down: cli -> server -> telephony ->
# conversation -> agent -> providers -> config / serializers; observability, state and
# languages sit beside everyone (anyone may import them, they import only the bottom).
BOTTOM = {"config", "serializers"}
BESIDE = {"observability", "state", "languages"}
# The product: the server and every room it may reach (what the kit and the cli may use).
PRODUCT = (
    {
        "server",
        "telephony",
        "conversation",
        "agent",
        "providers",
        "delivery",
        "dialer",
    }
    | BOTTOM
    | BESIDE
)
ALLOWED: dict[str, set[str]] = {
    "serializers": set(),
    "config": {"serializers"},
    "state": {"config"},
    "languages": {"config"},
    "observability": {"config", "serializers"},
    "providers": BOTTOM | BESIDE,
    "agent": {"providers"} | BOTTOM | BESIDE,
    "conversation": {"agent", "providers"} | BOTTOM | BESIDE,
    "telephony": {"conversation", "agent", "providers"} | BOTTOM | BESIDE,
    "delivery": {"providers"} | BOTTOM | BESIDE,
    "dialer": {"agent"} | BOTTOM | BESIDE,
    "server": PRODUCT - {"server"},
    # The phone-less call is a client: it knows the wire and reads records, nothing inside.
    "simulator": BOTTOM | BESIDE,
    # The kit may use the product (it runs the real server); the product never uses the kit.
    "testing": PRODUCT | {"simulator"},
    "cli": PRODUCT | {"simulator", "testing"},
}
SERVING = {"server", "telephony", "conversation", "agent", "providers", "observability"}
# Modules whose room is not their folder's: the command-line entry and the old address of the
# test kit's fakes (``python -m bot.fakes``).
ROOM_OF_MODULE = {"bot.__main__": "cli", "bot.fakes": "testing", "bot": "package"}


@dataclass
class Module:
    name: str
    path: Path
    lines: int
    imports: set[str] = field(default_factory=set)  # module names, resolved within the tree
    long_functions: list[tuple[str, int]] = field(default_factory=list)


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_tree(root: Path, packages: Iterable[str]) -> dict[str, Module]:
    """Every module under ``root/<package>``, with its imports resolved to modules we have."""
    paths = [p for package in packages for p in sorted((root / package).rglob("*.py"))]
    modules = {module_name(root, p): Module(module_name(root, p), p, 0) for p in paths}
    for module in modules.values():
        source = module.path.read_text(encoding="utf-8")
        module.lines = len(source.splitlines())
        tree = ast.parse(source, filename=str(module.path))
        is_package = module.path.name == "__init__.py"
        for target in _imported_names(tree, module.name, is_package):
            resolved = _resolve(target, modules)
            if resolved and resolved != module.name:
                module.imports.add(resolved)
        module.long_functions = [
            (node.name, node.end_lineno - node.lineno + 1)
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        ]
    return modules


def _imported_names(tree: ast.AST, here: str, is_package: bool) -> Iterable[str]:
    """``import a.b`` -> a.b; ``from a import b`` -> a.b, which resolves to the submodule a.b
    or else to a; relative imports are made absolute."""
    for node in ast.walk(tree):  # every level: function-level imports count too
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = here.split(".") if is_package else here.split(".")[:-1]
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                yield f"{base}.{alias.name}"


def _resolve(target: str, modules: Mapping[str, Module]) -> str | None:
    """The longest prefix of ``target`` that is a module of the tree (None: a library).

    ``from bot.server import exotel_routes`` is an edge to that submodule, not to the package's
    ``__init__`` that Python runs first: counting that would make every package importing its
    own submodules a circle.
    """
    parts = target.split(".")
    while parts:
        name = ".".join(parts)
        if name in modules:
            return name
        parts.pop()
    return None


def room_of(name: str) -> str:
    if name in ROOM_OF_MODULE:
        return ROOM_OF_MODULE[name]
    parts = name.split(".")
    if parts[0] != "bot":
        return parts[0]  # serializers
    return parts[1]


def circles(modules: Mapping[str, Module]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each a circle of imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for dep in modules[name].imports:
            if dep not in index:
                visit(dep)
                low[name] = min(low[name], low[dep])
            elif dep in on_stack:
                low[name] = min(low[name], index[dep])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == name:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return found


def arrows_against_the_order(modules: Mapping[str, Module]) -> list[str]:
    wrong = []
    for module in modules.values():
        here = room_of(module.name)
        if here == "package":
            continue
        for dep in sorted(module.imports):
            there = room_of(dep)
            if there != here and there != "package" and there not in ALLOWED.get(here, set()):
                wrong.append(f"{module.name} ({here}) imports {dep} ({there})")
    return wrong


def serving_imports_of_the_kit(modules: Mapping[str, Module]) -> list[str]:
    return [
        f"{module.name} imports {dep}"
        for module in modules.values()
        if room_of(module.name) in SERVING
        for dep in sorted(module.imports)
        if room_of(dep) == "testing"
    ]


def oversized(modules: Mapping[str, Module]) -> list[str]:
    big = [f"{m.name}: {m.lines} lines" for m in modules.values() if m.lines > MAX_MODULE_LINES]
    long = [f"{m.name}.{fn}: {n} lines" for m in modules.values() for fn, n in m.long_functions]
    return big + long


@pytest.fixture(scope="module")
def tree() -> dict[str, Module]:
    return read_tree(REPO, ["bot", "serializers"])


def test_the_tree_is_read(tree: dict[str, Module]) -> None:
    """The reader sees the rooms and their imports (a reader that saw nothing would pass all)."""
    rooms = {room_of(name) for name in tree}
    assert {"telephony", "conversation", "providers", "server", "observability"} <= rooms
    assert "bot.conversation.pipeline" in tree["bot.telephony.call"].imports
    # A function-level import counts too: the registry loads the offline models lazily.
    assert "bot.providers.offline" in tree["bot.providers.registry"].imports


def test_no_import_circle(tree: dict[str, Module]) -> None:
    assert circles(tree) == []


def test_arrows_point_down(tree: dict[str, Module]) -> None:
    assert arrows_against_the_order(tree) == []


def test_serving_code_never_imports_the_test_kit(tree: dict[str, Module]) -> None:
    assert serving_imports_of_the_kit(tree) == []


def test_modules_and_functions_stay_small(tree: dict[str, Module]) -> None:
    assert oversized(tree) == []


def test_every_room_says_what_it_owns(tree: dict[str, Module]) -> None:
    packages = [m for m in tree.values() if m.path.name == "__init__.py" and m.name != "bot"]
    assert len(packages) >= 8
    for module in packages:
        doc = ast.get_docstring(ast.parse(module.path.read_text(encoding="utf-8")))
        assert doc and "ust not" in doc, f"{module.name}: say what it owns and must not touch"


# -- the checks catch what they are for: a tiny planted package ---------------------------------


def _plant(root: Path, files: Mapping[str, str]) -> dict[str, Module]:
    for rel, source in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return read_tree(root, ["bot"])


def test_a_planted_circle_is_found(tmp_path: Path) -> None:
    modules = _plant(
        tmp_path,
        {
            "bot/__init__.py": "",
            "bot/providers/__init__.py": '"""x"""',
            "bot/providers/a.py": "from bot.providers import b\n",
            # A function-level import closes the circle.
            "bot/providers/b.py": "def f():\n    from bot.providers.a import f\n",
        },
    )
    assert circles(modules) == [["bot.providers.a", "bot.providers.b"]]


def test_a_planted_upward_arrow_is_found(tmp_path: Path) -> None:
    modules = _plant(
        tmp_path,
        {
            "bot/__init__.py": "",
            "bot/conversation/__init__.py": "",
            "bot/conversation/holding.py": "from bot.telephony.transport import chunks\n",
            "bot/telephony/__init__.py": "",
            "bot/telephony/transport.py": "from ..conversation import holding\n",
        },
    )
    assert arrows_against_the_order(modules) == [
        "bot.conversation.holding (conversation) imports bot.telephony.transport (telephony)"
    ]


def test_a_planted_kit_import_in_serving_code_is_found(tmp_path: Path) -> None:
    modules = _plant(
        tmp_path,
        {
            "bot/__init__.py": "",
            "bot/testing/__init__.py": "",
            "bot/testing/fakes.py": "",
            "bot/server/__init__.py": "",
            "bot/server/app.py": "def create():\n    import bot.testing.fakes\n",
        },
    )
    assert serving_imports_of_the_kit(modules) == ["bot.server.app imports bot.testing.fakes"]


def test_a_planted_big_module_and_long_function_are_found(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    modules = _plant(
        tmp_path,
        {
            "bot/__init__.py": "",
            "bot/big.py": "\n".join(f"X{i} = {i}" for i in range(MAX_MODULE_LINES + 1)) + "\n",
            "bot/long.py": f"def long():\n{body}\n",
            "bot/fine.py": "def short():\n    return 1\n",
        },
    )
    assert oversized(modules) == [
        f"bot.big: {MAX_MODULE_LINES + 1} lines",
        f"bot.long.long: {MAX_FUNCTION_LINES + 1} lines",
    ]
