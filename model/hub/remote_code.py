"""The remote code of an exported folder: the project's own modules, copied.

Starting from the entry modules (the transformers config and model classes), every
project module they import -- at the top or inside a function -- is found by parsing
the source, so whatever the modules are called today is what gets copied. Each file is
flattened into the export folder and its absolute project imports (``model.``,
``common.``) become relative sibling imports, the form transformers' remote-code loader
follows when it copies a folder's code (``from .name import x``). Nothing is written by
hand here: rename a module inside the project and the next export follows.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

from common.atomic import write_text

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("model", "common")
FORBIDDEN_PACKAGES = ("pipeline", "train")


class RemoteCodeError(ValueError):
    """A module of the closure cannot be copied as remote code; names file, line and why."""


@dataclass(frozen=True)
class ImportSite:
    """One import statement of a project module and the project modules it refers to."""

    node: ast.stmt
    targets: tuple[tuple[str, str | None, str | None], ...]  # (module, imported name or None, alias)


class ProjectSource:
    """Reads module source under ``root`` (the repository root by default)."""

    def __init__(self, root: Path = REPO_ROOT) -> None:
        self.root = Path(root)
        self._reexports: dict[str, dict[str, str]] = {}

    def path(self, module: str) -> Path | None:
        file = self.root.joinpath(*module.split(".")).with_suffix(".py")
        return file if file.is_file() else None

    def is_package(self, module: str) -> bool:
        return (self.root.joinpath(*module.split(".")) / "__init__.py").is_file()

    def reexports(self, package: str) -> dict[str, str]:
        """name -> defining module of the ``from x import name`` lines in a package's __init__.py."""
        if package not in self._reexports:
            init = self.root.joinpath(*package.split(".")) / "__init__.py"
            found: dict[str, str] = {}
            if init.is_file():
                for node in ast.walk(ast.parse(init.read_text(encoding="utf-8"), str(init))):
                    if isinstance(node, ast.ImportFrom) and node.module:
                        module = resolve_relative(package, node.module, node.level)
                        for alias in node.names:
                            found[alias.asname or alias.name] = module
            self._reexports[package] = found
        return self._reexports[package]

    def imports(self, module: str) -> list[ImportSite]:
        """Every import statement of ``module`` that refers to the project."""
        path = self.path(module)
        source = path.read_text(encoding="utf-8")
        package = module.rpartition(".")[0]
        sites = []
        for node in ast.walk(ast.parse(source, str(path))):
            if isinstance(node, ast.Import):
                targets = []
                for alias in node.names:
                    if alias.name.split(".")[0] in FORBIDDEN_PACKAGES:
                        raise RemoteCodeError(f"{path}:{node.lineno}: imports {alias.name}, which model/ may not use")
                    if alias.name.split(".")[0] in PROJECT_PACKAGES:
                        if alias.asname is None or self.path(alias.name) is None:
                            raise RemoteCodeError(f"{path}:{node.lineno}: `import {alias.name}` cannot be made "
                                                  f"relative; write `from {alias.name.rpartition('.')[0]} import "
                                                  f"{alias.name.rpartition('.')[2]}` or import names")
                        targets.append((alias.name, None, alias.asname))
                if targets:
                    sites.append(ImportSite(node, tuple(targets)))
            elif isinstance(node, ast.ImportFrom):
                base = resolve_relative(package, node.module or "", node.level)
                top = base.split(".")[0]
                if top in FORBIDDEN_PACKAGES:
                    raise RemoteCodeError(f"{path}:{node.lineno}: imports {base}, which model/ may not use")
                if top not in PROJECT_PACKAGES:
                    continue
                targets = []
                for alias in node.names:
                    if alias.name == "*":
                        raise RemoteCodeError(f"{path}:{node.lineno}: `from {base} import *` cannot be copied")
                    submodule = f"{base}.{alias.name}"
                    if self.is_package(base) and self.path(submodule) is not None:
                        targets.append((submodule, None, alias.asname or alias.name))
                    elif self.is_package(base):
                        defining = self.reexports(base).get(alias.name)
                        if defining is None or self.path(defining) is None:
                            raise RemoteCodeError(f"{path}:{node.lineno}: {alias.name!r} is neither a module of "
                                                  f"{base} nor re-exported by its __init__.py")
                        targets.append((defining, alias.name, alias.asname))
                    elif self.path(base) is not None:
                        targets.append((base, alias.name, alias.asname))
                    else:
                        raise RemoteCodeError(f"{path}:{node.lineno}: module {base} not found under {self.root}")
                sites.append(ImportSite(node, tuple(targets)))
        return sites


