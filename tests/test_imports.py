"""The package's import structure, read from the source with `ast` (nothing imported): no module-level import cycle
between smallcap's modules, and no private name (`_name`) taken from another module."""
from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

from conftest import ROOT

PKG = ROOT / 'smallcap'


def _modules() -> dict[str, Path]:
    "{dotted module name: file} of every smallcap module (the generated `_modidx` left out)."
    out = {}
    for p in sorted(PKG.rglob('*.py')):
        if p.name == '_modidx.py': continue
        parts = list(p.relative_to(ROOT).with_suffix('').parts)
        if parts[-1] == '__init__': parts = parts[:-1]
        out['.'.join(parts)] = p
    return out


MODULES = _modules()


def _is_package(mod: str) -> bool:
    return MODULES.get(mod, Path()).name == '__init__.py'


def _base(mod: str, node: ast.ImportFrom) -> str | None:
    "The absolute module an `ImportFrom` reads from (relative imports resolved against `mod`)."
    if not node.level: return node.module
    pkg = mod.split('.') if _is_package(mod) else mod.split('.')[:-1]
    pkg = pkg[:len(pkg) - (node.level - 1)]
    return '.'.join(pkg + ([node.module] if node.module else []))


def _owner(dotted: str) -> str | None:
    "The longest prefix of `dotted` that is a smallcap module."
    parts = dotted.split('.')
    for i in range(len(parts), 0, -1):
        if '.'.join(parts[:i]) in MODULES: return '.'.join(parts[:i])
    return None


def _private(name: str) -> bool:
    return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


