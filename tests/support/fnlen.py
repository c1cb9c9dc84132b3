"""Functions longer than a limit, decorators and docstrings included (not a test; a measure).

python tests/support/fnlen.py 80 reconciler/core reconciler/controller reconciler/api
"""

from __future__ import annotations

import ast
import pathlib
import sys


def long_functions(limit: int, paths: list[str]) -> list[tuple[int, str, str]]:
    found = []
    for p in paths:
        root = pathlib.Path(p)
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for f in files:
            for n in ast.walk(ast.parse(f.read_text())):
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                    start = min([d.lineno for d in n.decorator_list] + [n.lineno])
                    length = (n.end_lineno or n.lineno) - start + 1
                    if length > limit:
                        found.append((length, f"{f}:{n.lineno}", n.name))
    return found


if __name__ == "__main__":
    for length, where, name in long_functions(int(sys.argv[1]), sys.argv[2:]):
        print(f"{length:4d}  {where}  {name}")
