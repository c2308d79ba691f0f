"""``eca-models export``: each format written, loaded back (ONNX Runtime for ONNX), checked against PyTorch at two
batch sizes, with the model's classes in the file's metadata; a failing tolerance writes nothing."""

import pytest
import timm
import torch
from helpers import randomize

from eca_models.cli import main
from eca_models.export import read_metadata
from eca_models.weights.folders import write_hub_files

CLASSES = ["cat", "dog", "tree"]


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A fine-tuned-style folder: ECA-ResNet-18 with three named classes, trained BN statistics."""
    folder = tmp_path_factory.mktemp("run")
    model = randomize(timm.create_model("eca_resnet18_k3577", num_classes=len(CLASSES)), seed=3)
    config = {"label_names": CLASSES, "pretrained_cfg": {"tag": "finetuned"}}
    write_hub_files(model, folder, "card", {"arch": "eca_resnet18_k3577"}, model_config=config)
    return folder, model.eval()


def _reload(path, fmt):
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path))
    return torch.export.load(str(path)).module()


@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("torchscript", ".pt"), ("exported-program", ".pt2")])
def test_export_writes_a_checked_file_with_dynamic_batch_and_the_run_classes(run_folder, tmp_path, fmt, suffix, capsys):
    folder, model = run_folder
    out = tmp_path / f"model{suffix}"
    assert main(["export", "--model", str(folder), "--format", fmt, "--out", str(out), "--img-size", "64"]) == 0
    stdout = capsys.readouterr().out
    assert "largest difference from PyTorch" in stdout and "batch sizes 1 and 3" in stdout
    assert out.stat().st_mode & 0o777 == 0o644 and [p.name for p in tmp_path.iterdir()] == [out.name]
    run = _reload(out, fmt)
    x = torch.randn(5, 3, 64, 64)  # a batch size the check did not use
    with torch.no_grad():
        torch.testing.assert_close(run(x), model(x), atol=1e-4, rtol=1e-4)
    meta = read_metadata(out, fmt)
    assert meta["label_names"] == CLASSES and meta["num_classes"] == 3
    assert meta["architecture"] == "eca_resnet18_k3577" and meta["kernel_code"] == "k3577"
    assert meta["input_size"] == [3, 224, 224] and meta["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_export_over_the_tolerance_fails_and_writes_nothing(run_folder, tmp_path, capsys):
    folder, _ = run_folder
    out = tmp_path / "model.onnx"
    args = ("--format", "onnx", "--out", str(out), "--img-size", "64", "--tolerance", "1e-12")
    assert main(["export", "--model", str(folder), *args]) == 1
    stdout = capsys.readouterr().out
    assert "FAIL" in stdout and "over the tolerance" in stdout
    assert not any(tmp_path.iterdir())


def test_export_of_a_name_with_random_weights_and_bad_usage(tmp_path, capsys):
    out = tmp_path / "m.pt"
    args = ("--format", "torchscript", "--img-size", "64")
    assert main(["export", "--model", "eca_mobilenetv2", "--no-weights", "--out", str(out), *args]) == 0
    assert out.is_file()
    for bad, says in (
        (["--model", "eca_resnet9", "--no-weights", "--out", str(out)], "unknown model"),
        (["--model", "eca_resnet18", "--no-weights", "--out", str(tmp_path / "no" / "m.pt")], "does not exist"),
        (["--model", "eca_resnet18", "--out", str(out)], "not published"),
    ):
        assert main(["export", *bad, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, err


def test_the_tolerance_is_relative_to_the_outputs_scale(tmp_path):
    """Large logits (a fine-tuned head around 1e4) differ from PyTorch by float32 rounding well over an absolute
    1e-4; relative to their scale the file is right and is written."""
    from eca_models.export import export_model

    model = timm.create_model("eca_resnet18", num_classes=3).eval()
    with torch.no_grad():
        model.fc.weight.mul_(1e4)
    check = export_model(model, "onnx", tmp_path / "big.onnx", 64)
    assert check.scale > 1e3 and check.max_abs_diff > 1e-4  # an absolute 1e-4 would refuse it
    assert check.passed and check.allowed == pytest.approx(1e-4 * check.scale) and (tmp_path / "big.onnx").is_file()
