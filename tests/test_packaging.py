"""What pyproject.toml installs is the whole package and its manifest, and the repository holds nothing that a
zipball (torch.hub), a Windows checkout or an sdist turns into something else: no symbolic links."""

import subprocess
import sys
import zipfile
from importlib import metadata, resources

import pytest
from conftest import ROOT

MANIFEST = ROOT / "eca_models" / "weights" / "manifest.json"


def _tracked() -> list:
    """``git ls-files -s`` of the checkout: ``mode sha stage\tpath`` per file."""
    result = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def test_no_symbolic_links_are_tracked():
    """zipfile (torch.hub), git with core.symlinks=false (Windows) and some archivers write a link as a text file
    holding its target, so a tracked link breaks the package for those users."""
    links = [line.split("\t", 1)[1] for line in _tracked() if line.startswith("120000 ")]
    assert not links, f"symbolic links in the repository: {links}"


def test_one_manifest_in_the_package_and_none_beside_it():
    manifests = [line.split("\t", 1)[1] for line in _tracked() if line.endswith("manifest.json")]
    assert manifests == ["eca_models/weights/manifest.json"]
    assert {p.name for p in (ROOT / "weights").iterdir()} == {"README.md"}  # the maintainers' page, no copy


def test_the_installed_package_reads_the_manifest_maintainers_edit():
    from eca_models.weights.manifest import _manifest_path

    shipped = resources.files("eca_models.weights").joinpath("manifest.json").read_bytes()
    assert shipped == MANIFEST.read_bytes()
    assert _manifest_path() == MANIFEST.resolve()  # updates write the tracked file


@pytest.mark.slow
def test_a_wheel_carries_the_manifest_and_every_module(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("eca_models-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        assert archive.read("eca_models/weights/manifest.json") == MANIFEST.read_bytes()
    for module in ("fetch", "release", "loading", "manifest", "folders", "publish", "model_card"):
        assert f"eca_models/weights/{module}.py" in names
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "eca_models").rglob("*.py")}
    assert modules <= names, sorted(modules - names)  # every module of the package, in every room
    assert not any(name.startswith("weights/") for name in names)
    assert "eca_models_cli.py" in names  # the console script's entry


def test_console_script():
    (script,) = metadata.distribution("eca-models").entry_points.select(group="console_scripts")
    assert (script.name, script.value) == ("eca-models", "eca_models_cli:main")


@pytest.mark.slow
def test_version_answers_without_importing_torch():
    """``eca-models --version`` answers in a fraction of a second: torch (2-3 s to import) is not loaded."""
    probe = "import sys, eca_models_cli; code = eca_models_cli.main(['--version']); print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'eca_models')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    import eca_models

    assert result.stdout.splitlines() == [f"eca-models {eca_models.__version__}", "[]"]
