"""The project's layout rules, read from the import graph of its source files (nothing is imported or run).

- The model's own files (configuration, modeling, pipeline, processing) import nothing of the project but each
  other: a saved model directory carries them for `trust_remote_code`.
- No script imports another script, and no module of `clipcap/` imports a script.
- Project imports stand at module top, never inside a function or class body.
- The library and the model files have no import cycle.
- pyproject.toml installs the model files and the `clipcap` package with its subpackages, no script and no generic
  top-level name, and the "Project layout" of docs/layout.md (linked from README.md) names every module.
- The model files hold modules only: no weight supply (downloads, packaged weights, checksums, conversions), which
  lives in `clipcap.pretrained` and which a saved model never needs. (The processor loads its tokenizer.)
- One place knows which column holds a synthetic scene's description: no module outside the `clipcap.synthetic`
  package and `clipcap.metrics` names it (the trainer, the scripts, the app and FiftyOne read it through them).
- The tests mirror the modules: each test file is named after the module it tests (`tests/test_<module>.py` for a
  script, a model file or a module of `clipcap`, `tests/synthetic/test_<module>.py` for one of `clipcap.synthetic`),
  and no test file imports another (what they share is in conftest.py and helpers.py).

And the test session itself has the Hub offline (conftest.py).
"""

import ast
import re
from pathlib import PurePosixPath

from tests.conftest import ROOT

SCRIPTS = {"run_train", "prepare_dataset", "run_eval", "caption", "train_clip_teacher", "app", "export_onnx"}
MODEL_FILES = {"configuration_clipcap", "modeling_clipcap", "pipeline_clipcap", "processing_clipcap"}


def package_modules(package: str) -> set[str]:
    """Every module of `package`, through its subpackages (a subpackage is a module too: its `__init__.py`)."""
    directory = ROOT / package.replace(".", "/")
    modules = {f"{package}.{path.stem}" for path in directory.glob("*.py") if path.stem != "__init__"}
    for subpackage in (path.parent.name for path in directory.glob("*/__init__.py")):
        modules |= {f"{package}.{subpackage}"} | package_modules(f"{package}.{subpackage}")
    return modules


def source_path(module: str):
    path = ROOT / module.replace(".", "/")
    return path / "__init__.py" if (path / "__init__.py").is_file() else path.with_suffix(".py")


LIBRARY = package_modules("clipcap")
SUBPACKAGES = {module for module in LIBRARY if source_path(module).name == "__init__.py"}


def imported_modules(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    """The modules an import statement of `module` names: `from package import module` names that module, a
    relative import inside a package resolves against it."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    source = node.module
    if node.level:
        package = module if source_path(module).name == "__init__.py" else module.rpartition(".")[0]
        if not package:  # `from .configuration_clipcap import ...` inside a model directory
            return [node.module]
        parts = package.split(".")
        package = ".".join(parts[: len(parts) - node.level + 1])
        source = f"{package}.{node.module}" if node.module else package
    names = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in LIBRARY else source for alias in node.names]
    return list(dict.fromkeys(names))


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
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        for name in imported_modules(module, node):
            if name in SCRIPTS or name in MODEL_FILES or name in LIBRARY:
                found.append((name, node.lineno, id(node) in top_level))
    return found


def test_the_layout_finds_every_module():
    assert {path.stem for path in ROOT.glob("*.py")} == SCRIPTS | MODEL_FILES
    assert len(LIBRARY) >= 15 and "clipcap.trainer" in LIBRARY and "clipcap.inference" in LIBRARY
    # The walk sees a lazy import and a script import where there is one (the checker itself can fail).
    probe = "import run_eval\n\n\ndef f():\n    from clipcap import teacher\n"
    assert project_imports("probe", probe) == [("run_eval", 1, True), ("clipcap.teacher", 5, False)]
    # A subpackage's modules, its `__init__.py` as the package, its relative imports; a model file's relative import.
    assert {"clipcap.synthetic", "clipcap.synthetic.grammar", "clipcap.synthetic.__main__"} <= LIBRARY
    assert SUBPACKAGES == {"clipcap.synthetic"}
    assert source_path("clipcap.synthetic") == ROOT / "clipcap" / "synthetic" / "__init__.py"
    assert source_path("clipcap.synthetic.grammar") == ROOT / "clipcap" / "synthetic" / "grammar.py"
    probe = "from .grammar import X\nfrom . import scene\nfrom .. import files\nfrom clipcap.synthetic import Scene\n"
    assert project_imports("clipcap.synthetic.checker", probe) == [
        ("clipcap.synthetic.grammar", 1, True),
        ("clipcap.synthetic.scene", 2, True),
        ("clipcap.files", 3, True),
        ("clipcap.synthetic", 4, True),
    ]
    assert project_imports("clipcap.synthetic", "from .scene import Scene\n") == [("clipcap.synthetic.scene", 1, True)]
    probe = "from .configuration_clipcap import ClipCapConfig\n"
    assert project_imports("modeling_clipcap", probe) == [("configuration_clipcap", 1, True)]


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


# What fetching, checking or converting weights takes; none of it belongs in a model file.
WEIGHT_SUPPLY_MODULES = {"hashlib", "importlib", "safetensors", "zipfile", "tempfile", "urllib", "huggingface_hub"}
WEIGHT_SUPPLY_CALLS = {"get_model_weights", "load_state_dict_from_url", "hf_hub_download", "from_pretrained"}


def weight_supply(text: str) -> list[str]:
    """What in a source `text` fetches, checks or converts weights: an import of a module of
    `WEIGHT_SUPPLY_MODULES`, a call of `WEIGHT_SUPPLY_CALLS` on anything but the class itself (`super()`,
    `cls`), or a `pretrained=` argument that is not False."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            found += [
                f"import {name} (line {node.lineno})" for name in names if name.split(".")[0] in WEIGHT_SUPPLY_MODULES
            ]
        elif isinstance(node, ast.Call):
            function = node.func
            name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", "")
            own = isinstance(function, ast.Attribute) and (
                (isinstance(function.value, ast.Call) and getattr(function.value.func, "id", "") == "super")
                or getattr(function.value, "id", "") == "cls"
            )
            if name in WEIGHT_SUPPLY_CALLS and not own:
                found.append(f"{name}() (line {node.lineno})")
            for keyword in node.keywords:
                if keyword.arg == "pretrained" and not (
                    isinstance(keyword.value, ast.Constant) and keyword.value.value is False
                ):
                    found.append(f"pretrained= (line {node.lineno})")
    return found


