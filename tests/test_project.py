"""The project's promises about itself: the README's two commands, and CI running the second."""

import re

from conftest import REPO


def readme_commands():
    return re.findall(r"```bash\n(.+?)\n```", (REPO / "README.md").read_text())[:2]


def test_readme_opens_with_the_main_job_then_the_tests():
    main_job, tests = readme_commands()
    assert main_job.startswith("python3 -m venv") and "pip install torch==2.13.0" in main_job and main_job.endswith("genlab train")
    assert "pip install torch==2.13.0" in tests and '".[test]"' in tests and tests.endswith("python -m pytest")
    # torch first, so the project's torch>=2.4 is already satisfied by the CPU build
    assert tests.index("torch==2.13.0") < tests.index('".[test]"')


def test_ci_runs_exactly_the_readme_test_command():
    _, tests = readme_commands()
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines()


def test_the_package_never_pins_torch_or_needs_torchvision():
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"torch>=2.4"' in pyproject and "torchvision" not in pyproject


def test_no_import_circle_and_no_oversized_module():
    """The import graph of src/genlab (imports inside functions too, package faces aside) has no circle, no
    module passes 600 lines and no CLI module 300 (the architecture of issue 7)."""
    import ast

    root = REPO / "src" / "genlab"
    mods = {}
    for path in root.rglob("*.py"):
        name = ".".join(("genlab", *path.relative_to(root).with_suffix("").parts))
        mods[name.removesuffix(".__init__")] = path
    faces = {m for m, p in mods.items() if p.name == "__init__.py"}
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        text = path.read_text()
        limit = 300 if m.startswith("genlab.cli") else 600
        assert len(text.splitlines()) <= limit, f"{m} has over {limit} lines"
        package = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(text)):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for t in names:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and not m.startswith(t + ".") and t not in faces:
                    graph[m].add(t)
    state: dict[str, int] = {}

    def visit(m, path):  # depth-first: reaching a module still on the path is a circle
        state[m] = 1
        for t in graph[m]:
            assert state.get(t) != 1, "import circle: " + " -> ".join([*path, m, t])
            if t not in state:
                visit(t, [*path, m])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [])
