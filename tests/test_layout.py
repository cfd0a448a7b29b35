"""The project's layout rules, read from the import graph of its source files (nothing is imported or run).

- The model's own files (configuration, modeling, pipeline, processing) import nothing of the project but each other: a saved
  model directory carries them for `trust_remote_code`.
- No script imports another script, and no module of `clipcap/` imports a script.
- Project imports stand at module top, never inside a function or class body.
- The library and the model files have no import cycle.
- pyproject.toml installs the model files and the `clipcap` package, no script and no generic top-level name, and
  README.md's "Project layout" names every module.
"""

import ast
import re

from tests.conftest import ROOT

SCRIPTS = {"run_train", "prepare_dataset", "run_eval", "caption", "train_clip_teacher", "app"}
MODEL_FILES = {"configuration_clipcap", "modeling_clipcap", "pipeline_clipcap", "processing_clipcap"}
LIBRARY = {f"clipcap.{path.stem}" for path in (ROOT / "clipcap").glob("*.py") if path.stem != "__init__"}


def source_path(module: str):
    return ROOT / (module.replace(".", "/") + ".py")


def project_imports(module: str, text: str | None = None) -> list[tuple[str, int, bool]]:
    """(imported project module, line, whether at module top) for every import statement of `module` (or of the
    source `text`)."""
    tree = ast.parse(source_path(module).read_text() if text is None else text)
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `try: ... except ImportError:` at module top (the model files' relative imports)
        if isinstance(node, ast.Try):
            top_level.update(id(child) for block in (node.body, *(h.body for h in node.handlers)) for child in block)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # `from .configuration_clipcap import ...` inside a model directory
                names = [node.module]
            elif node.module == "clipcap":  # `from clipcap import synthetic`
                names = [f"clipcap.{alias.name}" for alias in node.names]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            if name in SCRIPTS or name in MODEL_FILES or name in LIBRARY:
                found.append((name, node.lineno, id(node) in top_level))
    return found


def test_the_layout_finds_every_module():
    assert {path.stem for path in ROOT.glob("*.py")} == SCRIPTS | MODEL_FILES
    assert len(LIBRARY) >= 15 and "clipcap.trainer" in LIBRARY and "clipcap.inference" in LIBRARY
    # The walk sees a lazy import and a script import where there is one (the checker itself can fail).
    probe = "import run_eval\n\n\ndef f():\n    from clipcap import teacher\n"
    assert project_imports("probe", probe) == [("run_eval", 1, True), ("clipcap.teacher", 5, False)]


def test_model_files_import_only_each_other():
    for module in MODEL_FILES:
        imported = {name for name, _, _ in project_imports(module)}
        assert imported <= MODEL_FILES, f"{module} imports {sorted(imported - MODEL_FILES)}"


def test_no_script_is_imported_by_a_script_or_the_library():
    for module in SCRIPTS | MODEL_FILES | LIBRARY:
        scripts = sorted({name for name, _, _ in project_imports(module)} & SCRIPTS)
        assert not scripts, f"{module} imports the scripts {scripts}"


def test_project_imports_are_at_module_top():
    for module in SCRIPTS | MODEL_FILES | LIBRARY:
        nested = [f"{name} (line {line})" for name, line, at_top in project_imports(module) if not at_top]
        assert not nested, f"{module} imports inside a function: {nested}"


def test_no_import_cycles():
    graph = {module: {name for name, _, _ in project_imports(module)} for module in MODEL_FILES | LIBRARY}
    done, path = set(), []

    def visit(module):
        assert module not in path, "import cycle: " + " -> ".join([*path[path.index(module) :], module])
        if module in done:
            return
        path.append(module)
        for imported in sorted(graph[module]):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_pyproject_installs_the_model_files_and_the_package_only():
    pyproject = (ROOT / "pyproject.toml").read_text()  # read as text: tomllib is Python 3.11+, the project 3.10+
    (modules,) = re.findall(r"^py-modules = \[(.*)\]$", pyproject, re.MULTILINE)
    (packages,) = re.findall(r"^packages = \[(.*)\]$", pyproject, re.MULTILINE)
    assert set(re.findall(r'"(\w+)"', modules)) == MODEL_FILES and re.findall(r'"(\w+)"', packages) == ["clipcap"]


def test_readme_project_layout_names_every_module():
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Project layout") :]
    layout = layout[: layout.index("\n## ", 1)]
    named = set(re.findall(r"`((?:clipcap/)?\w+\.py)`", layout))
    expected = {f"{m}.py" for m in SCRIPTS | MODEL_FILES} | {f"{m.replace('.', '/')}.py" for m in LIBRARY}
    assert expected <= named, f"README's Project layout misses {sorted(expected - named)}"
