"""What pyproject.toml installs is the whole package: every sub-package, and the manifest; the top-level weights/
folder holds the manifest and no code."""

import subprocess
import sys
import zipfile
from importlib import resources

import tomllib
from conftest import ROOT


def test_every_subpackage_is_listed_and_the_manifest_ships():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        "eca_models." + ".".join(p.parent.relative_to(ROOT / "eca_models").parts)
        for p in (ROOT / "eca_models").rglob("__init__.py")
    }
    assert set(config["packages"]) == {name.rstrip(".") for name in on_disk}
    assert "package-dir" not in config  # every package is where it lies
    assert "manifest.json" in config["package-data"]["eca_models.weights"]
    assert not list((ROOT / "weights").glob("*.py"))  # the top-level folder is data, not code
    link = ROOT / "eca_models" / "weights" / "manifest.json"
    assert link.resolve() == (ROOT / "weights" / "manifest.json").resolve()


def test_the_installed_package_reads_the_top_level_manifest():
    from eca_models.weights.manifest import _manifest_path

    shipped = resources.files("eca_models.weights").joinpath("manifest.json").read_bytes()
    assert shipped == (ROOT / "weights" / "manifest.json").read_bytes()
    assert _manifest_path() == (ROOT / "weights" / "manifest.json").resolve()  # updates write the real file


def test_a_wheel_carries_the_manifest_and_every_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("eca_models-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("eca_models/weights/manifest.json") == (ROOT / "weights" / "manifest.json").read_bytes()
    for module in ("fetch", "release", "loading", "manifest", "folders", "publish", "model_card"):
        assert f"eca_models/weights/{module}.py" in names
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "eca_models").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # every module of the package, in every room
    assert not any(name.startswith("weights/") for name in names)


def test_console_script():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "eca-models" and project["scripts"] == {"eca-models": "eca_models.cli:main"}
