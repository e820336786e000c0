"""The static checks `make test` runs (import-linter, ruff, mypy) catch what they are there to catch.

`make check` runs them on the real tree; here each tool is shown a planted violation in a copy and
must fail on it, so that a misconfigured check (e.g. one that analyses the installed package
instead of the copy, or whose contract matches nothing) cannot pass silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

BIN = Path(sys.executable).parent

#: (file in the engine, line appended, contract it breaks)
PLANTED_IMPORTS = [
    ("core/errors.py", "import mhub_cpu_dev.data", "The engine never imports the development tools"),
    ("runtime/network.py", "import torch", "torch, MONAI and NNCF are imported by the conversion package only"),
    ("dicomio/volume.py", "from mhub_cpu.segment import job", "The engine's layers: each imports only the layers below it"),
    ("core/files.py", "from mhub_cpu.core import cache", "No import cycles between the modules of a package"),
    ("outputs/preview.py", "import mhubio", "mhubio is imported by the MHub integration only"),
    ("segment/job.py", "import distributed", "Dask only in batch"),
]


def _copy_tree(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(REPO / "base" / "mhub_cpu", root / "base" / "mhub_cpu", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "dev" / "mhub_cpu_dev", root / "dev" / "mhub_cpu_dev", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{root / 'base'}{os.pathsep}{root / 'dev'}"}
    return subprocess.run([str(BIN / "lint-imports"), "--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_the_layering_contracts_hold_on_an_unchanged_copy(tmp_path: Path) -> None:
    result = _lint_imports(_copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_each_planted_import_breaks_its_contract(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    for module, line, _ in PLANTED_IMPORTS:
        path = root / "base" / "mhub_cpu" / module
        path.write_text(path.read_text() + f"\n{line}  # planted\n")
    result = _lint_imports(root)
    assert result.returncode != 0
    for _, line, contract in PLANTED_IMPORTS:
        assert f"{contract} BROKEN" in result.stdout, (line, result.stdout)
    assert f"{len(PLANTED_IMPORTS)} broken" in result.stdout


@pytest.mark.parametrize(
    ("tool", "source", "expected"),
    [
        ("ruff", "import os\n\n\ndef unused() -> None:\n    pass\n", "F401"),
        ("mypy", "def name_length(name: str) -> int:\n    return name\n", "Incompatible return value type"),
        ("mypy", "def half(value):\n    return value / 2\n\n\ndef caller(value: int):\n    return half(value)\n", "missing a return type"),
    ],
)
def test_lint_and_type_check_fail_on_a_planted_error(tmp_path: Path, tool: str, source: str, expected: str) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(source)
    if tool == "ruff":
        command = [str(BIN / "ruff"), "check", "--config", str(REPO / "pyproject.toml"), str(planted)]
    else:
        command = [str(BIN / "mypy"), "--config-file", str(REPO / "pyproject.toml"), "--no-incremental", str(planted)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and expected in result.stdout, result.stdout + result.stderr
