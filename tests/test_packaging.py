"""What pyproject.toml installs is the whole package: every sub-package, and the manifest."""

import tomllib
from conftest import ROOT


def test_every_subpackage_is_listed_and_the_manifest_ships():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        "eca_models." + ".".join(p.parent.relative_to(ROOT / "eca_models").parts)
        for p in (ROOT / "eca_models").rglob("__init__.py")
    }
    on_disk = {name.rstrip(".") for name in on_disk} | {"eca_models.weights"}
    assert set(config["packages"]) == on_disk
    assert config["package-dir"]["eca_models.weights"] == "weights" and (ROOT / "weights" / "__init__.py").is_file()
    assert "manifest.json" in config["package-data"]["eca_models.weights"]


def test_console_script():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "eca-models" and project["scripts"] == {"eca-models": "eca_models.cli:main"}