def test_model_files_hold_no_weight_supply():
    for module in MODEL_FILES - {"processing_clipcap"}:  # the processor does load its tokenizer files
        assert not (found := weight_supply(source_path(module).read_text())), f"{module}: {found}"
    # The check sees each kind of weight supply (it can fail), and the weight supply does live in clipcap.pretrained.
    probe = (
        "import hashlib\nfrom safetensors.torch import load_file\nm = timm.create_model(n, pretrained=True)\n"
        "GPT2LMHeadModel.from_pretrained(p)\nsuper().from_pretrained(p)\nm = create(n, pretrained=False)\n"
    )
    assert weight_supply(probe) == [
        "import hashlib (line 1)",
        "import safetensors.torch (line 2)",
        "pretrained= (line 3)",
        "from_pretrained() (line 4)",
    ]
    assert weight_supply(source_path("clipcap.pretrained").read_text())


SCENE_COLUMN_OWNERS = {"clipcap.metrics"} | {m for m in LIBRARY if m.startswith("clipcap.synthetic")}


def scene_column_mentions(text: str) -> list[int]:
    """Lines of a source `text` that name the scene column: the string "scene", or `SCENE_COLUMN`."""
    lines = []
    for node in ast.walk(ast.parse(text)):
        literal = isinstance(node, ast.Constant) and node.value == "scene"
        constant = (
            (isinstance(node, ast.Name) and node.id == "SCENE_COLUMN")
            or (isinstance(node, ast.Attribute) and node.attr == "SCENE_COLUMN")
            or (isinstance(node, ast.alias) and node.name == "SCENE_COLUMN")
        )
        if literal or constant:
            lines.append(getattr(node, "lineno", 0))
    return lines


def test_only_the_synthetic_package_and_the_metrics_name_the_scene_column():
    for module in (SCRIPTS | MODEL_FILES | LIBRARY) - SCENE_COLUMN_OWNERS:
        assert not (lines := scene_column_mentions(source_path(module).read_text())), f"{module}, lines {lines}"
    probe = 'x = row["scene"]\nfrom clipcap.synthetic import SCENE_COLUMN\ny = synthetic.SCENE_COLUMN\nz = "scenes"\n'
    assert len(scene_column_mentions(probe)) == 3
    assert scene_column_mentions(source_path("clipcap.metrics").read_text())


def test_pyproject_installs_the_model_files_and_the_package_only():
    pyproject = (ROOT / "pyproject.toml").read_text()  # read as text: tomllib is Python 3.11+, the project 3.10+
    (modules,) = re.findall(r"^py-modules = \[(.*)\]$", pyproject, re.MULTILINE)
    (packages,) = re.findall(r"^packages = \[(.*)\]$", pyproject, re.MULTILINE)
    assert set(re.findall(r'"(\w+)"', modules)) == MODEL_FILES
    assert re.findall(r'"([\w.]+)"', packages) == ["clipcap", *sorted(SUBPACKAGES)]