def resolve_relative(package: str, module: str, level: int) -> str:
    """The absolute module of ``from <level dots><module> import`` inside ``package``."""
    if level == 0:
        return module
    parts = package.split(".") if package else []
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join([*parts, module] if module else parts)


def closure(entries: list[str], source: ProjectSource) -> list[str]:
    """The entry modules and every project module they import, transitively (sorted, entries first)."""
    seen: list[str] = []
    todo = list(entries)
    while todo:
        module = todo.pop(0)
        if module in seen:
            continue
        if source.path(module) is None:
            raise RemoteCodeError(f"module {module} not found under {source.root}")
        seen.append(module)
        for site in source.imports(module):
            todo.extend(target for target, _, _ in site.targets if target not in seen)
    return [m for m in entries] + sorted(m for m in seen if m not in entries)


def import_cycle(modules: list[str], source: ProjectSource) -> list[str] | None:
    """A cycle of imports among ``modules`` (lazy ones included), or None.

    transformers 4.x walks a remote-code folder's relative imports until no new name turns
    up, comparing names with and without ``.py``: on a cycle it never stops.
    """
    graph = {m: sorted({t for site in source.imports(m) for t, _, _ in site.targets} & set(modules)) for m in modules}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in graph[module]:
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in modules:
        if module not in state and (found := visit(module)):
            return found
    return None


def flat_names(modules: list[str], renamed: dict[str, str]) -> dict[str, str]:
    """Module -> file stem in the flat folder: ``renamed`` for the entries, else the last
    component, or the whole dotted path with underscores where two modules share one."""
    last = [m.rpartition(".")[2] for m in modules if m not in renamed]
    names = {}
    for module in modules:
        stem = module.rpartition(".")[2]
        names[module] = renamed.get(module) or (module.replace(".", "_") if last.count(stem) > 1 else stem)
    if len(set(names.values())) != len(names):
        raise RemoteCodeError(f"two modules map to one file name: {names}")
    return names


def rewrite(module: str, source: ProjectSource, names: dict[str, str]) -> str:
    """The module's source with every project import turned into a sibling import."""
    path = source.path(module)
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    sites = sorted(source.imports(module), key=lambda s: s.node.lineno, reverse=True)
    for site in sites:
        node = site.node
        first, last = node.lineno - 1, node.end_lineno - 1
        indent = lines[first][: node.col_offset]
        rest = lines[last][node.end_col_offset:].strip()
        if lines[first][: node.col_offset].strip() or (rest and not rest.startswith("#")):
            raise RemoteCodeError(f"{path}:{node.lineno}: put this import on lines of its own to export it")
        lines[first : last + 1] = [indent + stmt + "\n" for stmt in sibling_imports(site, names)]
    return "".join(lines)


def sibling_imports(site: ImportSite, names: dict[str, str]) -> list[str]:
    """Relative import statements equivalent to one project import."""
    from_names: dict[str, list[str]] = {}
    statements = []
    for module, name, alias in site.targets:
        stem = names[module]
        if name is None:  # a whole module: bind it, and name the file in the form transformers follows
            bound = alias or module.rpartition(".")[2]
            statements.append(f"from . import {stem}" + (f" as {bound}" if bound != stem else ""))
            statements.append(f"from .{stem} import __name__ as _{stem}_module  # noqa: F401 (copies {stem}.py)")
        else:
            from_names.setdefault(stem, []).append(name + (f" as {alias}" if alias else ""))
    for stem, imported in from_names.items():
        statements.insert(0, f"from .{stem} import {', '.join(imported)}")
    return statements


def copy_modules(entries: dict[str, str], out: Path, root: Path = REPO_ROOT) -> list[str]:
    """Write the closure of ``entries`` (module -> file stem) into ``out``; the file names written."""
    source = ProjectSource(root)
    modules = closure(list(entries), source)
    cycle = import_cycle(modules, source)
    if cycle:
        raise RemoteCodeError(f"import cycle {' -> '.join(cycle)}: transformers' remote-code loader "
                              "would loop on it; move the shared part into a module both import")
    names = flat_names(modules, entries)
    written = []
    for module in modules:
        file_name = names[module] + ".py"
        text = rewrite(module, source, names)
        if module in entries:
            text += entry_file_list(sorted(names[m] for m in closure([module], source) if m != module))
        write_text(Path(out) / file_name, text)
        written.append(file_name)
    return written


def entry_file_list(stems: list[str]) -> str:
    """Lines that name every file an entry needs, however deep: transformers 4.x copies only
    the files an entry imports itself when it loads a local folder."""
    if not stems:
        return ""
    lines = ["", "", "# Every module this file needs, named for transformers' remote-code loader (they are imported above).",
             *(f"from .{stem} import __name__ as _{stem}_module  # noqa: E402, F401" for stem in stems)]
    return "\n".join(lines) + "\n"
