"""A cache fingerprint of the code Transform and the Trainer run: every source file of the
package that their module files can import, found by reading import statements.

TFX caches a component when its inputs and exec properties repeat. The module files are
referenced by name, so their code is not part of that key; this hash, passed as an exec
property, is. It follows imports at any depth (including the deferred ones inside
functions), so a change to e.g. ``mtrec.examples``, which the export uses, re-runs the
Trainer, while docs and modules neither component can reach leave the cache alone.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.machinery
import sys
from collections.abc import Iterable
from pathlib import Path


def code_fingerprint(entry_modules: Iterable[str], package: str = "mtrec") -> str:
    """Hash of the names and bytes of every ``package`` module the entries can import."""
    digest = hashlib.sha256()
    for name, path in sorted(reachable_sources(entry_modules, package).items()):
        digest.update(name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def reachable_sources(entry_modules: Iterable[str], package: str = "mtrec") -> dict[str, Path]:
    """Module name → source file, for the entries and everything of ``package`` they import,
    with the ``__init__`` of every package on the way (Python runs those too)."""
    found: dict[str, Path] = {}
    pending = list(entry_modules)
    while pending:
        name = pending.pop()
        if name in found:
            continue
        path = _source(name)
        if path is None:
            continue
        found[name] = path
        parents = [name.rsplit(".", depth)[0] for depth in range(1, name.count(".") + 1)]
        imported = _imports(path, name, is_package=path.name == "__init__.py")
        pending += [m for m in (*parents, *imported) if m.split(".")[0] == package]
    return found


def _source(module: str) -> Path | None:
    """The source file of ``module``, found as the import system would, importing nothing."""
    spec = _spec(module)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


@functools.cache
def _spec(module: str) -> importlib.machinery.ModuleSpec | None:
    """Ask each finder on ``sys.meta_path`` (an editable install adds its own) with the
    parent package's search path; a name under a plain module is no module at all."""
    parent, _, _ = module.rpartition(".")
    path = None
    if parent:
        parent_spec = _spec(parent)
        if parent_spec is None or parent_spec.submodule_search_locations is None:
            return None
        path = list(parent_spec.submodule_search_locations)
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        spec = find(module, path) if find else None
        if spec is not None:
            return spec
    return None


def _imports(path: Path, module: str, is_package: bool) -> list[str]:
    """Every module an ``import`` in ``path`` may name: ``from a import b`` yields ``a`` and
    ``a.b`` (b may be a submodule); relative imports are resolved against ``module``."""
    here = module if is_package else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = here.rsplit(".", node.level - 1)[0] if node.level > 1 else here
                base = f"{anchor}.{base}" if base else anchor
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
    return names
