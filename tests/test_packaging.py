"""The wheel that `pip install .` and `python -m build` make: its metadata, its files, its command.

The wheel is built once per run from a copy of the project files (pyproject.toml, README, LICENSE,
src/), so the build leaves nothing in the checkout; without build isolation, with the setuptools
the test extra installs, so no download is needed.
"""

from __future__ import annotations

import email
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import sivae

ROOT = Path(__file__).resolve().parents[1]
DIST = "sivae-torch"  # the distribution name; the import name and the command stay sivae
EXTRAS = {"test", "peers", "benchmark", "datasets", "genesets", "loom"}


def _clean_env() -> dict[str, str]:
    # PYTHONPATH would put the source tree before what was installed: the check would prove nothing
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("project")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("wheel")
    run = subprocess.run([sys.executable, "-m", "pip", "wheel", str(project), "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", "-q", "-w", str(out)],
                         capture_output=True, text=True, env=_clean_env(), timeout=300)
    assert run.returncode == 0, f"the wheel did not build:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    (path,) = out.glob("*.whl")
    return path


def _dist_info(wheel: Path, name: str) -> str:
    with zipfile.ZipFile(wheel) as z:
        (member,) = [m for m in z.namelist() if m.endswith(f".dist-info/{name}")]
        return z.read(member).decode()


def _metadata(wheel: Path) -> Message:
    return email.message_from_string(_dist_info(wheel, "METADATA"))


def test_wheel_metadata_is_complete(wheel: Path) -> None:
    meta = _metadata(wheel)
    assert meta["Name"] == DIST
    assert meta["Version"] == sivae.__version__ and wheel.name.startswith(f"sivae_torch-{sivae.__version__}-")
    assert meta["License-Expression"] == "MIT" and meta.get_all("License-File") == ["LICENSE"]
    assert meta["Requires-Python"] == ">=3.10"
    assert set(meta.get_all("Provides-Extra")) == EXTRAS
    classifiers = meta.get_all("Classifier")
    assert "Topic :: Scientific/Engineering :: Bio-Informatics" in classifiers
    assert "Programming Language :: Python :: 3 :: Only" in classifiers
    assert any(url.startswith("Paper, https://doi.org/") for url in meta.get_all("Project-URL"))
    requires = meta.get_all("Requires-Dist")
    assert any(r.startswith("torch") for r in requires)
    assert any(r.startswith("scvi-tools") and 'extra == "peers"' in r for r in requires)
    assert not any(r.startswith("scvi-tools") and "extra" not in r for r in requires)  # never a hard dependency
    assert "sivae" in meta.get_payload() and "pip install" in meta.get_payload()  # the README as description


def test_wheel_holds_every_module_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    package = ROOT / "src"
    modules = {p.relative_to(package).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts}
    assert modules and modules <= names, f"missing from the wheel: {sorted(modules - names)}"
    assert "sivae/py.typed" in names
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/"))]
    assert {n.split("/")[0] for n in names} == {"sivae", f"sivae_torch-{sivae.__version__}.dist-info"}
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "MIT License" in _dist_info(wheel, "licenses/LICENSE")


def test_wheel_installs_the_sivae_command(wheel: Path) -> None:
    entry_points = _dist_info(wheel, "entry_points.txt")
    assert "[console_scripts]" in entry_points and "sivae = sivae.cli:main" in entry_points


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_virtualenv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)],
                   check=True, timeout=120)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / ("python.exe" if os.name == "nt" else "python")
    # the dependencies (torch, scanpy, ...) come from this interpreter's site-packages, which may
    # be a virtualenv's rather than the system's; the wheel alone is installed, into the new venv
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, env=_clean_env()).stdout.strip()
    ours = [p for p in [*site.getsitepackages(), sysconfig.get_paths()["purelib"]] if Path(p).is_dir()]
    (Path(purelib) / "_parent_site.pth").write_text("\n".join(dict.fromkeys(ours)) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--disable-pip-version-check", "-q", str(wheel)],
                             capture_output=True, text=True, env=_clean_env(), timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    imported = subprocess.run([str(python), "-c", "import sivae; print(sivae.__file__); print(sivae.__version__)"],
                              capture_output=True, text=True, env=_clean_env(), cwd=tmp_path, timeout=120)
    assert imported.returncode == 0, imported.stderr[-3000:]
    where, version = imported.stdout.split()
    assert Path(where).is_relative_to(venv) and version == sivae.__version__
    helped = subprocess.run([str(bin_dir / "sivae"), "--help"], capture_output=True, text=True,
                            env=_clean_env(), cwd=tmp_path, timeout=120)
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert "usage: sivae" in helped.stdout and "fit" in helped.stdout
