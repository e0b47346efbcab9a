"""dvc.yaml lists, for every stage, all the project code that stage runs, and only that code.

A stage whose deps miss a module it imports is reported up to date by DVC after that module changes, so
its outputs (metrics included) silently go stale. Here each stage's entry module is read from its `cmd`
(`python -m stages.train ...` -> stages/train.py), the transitive closure of its project-internal imports is
computed with `ast` (every `import` / `from ... import` anywhere in a file, function bodies and the
`__main__` tail included, since lazy imports run too; importing `a.b.c` also runs `a/__init__.py` and
`a/b/__init__.py`), and every file of the closure must lie under one of the stage's deps. The other way
round, a stage must not depend on code it never runs: each stage enters through its own module, not
stages/cli.py (which imports every stage), and each code dep holds some of the stage's closure. Those
checks are plain parsing, no imports of the project: fast, and independent of dvc, torch or anything else
being installed. The last tests run the entries themselves: every stage's cmd parses through its module's
`__main__` (which must do what the `groundedbert` callback does first), one cheap command gives what
`groundedbert` gives, and `python -m stages.cli` still offers every command.
"""
from __future__ import annotations

import ast
import runpy
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
# Deps under these folders are code: each must exist (a typo'd one would never trigger a re-run).
CODE_ROOTS = ("pipeline", "stages")


def load_stages() -> dict[str, dict]:
    """Stage name -> its definition; a foreach stage's `do` template stands for all its items (they
    share the code deps: only data paths carry `${item}` / `${key}`)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    return {name: (stage["do"] if "foreach" in stage else stage) for name, stage in stages.items()}


def first_items() -> dict[str, dict[str, str]]:
    """Stage name -> the `${...}` values of its first foreach item ({} for a plain stage)."""
    found = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        items = stage.get("foreach")
        if isinstance(items, dict):
            key = next(iter(items))
            found[name] = {"${key}": str(key), "${item}": str(items[key])}
        else:
            found[name] = {"${item}": str(items[0])} if items else {}
    return found


def cmd_argv(cmd: str) -> list[str]:
    """`python -m stages.train --cache ...` (folded over lines or not) -> its argv."""
    return shlex.split(" ".join(cmd.split()))


def entry_module(cmd: str) -> str:
    """`python -m stages.train ...` -> "stages.train"."""
    argv = cmd_argv(cmd)
    assert "-m" in argv, f"cmd does not run a module with `python -m`: {cmd!r}"
    return argv[argv.index("-m") + 1]


@lru_cache(maxsize=None)
def module_file(dotted: str) -> Path | None:
    """The repo file a project module name stands for (a package -> its __init__.py), or None when the
    name is not project code (stdlib, third party) or names no module (an attribute)."""
    parts = dotted.split(".")
    base = REPO.joinpath(*parts)
    if base.is_dir() and (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def is_project(dotted: str) -> bool:
    return module_file(dotted.split(".")[0]) is not None


def with_parents(dotted: str) -> list[Path]:
    """Every file that `import dotted` executes: each enclosing package's __init__.py, then the module."""
    parts = dotted.split(".")
    files = [module_file(".".join(parts[:i])) for i in range(1, len(parts) + 1)]
    return [f for f in files if f is not None]


def package_of(path: Path) -> list[str]:
    """The dotted package a file belongs to (what a relative import is relative to)."""
    return list(path.relative_to(REPO).parts[:-1])  # a/b/c.py and a/b/__init__.py: both in a.b


