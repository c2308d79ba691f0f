"""The package's shape: one error base mapped once to exit status 2, one vocabulary for the detectors' arguments,
no private name imported across modules."""

import re
import warnings

import pytest
import torch
from conftest import ROOT

from eca_models import EcaModelsError
from eca_models.cli import main


def test_every_one_line_error_derives_from_one_base():
    from eca_models.cli.common import ModelUnavailable, UsageError
    from eca_models.errors import DataError
    from eca_models.evaluation import UnreadableImage
    from eca_models.files import OutputPathError
    from eca_models.training.runner import RunDirError
    from eca_models.weights import WeightsError, WeightsNotPublished
    from eca_models.weights.release import ReleaseFetchError

    kinds = (UsageError, ModelUnavailable, DataError, UnreadableImage, OutputPathError, RunDirError, WeightsError)
    for kind in (*kinds, WeightsNotPublished, ReleaseFetchError):
        assert issubclass(kind, EcaModelsError), kind
    # and each is still the built-in kind a caller would catch
    assert issubclass(DataError, ValueError) and issubclass(WeightsError, RuntimeError)
    assert issubclass(OutputPathError, OSError)


def test_the_entry_point_maps_the_base_once(monkeypatch, capsys):
    from eca_models.cli import list_models
    from eca_models.errors import DataError

    def fails(_args):
        raise DataError("the data says no")

    monkeypatch.setattr(list_models, "run", fails)
    assert main(["list"]) == 2
    assert capsys.readouterr().err.strip() == "eca-models list: error: the data says no"  # no --debug hint: ours


def test_the_detectors_take_the_classifiers_and_torchvisions_names():
    from eca_models.detection import create_detector, fasterrcnn_eca_resnet50_fpn

    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("error")  # the current names warn of nothing
        model = create_detector("retinanet_eca_resnet50_fpn", kernel_sizes="k3557", trainable_backbone_layers=2)
    assert model.detector_cfg["kernel_code"] == "k3557"
    trained = {n.split(".")[0] for n, p in model.backbone.body.named_parameters() if p.requires_grad}
    assert trained == {"layer3", "layer4"}
    with torch.device("meta"):
        new = fasterrcnn_eca_resnet50_fpn(kernel_sizes="k3357")
        for old_name in ("kernel_code", "trunk_weights", "trainable_layers"):  # no release carried them: refused
            with pytest.raises(TypeError, match=old_name):
                create_detector("fasterrcnn_eca_resnet50_fpn", **{old_name: 1})
    assert new.detector_cfg["kernel_code"] == "k3357"


def test_the_command_line_flag_has_torchvisions_name_only(capsys):
    from eca_models.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["finetune", "--model", "m", "--output", "o", "--weights-backbone", "trunk.pth.tar"])
    assert args.weights_backbone == "trunk.pth.tar"
    with pytest.raises(SystemExit):
        parser.parse_args(["finetune", "--model", "m", "--output", "o", "--backbone-checkpoint", "trunk.pth.tar"])
    assert "unrecognized arguments: --backbone-checkpoint" in capsys.readouterr().err


def test_no_private_name_crosses_modules():
    """``from x import _name`` between the package's modules (and timm's private modules) would tie one module to
    another's internals."""
    no_public_twin = set()  # none left: timm's Hub config is written by weights.folders.hub_config
    offenders = []
    for path in sorted((ROOT / "eca_models").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            private_name = re.match(r"\s*from \S+ import .*\b_[a-z]\w*", line)
            other_private_module = re.match(r"\s*from (\.\.[\w.]*|eca_models[\w.]*|timm[\w.]*)\._[a-z]\w* import", line)
            if (private_name or other_private_module) and line.strip() not in no_public_twin:
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)


def test_finetune_help_groups_the_flags_and_refuses_the_other_tasks(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    text = capsys.readouterr().out
    assert "classifiers only" in text and "detectors only" in text and "(default 224)" in text
    argv = [
        "finetune",
        "--model",
        "fasterrcnn_eca_resnet50_fpn",
        "--data",
        str(tmp_path),
        "--output",
        str(tmp_path / "r"),
    ]
    for flag, value in (("--img-size", "64"), ("--sched", "step"), ("--scale", "0.5 1")):
        assert main([*argv, flag, *value.split()]) == 2
        err = capsys.readouterr().err
        assert f"{flag} are for classifiers" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def _package_imports():
    """(module, imported module, at module level?) for every import of the package's own modules."""
    import ast

    found = []
    for path in sorted((ROOT / "eca_models").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts if parts[-1] == "__init__" else parts[:-1]
        package = [p for p in package if p != "__init__"]
        tree = ast.parse(path.read_text())
        module = ".".join(p for p in parts if p != "__init__")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                if target and target.startswith("eca_models"):
                    found.append((module, target, node in tree.body))
    return found


def _room(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "(package)"


def test_the_rooms_import_downwards_only():
    """No two rooms import each other at module level, directly or through others; the package's own imports
    inside functions are the few the architecture page names (each saves start-up time, or breaks the one upward
    arrow)."""
    import graphlib

    graph = {}
    for module, target, top in _package_imports():
        if top and _room(module) != _room(target) and _room(module) != "(package)":
            graph.setdefault(_room(module), set()).add(_room(target))
    list(graphlib.TopologicalSorter(graph).static_order())  # raises CycleError on a cycle
    inside = sorted({(m, t) for m, t, top in _package_imports() if not top})
    assert inside == [
        ("eca_models.attention", "eca_models.plots"),
        ("eca_models.benchmark.classification", "eca_models.plots"),
        ("eca_models.weights.release", "eca_models.conversion.imagenet"),
        ("eca_models.weights.release", "eca_models.conversion.mmdet_v1"),
        ("eca_models.weights.release", "eca_models.detection.labels"),
        ("eca_models.zoo", "eca_models.detection"),
    ]


def test_the_commands_are_thin_and_no_function_is_over_a_screen():
    """cli/ parses, calls and prints: well under half its 1,909 lines before the jobs moved out; and no function of
    the package is longer than a screen (60 lines, docstring included)."""
    import ast

    cli = sum(len(path.read_text().splitlines()) for path in (ROOT / "eca_models" / "cli").glob("*.py"))
    long = [
        f"{path.relative_to(ROOT)}:{node.name}"
        for path in sorted((ROOT / "eca_models").rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60
    ]
    assert cli < 950 and long == [], (cli, long)
