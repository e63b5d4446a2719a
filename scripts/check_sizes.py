"""Every room is read in one sitting: no class over 200 lines and no function over 60 in the package.

Usage: python scripts/check_sizes.py [PACKAGE_DIR]   (default: launcher). Exit 1 naming each one too long.
A function's lines run from its `def` (decorators excluded) to its last line, its docstring included.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LIMITS = {ast.ClassDef: 200, ast.FunctionDef: 60, ast.AsyncFunctionDef: 60}


def too_long(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            limit = LIMITS.get(type(node))
            if limit is not None:
                lines = node.end_lineno - node.lineno + 1  # type: ignore[attr-defined]
                if lines > limit:
                    kind = "class" if isinstance(node, ast.ClassDef) else "function"
                    found.append(f"{path}:{node.lineno}: {kind} {node.name} is {lines} lines (at most {limit})")  # type: ignore[attr-defined]
    return found


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "launcher")
    found = too_long(root)
    for line in found:
        print(line)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