@lru_cache(maxsize=None)
def direct_imports(path: Path) -> frozenset[Path]:
    """Project files one file imports, anywhere in it (top level, functions, try blocks)."""
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if is_project(alias.name):
                    found.update(with_parents(alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = package_of(path)
                up = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if not base or not is_project(base):
                continue
            found.update(with_parents(base))
            for alias in node.names:  # `from pkg import mod`: mod is a submodule file when one exists
                sub = module_file(f"{base}.{alias.name}")
                if alias.name != "*" and sub is not None:
                    found.add(sub)
    return frozenset(found)


def closure(dotted: str) -> set[Path]:
    """The entry module's files (its packages' __init__.py included) and everything they import."""
    todo = with_parents(dotted)
    assert todo and todo[-1] == module_file(dotted), f"entry module {dotted!r} is not a file in the repo"
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(direct_imports(path) - seen)
    return seen


def covered(rel: PurePosixPath, deps: list[PurePosixPath]) -> bool:
    """A dep covers a file when it is that file or a folder above it."""
    return any(dep == rel or dep in rel.parents for dep in deps)


def stage_deps(stage: dict) -> list[PurePosixPath]:
    return [PurePosixPath(d.rstrip("/")) for d in stage.get("deps", [])]


def test_every_stage_depends_on_all_the_code_it_imports():
    missing = {}
    for name, stage in load_stages().items():
        deps = stage_deps(stage)
        files = {PurePosixPath(f.relative_to(REPO).as_posix()) for f in closure(entry_module(stage["cmd"]))}
        lacking = sorted(str(f) for f in files if not covered(f, deps))
        if lacking:
            missing[name] = lacking
    assert not missing, "dvc.yaml stages miss code deps (DVC would call their outputs up to date after " \
        "these files change):\n" + "\n".join(f"  {name}: {', '.join(files)}" for name, files in missing.items())


def test_every_code_dep_exists():
    absent = {}
    for name, stage in load_stages().items():
        gone = [str(d) for d in stage_deps(stage)
                if d.parts[0] in CODE_ROOTS and "${" not in str(d) and not (REPO / d).exists()]
        if gone:
            absent[name] = gone
    assert not absent, "dvc.yaml code deps that do not exist (they would never trigger a re-run):\n" + \
        "\n".join(f"  {name}: {', '.join(files)}" for name, files in absent.items())


def test_every_stage_runs_its_own_module_and_depends_on_no_other_code():
    """Narrow deps: through stages/cli.py (which imports every stage module) every stage would depend on
    all the code, and any edit would re-run extraction; so would a dep on a whole code root."""
    through_cli, whole_roots, unused = {}, {}, {}
    for name, stage in load_stages().items():
        module = entry_module(stage["cmd"])
        if module == "stages.cli" or not module.startswith("stages."):
            through_cli[name] = module
        files = {PurePosixPath(f.relative_to(REPO).as_posix()) for f in closure(module)}
        code = [d for d in stage_deps(stage) if d.parts[0] in CODE_ROOTS]
        if any(len(d.parts) == 1 for d in code):
            whole_roots[name] = [str(d) for d in code if len(d.parts) == 1]
        idle = [str(d) for d in code if not any(covered(f, [d]) for f in files)]
        if idle:
            unused[name] = idle
    assert not through_cli, f"stages not run through their own module `python -m stages.<name>`: {through_cli}"
    assert not whole_roots, f"stages depending on a whole code root (every edit re-runs them): {whole_roots}"
    assert not unused, "code deps holding nothing the stage imports (edits there re-run it for nothing):\n" + \
        "\n".join(f"  {name}: {', '.join(deps)}" for name, deps in unused.items())


def test_the_closure_follows_lazy_and_submodule_imports():
    """The walker itself: stages/train.py imports pipeline.training.fit inside a function, and
    stages/cli.py pulls in its stage modules with `from stages import data, ...`."""
    files = {f.relative_to(REPO).as_posix() for f in closure("stages.cli")}
    assert {"stages/__init__.py", "stages/cli.py", "stages/train.py", "stages/data.py",
            "pipeline/__init__.py", "pipeline/training/__init__.py", "pipeline/training/fit.py"} <= files
    assert not any(f.startswith(("tests/", "data/")) for f in files)
    # A stage module's own closure holds no other stage module (stages/_common.py is shared).
    files = {f.relative_to(REPO).as_posix() for f in closure("stages.train")}
    assert "pipeline/training/fit.py" in files and "stages/_common.py" in files
    assert not files & {"stages/cli.py", "stages/data.py", "stages/extract.py", "stages/evaluate.py"}


def import_cycles() -> list[list[str]]:
    """Groups of project modules that import each other, lazily too (strongly connected components of the
    import graph). A package's __init__.py is left out: importing a.b.c runs a/b/__init__.py, which may
    re-export c, and that is no circle between modules."""
    files = sorted(p for root in CODE_ROOTS for p in (REPO / root).rglob("*.py") if p.name != "__init__.py")
    graph = {p: sorted(q for q in direct_imports(p) if q.name != "__init__.py") for p in files}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v), on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(str(f.relative_to(REPO)) for f in group))

    for v in graph:
        if v not in index:
            visit(v)
    return cycles


