import json

import pytest
import timm
import torch
from conftest import ROOT, run_cli
from helpers import (
    Payload,
    save_authors_checkpoint,
)

from eca_models.cli import main
from eca_models.files import sha256_file
from eca_models.weights import load_manifest
from eca_models.weights.manifest import _manifest_path
from eca_models.weights.publish import publish_folder


@pytest.fixture(scope="module")
def authors_r18(tmp_path_factory):
    folder = tmp_path_factory.mktemp("src")
    model = timm.create_model("eca_resnet18_k3577")
    return save_authors_checkpoint(model.state_dict(), folder / "eca_resnet18_k3577.pth.tar", arch="se_resnet50")


@pytest.fixture(scope="module")
def converted(authors_r18, tmp_path_factory):
    out = tmp_path_factory.mktemp("out") / "eca_resnet18_k3577.in1k"
    assert (
        main(["convert", str(authors_r18), "--model", "eca_resnet18_k3577", "--out", str(out), "--check-size", "32"])
        == 0
    )
    return out


def test_convert_explains_and_checks(authors_r18, tmp_path, capsys):
    out = tmp_path / "r18"
    code = main(["convert", str(authors_r18), "--model", "eca_resnet18_k3577", "--out", str(out), "--check-size", "32"])
    text = capsys.readouterr().out
    assert code == 0
    assert "'arch' field says 'se_resnet50'; ignored" in text
    assert "kernel code k3577: layer1: k=3 (2 ECA layers); layer2: k=5" in text
    assert "logits identical to the source file's" in text
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)  # not left with mkdtemp's private mode

    # an existing folder is never overwritten without --overwrite
    before = sha256_file(out / "model.safetensors")
    code = main(["convert", str(authors_r18), "--model", "eca_resnet18_k3577", "--out", str(out), "--check-size", "32"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "exists and is not empty; pass --overwrite" in err and "\n" not in err
    assert sha256_file(out / "model.safetensors") == before
    args = ["convert", str(authors_r18), "--model", "eca_resnet18_k3577", "--out", str(out), "--check-size", "32"]
    assert main([*args, "--overwrite"]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary folders left behind"


@pytest.mark.parametrize(
    "model,expected,status",
    [
        ("eca_resnet18", "", 0),  # the architecture defaults to k3577: fits
        ("eca_resnet34", "does not fit eca_resnet34", 2),
        ("eca_resnet50_k3557", "does not fit eca_resnet50", 2),
        ("resnet18", "unknown model 'resnet18'", 2),
    ],
)
def test_convert_refuses_the_wrong_model_in_one_line(authors_r18, tmp_path, capsys, model, expected, status):
    code = main(["convert", str(authors_r18), "--model", model, "--out", str(tmp_path / "o"), "--check-size", "32"])
    err = capsys.readouterr().err.strip()
    assert code == status
    if expected:
        assert expected in err and len(err.splitlines()) == 1
        assert not (tmp_path / "o").exists()


def test_convert_names_the_kernel_code_of_a_mismatched_file(tmp_path, capsys):
    src = save_authors_checkpoint(
        timm.create_model("eca_resnet18", kernel_sizes="k3357").state_dict(), tmp_path / "x.pth.tar"
    )
    assert main(["convert", str(src), "--model", "eca_resnet18", "--out", str(tmp_path / "o")]) == 2
    assert "this checkpoint is k3357; create eca_resnet18_k3357 or pass kernel_sizes='k3357'" in capsys.readouterr().err


def test_convert_refuses_files_that_need_pickled_code(tmp_path, capsys):
    src = tmp_path / "evil.pth.tar"
    torch.save({"state_dict": {}, "x": Payload()}, src)
    assert main(["convert", str(src), "--model", "eca_resnet18", "--out", str(tmp_path / "o")]) == 2
    captured = capsys.readouterr()
    assert "holds pickled code" in captured.err and "pickled code ran" not in captured.out
    assert (
        main(["convert", str(tmp_path / "missing.pth.tar"), "--model", "eca_resnet18", "--out", str(tmp_path / "o")])
        == 2
    )
    assert "weights file not found" in capsys.readouterr().err


def test_publish_dry_run_changes_nothing(converted, capsys):
    manifest_before = _manifest_path().read_text()
    assert main(["publish", str(converted), "--repo", "eca-models/eca_resnet18_k3577.in1k", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would upload" in out and "model.safetensors" in out and "config.json" in out and "README.md" in out
    assert sha256_file(converted / "model.safetensors") in out
    assert "manifest entry eca_resnet18_k3577.in1k" in out
    assert _manifest_path().read_text() == manifest_before


def test_publish_records_commit_and_checksum(converted, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(_manifest_path().read_text())
    uploads = []

    def upload(folder, repo_id, message):  # stands in for the network step only
        uploads.append((folder, repo_id, message))
        return "c" * 40

    commit = publish_folder(converted, "my-org/r18", manifest_path=manifest, upload=upload, log=lambda _: None)
    assert commit == "c" * 40 and uploads[0][0] == converted and uploads[0][1] == "my-org/r18"
    entry = load_manifest(manifest)["eca_resnet18_k3577.in1k"]
    assert entry.is_published and entry.revision == "c" * 40 and entry.hf_hub_id == "my-org/r18"
    assert entry.sha256 == sha256_file(converted / "model.safetensors")
    assert entry.file_size == (converted / "model.safetensors").stat().st_size
    assert json.loads(manifest.read_text())["checkpoints"]["eca_resnet34_k3357.in1k"]["revision"] is None


def test_publish_refuses_what_is_not_a_converted_folder(tmp_path, converted, capsys):
    assert main(["publish", str(tmp_path / "nope"), "--repo", "a/b", "--dry-run"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "model.safetensors").write_bytes(b"junk")
    assert main(["publish", str(tmp_path / "half"), "--repo", "a/b", "--dry-run"]) == 2
    assert "lacks config.json, README.md" in capsys.readouterr().err
    assert main(["publish", str(converted), "--repo", "no-slash", "--dry-run"]) == 2
    assert "--repo 'no-slash': must look like ORG/NAME" in capsys.readouterr().err


@pytest.mark.slow
def test_publish_without_a_network_is_one_line_and_records_nothing(converted, tmp_path):
    """No Hub to reach (a closed loopback port): one line, exit 2, the manifest untouched."""
    manifest = tmp_path / "manifest.json"
    manifest.write_bytes((ROOT / "eca_models" / "weights" / "manifest.json").read_bytes())
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_TOKEN": "hf_test", "HF_HUB_OFFLINE": "0"}
    result = run_cli("publish", str(converted), "--repo", "someone/eca", "--manifest", str(manifest), env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "eca-models publish: error: uploading to someone/eca failed (Connect"
    )  # httpx or requests
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert manifest.read_bytes() == (ROOT / "eca_models" / "weights" / "manifest.json").read_bytes()


def test_a_card_keeps_the_releases_figures_apart_from_what_was_measured():
    """The model index (what the Hub reads as this model's results) holds only a measurement of these weights; the
    release's reported figures are said in the text as the release's; MACs name the size they were counted at."""
    from eca_models.weights import get_checkpoint
    from eca_models.weights.model_card import render_model_card

    ckpt = get_checkpoint("eca_resnet50_k3557.in1k")
    common = dict(repo_name="r", model_name="eca_resnet50_k3557", kernel_code="k3557", num_params=1, gmacs=0.5)
    converted = render_model_card(**common, hf_hub_id=ckpt.hf_hub_id, checkpoint=ckpt)
    front = converted.split("\n---\n", 1)[0]
    assert "model-index" not in front and "77.42" not in front
    assert "Reported by the release for its eca_resnet50_k3557.pth.tar" in converted
    assert "Top-1 77.42, Top-5 93.62. These are the release's figures, not a measurement of this file" in converted
    tuned = render_model_card(
        **common, hf_hub_id="ORG/r", measured={"acc@1": 90.0}, dataset="birds", input_size=(3, 64, 64)
    )
    assert "name: Top-1 accuracy (measured)" in tuned.split("\n---\n", 1)[0] and "value: 90.0" in tuned
    assert "MACs at 64x64: 0.500G" in tuned and "224x224" not in tuned


def test_publish_of_a_run_folder_uploads_only_the_model_files(two_class_run, capsys):
    assert main(["publish", str(two_class_run["run"]), "--repo", "me/pets", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "model.safetensors" in out and "config.json" in out and "README.md" in out
    assert "last.pth" not in out and "args.json" not in out and "metrics.jsonl" not in out
