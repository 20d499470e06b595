"""Every public function and method of the package and the benchmarks is annotated and documented.

Public: a module-level function, or a method of a public class, whose name does not start with ``_``.
Fully annotated: every parameter (``*args`` and ``**kwargs`` included; ``self``/``cls`` excluded) and
the return value. Documented: it has a docstring. The check reads the source with :mod:`ast`; it
imports nothing and never evaluates an annotation.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("simo_lite", "simo_lite/classroom", "simo_lite/classroom/checks", "benchmarks")
FILES = sorted(p.relative_to(REPO).as_posix() for folder in FOLDERS for p in (REPO / folder).glob("*.py"))

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _public_functions(tree: ast.Module) -> list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, bool]]:
    """(function, is a method) for every public module-level function and public method of a public class."""
    out = []
    for node in tree.body:
        if isinstance(node, _FUNCTIONS) and not node.name.startswith("_"):
            out.append((node, False))
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            out += [(m, True) for m in node.body if isinstance(m, _FUNCTIONS) and not m.name.startswith("_")]
    return out


def _is_static(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)


def _missing(fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> list[str]:
    """What ``fn`` lacks: unannotated parameter names, "return", "docstring"."""
    a = fn.args
    params = [*a.posonlyargs, *a.args]
    if method and not _is_static(fn) and params and params[0].arg in ("self", "cls"):
        params = params[1:]
    params += a.kwonlyargs
    names = [p.arg for p in params if p.annotation is None]
    names += [f"*{v.arg}" for v in (a.vararg,) if v is not None and v.annotation is None]
    names += [f"**{v.arg}" for v in (a.kwarg,) if v is not None and v.annotation is None]
    if fn.returns is None:
        names.append("return")
    if ast.get_docstring(fn) is None:
        names.append("docstring")
    return names


def offenders(source: str, path: str) -> list[str]:
    """``path:line name missing [...]`` for every public function of ``source`` that lacks something."""
    out = []
    for fn, method in _public_functions(ast.parse(source, filename=path)):
        miss = _missing(fn, method)
        if miss:
            out.append(f"{path}:{fn.lineno} {fn.name} missing {miss}")
    return out


def test_the_files_are_found():
    for folder in FOLDERS:
        assert any(f.startswith(folder + "/") and "/" not in f[len(folder) + 1:] for f in FILES), folder
    assert {"simo_lite/experiment.py", "simo_lite/classroom/grade.py", "benchmarks/bench.py"} <= set(FILES)


def test_the_check_finds_every_kind_of_offender():
    source = '''
def ok(a: int, *args: int, b: str = "", **kw: float) -> None:
    """Documented."""

def bare(a, *args, b=1, **kw):
    pass

def _private(a):
    pass

class Public:
    def method(self, x) -> int:
        return x

    @staticmethod
    def static(x: int) -> int:
        """Documented."""
        return x

    @classmethod
    def build(cls) -> "Public":
        """Documented."""
        return cls()

    def _hidden(self, y):
        pass

class _Private:
    def method(self, x):
        pass
'''
    assert offenders(source, "x.py") == [
        "x.py:5 bare missing ['a', 'b', '*args', '**kw', 'return', 'docstring']",
        "x.py:12 method missing ['x', 'docstring']",
    ]
    static_self = 'class C:\n    @staticmethod\n    def f(self) -> None:\n        """Doc."""\n'
    assert offenders(static_self, "y.py") == ["y.py:3 f missing ['self']"]


@pytest.mark.parametrize("path", FILES)
def test_public_functions_are_annotated_and_documented(path):
    found = offenders((REPO / path).read_text(encoding="utf-8"), path)
    assert not found, f"{len(found)} public function(s) not fully annotated or documented:\n" + "\n".join(found)