def test_no_modules_import_each_other():
    """A circle hidden by function-level imports (offline.py <-> dinov2_onnx.py once) makes both modules one
    concept in two files; each module should build on the others in one direction."""
    assert import_cycles() == []


def test_the_library_never_imports_the_entry_points():
    files = sorted((REPO / "pipeline").rglob("*.py"))
    upward = [str(f.relative_to(REPO)) for f in files if any(q.parts[len(REPO.parts)] == "stages"
                                                              for q in direct_imports(f))]
    assert upward == []


def documented_layers() -> list[list[str]]:
    """The numbered package rows under "Imports go one way" in docs/development.md, top row first."""
    text = (REPO / "docs" / "development.md").read_text()
    section = text[text.index("Imports go one way"):]
    rows = []
    for line in section.splitlines()[2:]:
        head, _, rest = line.partition(". ")
        if not head.isdigit():
            if rows:
                break
            continue
        rows.append([name.strip(" `") for name in rest.split(",")])
    return rows


def package_of_file(path: Path) -> str:
    """pipeline/cache/format.py -> cache; pipeline/losses.py -> losses; stages/x.py -> stages."""
    parts = path.relative_to(REPO).parts
    return "stages" if parts[0] == "stages" else parts[1].removesuffix(".py")


def test_imports_follow_the_package_order_written_in_development_md():
    layers = documented_layers()
    rank = {name: k for k, row in enumerate(layers) for name in row}
    assert "grounded" in rank and "stages" in rank and len(layers) > 3, layers
    files = sorted(p for p in (REPO / "pipeline").rglob("*.py") if p.parent != REPO / "pipeline" or p.name != "__init__.py")
    unplaced = sorted({package_of_file(p) for p in files} - set(rank))
    assert not unplaced, f"packages docs/development.md does not place in its import order: {unplaced}"
    upward = []
    for path in files:
        here = package_of_file(path)
        for target in direct_imports(path):
            there = package_of_file(target) if target.name != "__init__.py" or target.parent != REPO / "pipeline" \
                else None
            if there is not None and there != here and rank[there] <= rank[here]:
                upward.append(f"{path.relative_to(REPO)} imports {target.relative_to(REPO)} "
                              f"({here}: row {rank[here] + 1}, {there}: row {rank[there] + 1})")
    assert not upward, "imports against the order of docs/development.md:\n" + "\n".join(upward)


def test_only_the_cache_opens_its_files():
    """docs/development.md: the cache's files are opened only in `cache/`, so HDF5 is imported nowhere else in
    the library (lazily neither)."""
    outside = []
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        if package_of_file(path) == "cache":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "h5py" for n in names):
                outside.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert outside == [], f"h5py imported outside pipeline/cache/: {outside}"


# The entries themselves (these import the project).

