"""Each manifest entry held against the model it names, as torchvision's tests hold their Weights meta."""

import json

import pytest
import timm
import torch

from eca_models.complexity import count_macs, count_params
from eca_models.weights import CLASSIFICATION, binary_units, get_checkpoint, list_checkpoints, load_manifest
from eca_models.weights.manifest import SCHEMA, update_manifest

CHECKPOINTS = list_checkpoints(CLASSIFICATION)


def test_manifest_lists_the_six_released_checkpoints():
    assert [c.name for c in CHECKPOINTS] == [
        "eca_resnet18_k3577.in1k",
        "eca_resnet34_k3357.in1k",
        "eca_resnet50_k3557.in1k",
        "eca_resnet101_k3357.in1k",
        "eca_resnet152_k3357.in1k",
        "eca_mobilenetv2_k13.in1k",
    ]


@pytest.mark.parametrize("ckpt", CHECKPOINTS, ids=lambda c: c.name)
def test_entry_matches_its_model(ckpt):
    with torch.device("meta"):
        model = timm.create_model(ckpt.model_name)
    assert model.kernel_code == ckpt.kernel_code
    assert count_params(model) == ckpt.num_params == ckpt.meta["num_params"]
    assert count_macs(model) / 1e9 == pytest.approx(ckpt.gmacs, abs=5e-5)
    assert ckpt.meta["_ops"] == pytest.approx(2 * ckpt.gmacs, abs=1e-3)
    # the published parameter figure is the exact count in binary units, to the printed precision
    assert abs(ckpt.num_params - binary_units(ckpt.published["params"])) <= 0.006 * 2**20
    top = ckpt.metrics["ImageNet-1K"]
    assert 60 < top["acc@1"] < top["acc@5"] < 100
    assert ckpt.source_file == f"{ckpt.model_name}.pth.tar"
    assert ckpt.hf_hub_id == f"eca-models/{ckpt.name}"
    assert timm.models.get_pretrained_cfg(ckpt.name).hf_hub_id == ckpt.hf_hub_id


@pytest.mark.parametrize("ckpt", CHECKPOINTS, ids=lambda c: c.name)
def test_unpublished_entries_say_so(ckpt):
    # nothing is published yet: the fields only publication can fill stay empty, and read as a state
    assert not ckpt.is_published
    assert ckpt.revision is None and ckpt.sha256 is None and ckpt.file_size is None
    assert ckpt.meta["_file_size"] is None


def test_paper_rows_where_they_differ():
    by_name = {c.name: c for c in CHECKPOINTS}
    assert by_name["eca_resnet50_k3557.in1k"].paper_metrics["ImageNet-1K"] == {"acc@1": 77.48, "acc@5": 93.68}
    assert by_name["eca_resnet18_k3577.in1k"].paper_metrics["ImageNet-1K"] == {"acc@1": 70.78, "acc@5": 89.92}


def test_update_manifest_is_atomic_and_checked(tmp_path):
    from eca_models.weights.manifest import _manifest_path

    path = tmp_path / "manifest.json"
    path.write_text(_manifest_path().read_text())
    update_manifest("eca_resnet18_k3577.in1k", path=path, revision="a" * 40, sha256="b" * 64, file_size=123)
    entry = load_manifest(path)["eca_resnet18_k3577.in1k"]
    assert entry.is_published and entry.meta["_file_size"] == pytest.approx(123 / 2**20, abs=1e-3)
    with pytest.raises(ValueError, match="unknown manifest fields"):
        update_manifest("eca_resnet18_k3577.in1k", path=path, colour="red")
    with pytest.raises(KeyError):
        update_manifest("nope.in1k", path=path, revision="x")
    assert json.loads(path.read_text())["schema"] == SCHEMA
    assert not list(tmp_path.glob(".*.tmp"))


def test_manifest_schema_is_checked(tmp_path):
    from eca_models.weights.manifest import _manifest_path

    raw = json.loads(_manifest_path().read_text())
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({**raw, "schema": 1}))
    with pytest.raises(ValueError, match="manifest schema 1; this eca-models reads schema 3"):
        load_manifest(path)
    broken = json.loads(json.dumps(raw))
    broken["checkpoints"]["eca_resnet18_k3577.in1k"]["task"] = "segmentation"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match="eca_resnet18_k3577.in1k needs a task"):
        load_manifest(path)
    del raw["checkpoints"]["eca_resnet34_k3357.in1k"]["release"]["baidu_code"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="eca_resnet34_k3357.in1k's release source needs exactly"):
        load_manifest(path)


def test_every_checkpoint_has_its_release_sources():
    """The twelve files of the release, each with its Google Drive id and file name, the Baidu copy and its
    extract code (the facts file's table), and the original's sha256 and size either unknown or well formed."""
    import re

    checkpoints = list_checkpoints()
    assert len(checkpoints) == 12
    ids = set()
    for ckpt in checkpoints:
        release = ckpt.release
        assert re.fullmatch(r"[-\w]{33}", release["drive_id"]), ckpt.name
        assert release["file_name"] == ckpt.source_file and release["file_name"].endswith((".pth.tar", ".pth"))
        assert release["baidu_url"].startswith("https://pan.baidu.com/s/") and re.fullmatch(
            r"[a-z0-9]{4}", release["baidu_code"]
        )
        assert release["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", release["sha256"])
        assert release["size"] is None or (isinstance(release["size"], int) and release["size"] > 0)
        ids.add(release["drive_id"])
    assert len(ids) == 12  # one file each
    assert get_checkpoint("eca_resnet50_k3557.in1k").release["drive_id"] == "1670rce333c_lyMWFzBlNZoVUvtxbCF_U"
    assert get_checkpoint("maskrcnn_eca_resnet50_fpn.coco").release["baidu_code"] == "xe19"


def test_a_manifest_that_cannot_be_read_is_one_line_and_so_is_the_command(tmp_path, monkeypatch, capsys):
    """ECA_MODELS_MANIFEST naming a missing or non-JSON file: one line, at the first use of the manifest (it is read
    when eca_models is imported, so the console script's entry answers for the import too)."""
    import sys
    import types

    import eca_models_cli
    from eca_models.errors import UsageError

    (tmp_path / "page.json").write_text("<html>", encoding="utf-8")
    (tmp_path / "list.json").write_text("[1]", encoding="utf-8")
    for name, says in (("nowhere.json", "No such file"), ("page.json", "Expecting value"), ("list.json", "schema")):
        with pytest.raises(UsageError) as raised:
            load_manifest(tmp_path / name)
        assert says in str(raised.value) and "\n" not in str(raised.value), raised.value

    class Failing(types.ModuleType):  # eca_models.cli as its import fails on a bad manifest
        def __getattr__(self, name):
            raise UsageError("the manifest /x.json (ECA_MODELS_MANIFEST) cannot be read: No such file")

    monkeypatch.setitem(sys.modules, "eca_models.cli", Failing("eca_models.cli"))
    assert eca_models_cli.main(["list"]) == 2
    assert (
        capsys.readouterr().err
        == "eca-models: error: the manifest /x.json (ECA_MODELS_MANIFEST) cannot be read: No such file\n"
    )
