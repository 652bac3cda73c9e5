"""The wheel carries what a cluster node needs: every package, the routing rules, the report font and the shipped
models."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_package_list_names_every_package() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "qure_ray").rglob("__init__.py")}
    assert listed == found | {"qure_ray.shipped_models"}


def test_an_installed_wheel_serves_the_shipped_models(tmp_path: Path) -> None:
    source = tmp_path / "source"  # setuptools builds in the source tree: a copy keeps build/ out of the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    for folder in ("qure_ray", "models"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    build = subprocess.run([*pip_wheel, "-w", str(tmp_path), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("qure_ray-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for card in sorted((REPO / "models").glob("*/model.yaml")):
        assert f"qure_ray/shipped_models/{card.parent.name}/model.yaml" in names
    assert "qure_ray/routing/rules.yaml" in names
    assert "qure_ray/outputs/fonts/DejaVuSans.ttf" in names  # the PDF report's header font
    target = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(target)  # what pip puts in site-packages, without touching this venv
    probe = (
        "import qure_ray.config as c; from qure_ray.models import load_registry; "
        "print(c.SHIPPED_MODELS_DIR); print(sorted(u.value for u in load_registry(c.SHIPPED_MODELS_DIR)))"
    )
    run = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(target)}
    )
    assert run.returncode == 0, run.stderr
    models_dir, usecases = run.stdout.splitlines()
    assert Path(models_dir) == target / "qure_ray" / "shipped_models"  # the wheel's copy, weights' sha256 checked
    assert usecases == "['qer', 'qxr']"
