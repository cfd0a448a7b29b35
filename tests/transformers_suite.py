"""transformers' own common model tests, taken at test time from the released source of the installed version.

The transformers wheel carries no tests. Its sdist (the registry serves it) carries the top-level test modules,
`tests/test_modeling_common.py` (`ModelTesterMixin`) and `tests/test_configuration_common.py` (`ConfigTester`), but
not the modules they import from `tests/exporters`, `tests/generation` and `tests/utils`. So `load()` unpacks those
two files from the sdist into a temporary package and puts our own modules (`tests/transformers_shims/`) where the
missing ones would be; nothing of transformers' test code is copied into this repository. README's set-up command
downloads the sdist:

    .venv/bin/pip download --no-deps --no-binary :all: --dest .venv/sdist transformers==<installed version>
"""

import atexit
import importlib
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

import transformers

PACKAGE = "transformers_upstream_tests"
UPSTREAM_FILES = ("test_modeling_common.py", "test_configuration_common.py")
SHIMS_DIR = Path(__file__).parent / "transformers_shims"
# Where each of our modules stands in for a module the sdist lacks.
SHIMS = {
    "exporters/test_export.py": "export.py",
    "generation/test_utils.py": "generation.py",
    "utils/test_configuration_utils.py": "configuration_kwargs.py",
}


def sdist_path() -> Path:
    """Where README's set-up command puts the sdist of the installed transformers: `<venv>/sdist/`."""
    return Path(sys.prefix) / "sdist" / f"transformers-{transformers.__version__}.tar.gz"


def download_command() -> str:
    return (
        f"{Path(sys.executable)} -m pip download --no-deps --no-binary :all: --dest {sdist_path().parent} "
        f"transformers=={transformers.__version__}"
    )


def load() -> tuple[ModuleType, ModuleType]:
    """`(test_modeling_common, test_configuration_common)` of the installed transformers version."""
    if PACKAGE in sys.modules:
        return tuple(importlib.import_module(f"{PACKAGE}.{name[:-3]}") for name in UPSTREAM_FILES)
    archive = sdist_path()
    if not archive.is_file():
        raise FileNotFoundError(
            f"transformers' common model tests come from its sdist, and {archive} is missing; download it with: "
            f"{download_command()}"
        )
    root = Path(tempfile.mkdtemp(prefix="transformers-tests-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    package = root / PACKAGE
    package.mkdir()
    top = f"transformers-{transformers.__version__}/tests/"
    with tarfile.open(archive) as sdist:
        for name in UPSTREAM_FILES:
            (package / name).write_bytes(sdist.extractfile(top + name).read())
    for target, ours in SHIMS.items():
        path = package / target
        path.parent.mkdir(exist_ok=True)
        (path.parent / "__init__.py").touch()
        shutil.copyfile(SHIMS_DIR / ours, path)
    (package / "__init__.py").touch()
    sys.path.insert(0, str(root))
    return tuple(importlib.import_module(f"{PACKAGE}.{name[:-3]}") for name in UPSTREAM_FILES)