@pytest.mark.parametrize("name", sorted(load_stages()))
def test_every_stage_cmd_parses_through_its_module_entry(name, monkeypatch, tmp_path):
    """Each stage's cmd as `python -m` runs it (runpy, as __main__), all but the command's own body: its
    module's __main__ first does what every `groundedbert` command does (stages/_common.py:
    before_every_command), then the whole line parses (command names, options, values, required options,
    no extra arguments) down to one command, whose body is skipped here."""
    from typer.core import TyperCommand

    import pipeline.runtime

    argv = cmd_argv(load_stages()[name]["cmd"])
    for placeholder, value in first_items()[name].items():
        argv = [a.replace(placeholder, value) for a in argv]
    module, args = argv[argv.index("-m") + 1], argv[argv.index("-m") + 2:]
    calls, reached = [], []
    monkeypatch.setattr(pipeline.runtime, "keep_freed_memory", lambda: calls.append("keep") or True)
    # The click Command class typer's commands derive from (typer may carry its own copy of click).
    base = next(c for c in TyperCommand.__mro__ if "invoke" in vars(c))
    invoke = base.invoke

    def parse_only(self, ctx):  # a group goes on to its subcommand; a command records itself, body skipped
        if hasattr(self, "resolve_command"):
            return invoke(self, ctx)
        reached.append((ctx.command_path, ctx.params))
        calls.append("command")

    monkeypatch.setattr(base, "invoke", parse_only)
    monkeypatch.chdir(tmp_path)  # the cmd's relative paths land here, should a body ever run
    monkeypatch.setattr(sys, "argv", [module, *args])
    monkeypatch.delitem(sys.modules, module, raising=False)  # runpy runs it afresh as __main__ either way
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exit_.value.code in (0, None), f"{' '.join(argv)}: exit {exit_.value.code}"
    assert calls == ["keep", "command"], (calls, reached)
    assert reached[0][1], reached  # the command's parsed options
    assert not any(tmp_path.iterdir()), "a stage's body ran"


def _python(*args, cwd=REPO):
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{args}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


BOTH_ENTRIES = """
import runpy, sys
out, args = sys.argv[1], sys.argv[2:]
for module, argv in (("stages.data", ["synth", out + "/module"]), ("stages.cli", ["data", "synth", out + "/cli"])):
    sys.argv = [module, *argv, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit_:
        assert exit_.code in (0, None), (module, exit_.code)
"""


def test_a_module_entry_writes_what_groundedbert_writes(tmp_path):
    """`python -m stages.data synth` (the synth stage's entry) and `groundedbert data synth` (stages.cli:app)
    give the same bytes; both read the params.yaml of the working directory. One fresh interpreter runs both
    as `__main__`, the module entry first, before anything imports stages.cli."""
    _python("-c", BOTH_ENTRIES, str(tmp_path), "--images", "3", "--image-size", "64")
    module = {p.relative_to(tmp_path / "module"): p.read_bytes() for p in (tmp_path / "module").rglob("*") if p.is_file()}
    cli = {p.relative_to(tmp_path / "cli"): p.read_bytes() for p in (tmp_path / "cli").rglob("*") if p.is_file()}
    assert module and module.keys() == cli.keys() and module == cli
    assert len(list((tmp_path / "module" / "images").rglob("*.png"))) == 3


def test_groundedbert_still_offers_every_command():
    """The console script (stages.cli:app) keeps every command, the per-module entries notwithstanding."""
    from typer.testing import CliRunner

    from stages.cli import app

    top = _python("-m", "stages.cli", "--help")
    for command in ("data", "weights", "extract", "cache", "train", "evaluate", "plots"):
        assert f" {command} " in top, top
    runner = CliRunner()
    for group, commands in {"data": ("synth", "glue-fixtures"), "weights": ("convert",),
                            "cache": ("info", "verify"), "evaluate": ("grounding", "glue", "squad")}.items():
        r = runner.invoke(app, [group, "--help"])
        assert r.exit_code == 0 and all(f" {c} " in r.output for c in commands), r.output