def test_the_project_layout_page_names_every_module():
    assert "(docs/layout.md)" in (ROOT / "README.md").read_text()  # the front page links it
    page = (ROOT / "docs" / "layout.md").read_text()
    layout = page[page.index("## Project layout") :]
    layout = layout[: layout.index("\n## ", 1)]
    named = set(re.findall(r"`((?:\w+/)*\w+\.py)`", layout))
    expected = {source_path(m).relative_to(ROOT).as_posix() for m in SCRIPTS | MODEL_FILES | LIBRARY}
    assert expected <= named, f"docs/layout.md's Project layout misses {sorted(expected - named)}"


# Named after no module: the layout's own rules, and the smoke example (examples/overfit_smoke.py).
# test_transformers_common: transformers' own common model tests, run against the model (no module of ours).
FREELY_NAMED_TESTS = {"test_layout", "test_examples", "test_transformers_common", "test_web"}  # web/: no module
TOP_MODULES = SCRIPTS | MODEL_FILES | {m.split(".")[1] for m in LIBRARY if m.count(".") == 1 and m not in SUBPACKAGES}
SYNTHETIC_MODULES = {m.rpartition(".")[2] for m in LIBRARY if m.startswith("clipcap.synthetic.")}
TEST_NAMES = {  # the names a test file may have in each folder; `python -m clipcap.synthetic` (__main__) is the cli
    "tests": {f"test_{name}" for name in TOP_MODULES} | FREELY_NAMED_TESTS,
    "tests/synthetic": {f"test_{'cli' if name == '__main__' else name}" for name in SYNTHETIC_MODULES},
}


def misnamed_test_files(paths: list[str]) -> list[str]:
    """The test files among `paths` (relative to the repository) that are named after no module of their folder's."""
    return sorted(p for p in paths if PurePosixPath(p).stem not in TEST_NAMES.get(str(PurePosixPath(p).parent), ()))


def imported_test_modules(module: str, text: str) -> list[str]:
    """The test modules (`tests.test_*`, `tests.synthetic.test_*`, relative `.test_*`) that the source `text` of the
    tests' module `module` imports, at module top or inside a function."""
    package = module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{source}" if source else base
            names = [source] + [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [n for n in names if n.split(".")[0] == "tests" and n.rpartition(".")[2].startswith("test_")]
    return found


def test_the_tests_mirror_the_modules_and_no_test_file_imports_another():
    files = sorted(path.relative_to(ROOT).as_posix() for path in (ROOT / "tests").rglob("test_*.py"))
    assert not (misnamed := misnamed_test_files(files)), f"test files named after no module: {misnamed}"
    for path in (ROOT / "tests").rglob("*.py"):
        module = path.relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
        assert not (imported := imported_test_modules(module, path.read_text())), f"{module} imports {imported}"
    # The checks see every test file, and each can fail: thematic names, a module's test in another module's folder,
    # a folder of no package; a test module imported at top, relatively, by name from its package, inside a function.
    assert {"tests/test_checkpoints.py", "tests/test_modeling_clipcap.py", "tests/synthetic/test_cli.py"} <= set(files)
    probe = [
        "tests/test_reliability.py",
        "tests/test_trainer.py",
        "tests/test_modeling.py",
        "tests/test_modeling_clipcap.py",
        "tests/synthetic/test_trainer.py",
        "tests/synthetic/test_cli.py",
        "tests/test_cli.py",
        "tests/deep/test_cli.py",
        "tests/test_layout.py",
    ]
    assert misnamed_test_files(probe) == [
        "tests/deep/test_cli.py",
        "tests/synthetic/test_trainer.py",
        "tests/test_modeling.py",
        "tests/test_reliability.py",
    ]
    probe = (
        "from tests.test_training import CountingTeacher\nfrom .test_run_train import log_keys\n"
        "from tests import helpers, test_cli\nimport tests.synthetic.test_checker\nfrom tests.conftest import ROOT\n"
        "from .synthetic.scenes import ROW\n\n\ndef f():\n    from tests.test_scst import make_scst_trainer\n"
    )
    assert imported_test_modules("tests.test_probe", probe) == [
        "tests.test_training",
        "tests.test_run_train",
        "tests.test_cli",
        "tests.synthetic.test_checker",
        "tests.test_scst",
    ]
    assert imported_test_modules("tests.synthetic.test_probe", "from .test_grammar import X\n") == [
        "tests.synthetic.test_grammar"
    ]


def test_the_test_session_has_the_hub_offline():
    """conftest sets HF_HUB_OFFLINE before huggingface_hub and datasets read it (both read it once, on import): set
    after them, every Hub lookup in the suite retried over the network for about 25 s before failing."""
    import datasets
    from huggingface_hub import constants

    assert constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
