"""The package's shape, checked from its source: no import cycles, and the data model behind
the store layer (no module outside `batchd/store/` builds a key or sends a Redis command)."""

from __future__ import annotations

import ast
from pathlib import Path

from batchd.store.keys import Keys

PACKAGE = Path(__file__).resolve().parent.parent / "batchd"
#: Redis commands a module outside the store could send through a client (redis-py names).
REDIS_METHODS = frozenset(
    [
        "get",
        "set",
        "hget",
        "hset",
        "hgetall",
        "hmget",
        "hdel",
        "hincrby",
        "hsetnx",
        "lrange",
        "lpush",
        "rpush",
        "lpop",
        "rpop",
        "llen",
        "lrem",
        "ltrim",
        "lindex",
        "lmove",
        "blmove",
        "blmpop",
        "zadd",
        "zrem",
        "zrange",
        "zrangebyscore",
        "zrevrange",
        "zcard",
        "zscore",
        "sadd",
        "srem",
        "smembers",
        "sismember",
        "spop",
        "incr",
        "expire",
        "pexpire",
        "exists",
        "delete",
        "unlink",
        "eval",
        "evalsha",
        "scan_iter",
        "hscan_iter",
        "register_script",
        "mget",
        "mset",
        "ttl",
        "pttl",
    ]
)
#: Modules that talk to a Redis server but not to batchd's data: the embedded server's
#: start-up check.
OUTSIDE_DATA = frozenset({"batchd.embedded"})
KEY_METHODS = frozenset(m for m in dir(Keys) if not m.startswith("_"))


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _type_checking_only(node: ast.If) -> bool:
    return ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every batchd module this one imports when it runs (function-level imports too; those
    under `if TYPE_CHECKING:` never run), with the packages each import runs first."""
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in ast.walk(node):
                skip.add(id(child))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        for target in targets:
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                mod = ".".join(parts[:i])
                if mod in known and mod != name:
                    out.add(mod)
    return out


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_round_a_cycle() -> None:
    """The import graph of `batchd` (function-level imports included) has no cycle."""
    mods = modules()
    known = set(mods)
    graph = {name: imports_of(name, path, known) for name, path in mods.items()}
    # A package imports its own submodules; a submodule importing its package is the usual
    # `from batchd.store import x` and runs the package's __init__ first, not a cycle of code.
    for name in graph:
        graph[name] = {
            m for m in graph[name] if not (m.startswith(name + ".") and name in mods)
        } | {m for m in graph[name] if m.startswith(name + ".")}
    pure = {name: {m for m in deps if not name.startswith(m + ".")} for name, deps in graph.items()}
    assert cycles(pure) == []


def _calls(path: Path) -> list[tuple[int, str, str]]:
    """(line, the called attribute, the expression it is called on) of every method call."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            out.append((node.lineno, node.func.attr, ast.unparse(node.func.value)))
    return out


def test_no_module_outside_the_store_builds_a_key() -> None:
    """Key names are built only in `batchd/store/`: nothing else calls a `Keys` method."""
    bad = []
    for name, path in modules().items():
        if name.startswith(("batchd.store", "batchd.emulator")):
            continue
        for line, attr, on in _calls(path):
            if attr in KEY_METHODS and on.split(".")[-1] == "keys":
                bad.append(f"{name}:{line} {on}.{attr}(...)")
    assert bad == []


def test_no_module_outside_the_store_sends_redis_commands() -> None:
    """Redis commands on batchd's data go through the store's calls and reads only."""
    clients = {"redis", "pipe", "r", "conn", "rq_redis"}
    bad = []
    for name, path in modules().items():
        if name.startswith(("batchd.store", "batchd.emulator")) or name in OUTSIDE_DATA:
            continue
        for line, attr, on in _calls(path):
            if attr in REDIS_METHODS and on.split(".")[-1] in clients:
                bad.append(f"{name}:{line} {on}.{attr}(...)")
    assert bad == []


def test_every_script_declares_keys_through_its_header() -> None:
    """Each Lua script's header documents its KEYS and ARGV (or says it takes none)."""
    lua = PACKAGE / "store" / "lua"
    undocumented = [
        p.name
        for p in sorted(lua.glob("*.lua"))
        if p.name != "common.lua" and "-- KEYS:" not in p.read_text()
    ]
    assert undocumented == []
