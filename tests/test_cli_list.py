import json

import pytest
from conftest import run_cli

from eca_models.cli import main
from eca_models.weights import CLASSIFICATION, list_checkpoints


@pytest.mark.slow
def test_list_prints_the_zoo_with_units():
    result = run_cli("list")  # the installed command, as a user runs it
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line, fields in [
        (
            "eca_resnet50_k3557",
            ["k3557", "25,557,112", "24.37M", "4.089", "24.37M / 3.86G", "77.42", "93.62", "authors' file"],
        ),
        ("eca_mobilenetv2 ", ["k13", "3,504,903", "3.34M", "0.301", "3.34M / 319.9M", "72.56", "90.81"]),
    ]:
        row = next(r for r in out.splitlines() if r.startswith(line))
        for field in fields:
            assert field in row, (field, row)
    assert "binary units" in out and "2^20" in out and "2^30" in out


def test_list_json_agrees_with_the_manifest(capsys):
    assert main(["list", "--json"]) == 0
    rows = {r["model"]: r for r in json.loads(capsys.readouterr().out)}
    assert len(rows) == 12 + 6  # the classifiers, then the six detectors
    for ckpt in list_checkpoints(CLASSIFICATION):
        for name in (ckpt.model_name, ckpt.architecture):
            row = rows[name]
            assert row["params"] == ckpt.num_params and row["kernel_code"] == ckpt.kernel_code
            assert abs(row["gmacs"] - ckpt.gmacs) < 5e-5
            assert row["top1"] == ckpt.metrics["ImageNet-1K"]["acc@1"] and row["weights"] == "authors' file"


def test_list_shows_local_weights(tmp_path, monkeypatch, capsys):
    repo = tmp_path / "eca_resnet18_k3577.in1k"
    repo.mkdir()
    (repo / "model.safetensors").write_bytes(b"x")
    monkeypatch.setenv("ECA_MODELS_WEIGHTS_DIR", str(tmp_path))
    assert main(["list", "eca_resnet18*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["model"]: r["weights"] for r in rows} == {"eca_resnet18": "local", "eca_resnet18_k3577": "local"}


def test_list_shows_the_detectors(capsys):
    assert main(["list", "*rcnn*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in rows] == [
        f"{d}_eca_resnet{n}_fpn" for d in ("fasterrcnn", "maskrcnn") for n in (50, 101)
    ]
    for r in rows:
        assert f"{r['release_params'] / 1e6:.2f}M" == r["published_params"] and r["weights"] == "authors' file"
        assert (r["mask_map"] is not None) == r["model"].startswith("maskrcnn")
    assert main(["list", "retinanet*"]) == 0
    out = capsys.readouterr().out
    assert "retinanet_eca_resnet50_fpn" in out and "37.74M" in out and "eca_resnet18" not in out
