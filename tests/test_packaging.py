"""The built wheel carries what the installed package reads at run time: the type stubs (the public API's one
list, read by ``lightning_ganeval._lazy.stub_exports``) and ``py.typed``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_holds_the_stubs_the_package_reads(tmp_path: Path) -> None:
    pytest.importorskip("setuptools", reason="builds the wheel without network, with the installed setuptools")
    source = tmp_path / "src"
    shutil.copytree(
        ROOT / "lightning_ganeval", source / "lightning_ganeval", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy(ROOT / name, source / name)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(source),
            "-w",
            str(tmp_path),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("lightning_ganeval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {
        "lightning_ganeval/__init__.pyi",
        "lightning_ganeval/metrics/__init__.pyi",
        "lightning_ganeval/py.typed",
    } <= names
