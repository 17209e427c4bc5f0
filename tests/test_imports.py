"""The import graph: no cycles anywhere in npllm or npllm_kernels, and the library never imports a command.

Every import statement counts, function-level ones included (a lazy import hides a cycle, it does not
remove it).  The library is everything outside npllm.commands; only the commands configure the process.
"""
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (ROOT / "npllm", ROOT / "kernels" / "npllm_kernels")


def module_files() -> dict:
    modules = {}
    for package in PACKAGES:
        for path in package.rglob("*.py"):
            parts = list(path.relative_to(package.parent).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def import_graph(modules: dict) -> dict:
    """module → the set of project modules it imports (the longest known prefix of each imported name)."""
    edges = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rsplit(".", 1)[0] if "." in target else ""
                if target and target != name and not name.startswith(target + "."):
                    edges[name].add(target)
    return edges


def strongly_connected(edges: dict) -> list:
    """Tarjan's algorithm: the groups of modules that import each other in a circle."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))
    for v in edges:
        if v not in index:
            visit(v)
    return groups


def test_no_module_imports_itself_in_a_circle():
    cycles = strongly_connected(import_graph(module_files()))
    assert cycles == [], f"import cycles: {cycles}"


def test_the_library_imports_no_command():
    edges = import_graph(module_files())
    upward = sorted(f"{m} -> {n}" for m, targets in edges.items() for n in targets
                    if n.startswith("npllm.commands") and not m.startswith("npllm.commands"))
    assert upward == []


def test_the_graph_walker_finds_a_planted_cycle(tmp_path):
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert strongly_connected(edges) == [["a", "b", "c"]]


def test_importing_the_kernels_changes_no_process_setting():
    import os
    import subprocess
    import sys
    code = ("import numba, npllm_kernels.cpu, npllm.backend; npllm.backend.set_backend('numba'); "
            "print(numba.config.THREADING_LAYER)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "default"