class _Scan(ast.NodeVisitor):
    "Imports of smallcap modules (each at module or function level) and private names taken from other modules."

    def __init__(self, mod: str):
        self.mod, self.depth = mod, 0
        self.edges: list[tuple[str, str, int, bool]] = []          # (importer, imported, line, inside a function)
        self.private: list[str] = []                              # 'line: what' of each private name taken from another module
        self.aliases: dict[str, str] = {}                          # local name -> smallcap module it is bound to

    def _function(self, node: ast.AST) -> None:
        self.depth += 1; self.generic_visit(node); self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def _edge(self, target: str, line: int) -> None:
        if target != self.mod: self.edges.append((self.mod, target, line, self.depth > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            if (m := _owner(a.name)) is None: continue
            self._edge(m, node.lineno)
            if a.asname: self.aliases[a.asname] = m
            else: self.aliases[a.name.split('.')[0]] = a.name.split('.')[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _base(self.mod, node)
        if base is None or _owner(base) is None: return
        for a in node.names:
            sub = f"{base}.{a.name}"
            if sub in MODULES:                                    # `from pkg import module`
                self._edge(sub, node.lineno); self.aliases[a.asname or a.name] = sub
                if _private(a.name): self.private.append(f"{node.lineno}: module {sub}")
            else:
                owner = _owner(base)
                self._edge(owner, node.lineno)
                if _private(a.name) and owner != self.mod: self.private.append(f"{node.lineno}: from {owner} import {a.name}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain, n = [node.attr], node.value
        while isinstance(n, ast.Attribute): chain.append(n.attr); n = n.value
        if isinstance(n, ast.Name) and n.id in self.aliases:
            dotted = '.'.join([self.aliases[n.id], *reversed(chain)])
            owner = _owner(dotted)
            rest = dotted[len(owner) + 1:].split('.') if owner and len(dotted) > len(owner) else []
            if owner and owner != self.mod and rest and _private(rest[0]):
                self.private.append(f"{node.lineno}: {owner}.{rest[0]}")
                return
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:        # 'module:function' strings of a registry
        if isinstance(node.value, str) and (m := re.fullmatch(r'(smallcap(?:\.\w+)*):(\w+)', node.value)):
            if m.group(1) in MODULES and m.group(1) != self.mod: self.edges.append((self.mod, m.group(1), node.lineno, True))   # imported on first use
            if _private(m.group(2)) and m.group(1) != self.mod: self.private.append(f"{node.lineno}: '{node.value}'")


def _scan() -> dict[str, _Scan]:
    out = {}
    for mod, p in MODULES.items():
        s = _Scan(mod); s.visit(ast.parse(p.read_text(), str(p))); out[mod] = s
    return out


SCANS = _scan()


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    "Strongly connected components with more than one module (Tarjan), each sorted."
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index: visit(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))

    for v in sorted({*edges, *(w for ws in edges.values() for w in ws)}):
        if v not in index: visit(v)
    return out


def _graph(function_level: bool) -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for s in SCANS.values():
        for a, b, _, inner in s.edges:
            if function_level or not inner: g.setdefault(a, set()).add(b)
    return g


def test_the_scan_sees_imports():
    "The scanner itself: it finds known imports, relative and absolute, at both levels."
    core = SCANS['smallcap.backtest.core']
    assert ('smallcap.backtest.core', 'smallcap.backtest.plan') in {(a, b) for a, b, _, inner in core.edges if not inner}
    assert any(b == 'smallcap.strategy.base' and inner for _, b, _, inner in core.edges)
    assert _cycles({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': {'a'}}) == [['a', 'b', 'c']]
    s = _Scan('smallcap.backtest.sweep')
    s.visit(ast.parse("from smallcap.backtest import core as c\nfrom .plan import _x\nimport smallcap.core\n"
                      "def f():\n    return c._y, smallcap.core._slug, c.backtest\nR = 'smallcap.backtest.vbt:_run'\n"))
    assert s.private == ['2: from smallcap.backtest.plan import _x', '5: smallcap.backtest.core._y', '5: smallcap.core._slug',
                         "6: 'smallcap.backtest.vbt:_run'"]


def test_no_import_cycle_at_module_level():
    cyc = _cycles(_graph(function_level=False))
    assert not cyc, f"module-level import cycles: {cyc}"


def test_function_level_cycles_are_reported():
    "Imports inside functions may close a loop without breaking an import; they are listed (a warning), not refused."
    cyc = _cycles(_graph(function_level=True))
    for c in cyc: warnings.warn(f"function-level import cycle: {' <-> '.join(c)}")
    assert all(len(c) > 1 for c in cyc)


def test_no_private_name_crosses_a_module_boundary():
    bad = [f"{m} {x}" for m, s in SCANS.items() for x in s.private]
    assert not bad, "private names taken from another module (make them public, or move the user):\n" + '\n'.join(bad)


# Private attributes of objects: `obj._name` where `_name` is defined nowhere in the module that reads it (so it belongs to
# another module's class). The names of other libraries' public APIs that start with `_` are allowed.
FOREIGN_API = {'_fields', '_asdict', '_replace', '_make', '_getframe'}   # namedtuple's API, sys._getframe
# every module reads other modules' objects through public names only (the list of reads still to switch is empty)
PENDING: set[tuple[str, str]] = set()


def _foreign_private_attributes() -> set[tuple[str, str, int]]:
    out = set()
    for mod, p in MODULES.items():
        tree = ast.parse(p.read_text(), str(p)); own = set()
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)): own.add(n.name)
            elif isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store): own.add(n.attr)
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store): own.add(n.id)
            elif isinstance(n, ast.keyword) and n.arg: own.add(n.arg)
        for n in ast.walk(tree):
            if (isinstance(n, ast.Attribute) and _private(n.attr) and n.attr not in own and n.attr not in FOREIGN_API
                    and not (isinstance(n.value, ast.Name) and n.value.id in ('self', 'cls'))):
                out.add((mod, ast.unparse(n), n.lineno))
    return out


def test_no_private_attribute_of_another_module():
    found = _foreign_private_attributes()
    bad = sorted(f"{m}:{line} {x}" for m, x, line in found if (m, x) not in PENDING)
    assert not bad, "private attributes of another module's objects (make them public):\n" + '\n'.join(bad)
    left = {(m, x) for m, x, _ in found}
    for m, x in sorted(PENDING & left): warnings.warn(f"{m} still reads {x} (switch it to the public name)")
    stale = PENDING - left
    assert not stale, f"switched already: drop {sorted(stale)} from PENDING"
