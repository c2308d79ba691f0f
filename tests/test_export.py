"""``eca-models export``: each format written, loaded back (ONNX Runtime for ONNX), checked against PyTorch at two
batch sizes, with the model's classes in the file's metadata; a failing tolerance writes nothing."""

import pytest
import timm
import torch
from helpers import randomize

from eca_models.cli import main
from eca_models.errors import UsageError
from eca_models.export import export, read_metadata
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
        (["--model", "eca_resnet18", "--no-weights", "--out", str(out), "--opset", "17"], "--opset 17: a classifier"),
        (["--model", "retinanet_eca_resnet50_fpn", "--out", str(out), "--opset", "18"], "leave --opset out"),
        (["--model", "eca_resnet18", "--no-weights", "--out", str(out), "--tolerance", "-1"], "--tolerance -1.0"),
        (["--model", "eca_resnet18", "--out", str(out), "--check-image", str(out)], "check images are a detector's"),
    ):
        assert main(["export", *bad, *args]) == 2
        err = capsys.readouterr().err.strip()
        assert says in err and len(err.splitlines()) == 1, err
    for size in (-1, 0):  # a Python caller's: torch's 'negative dimension' traceback after the load, or the default
        with pytest.raises(UsageError, match=f"^img_size={size}: expected a whole number of at least 1"):
            export("eca_resnet18", "torchscript", out, pretrained=False, img_size=size)


def test_an_opset_the_exporter_cannot_write_is_refused_not_swapped(tmp_path):
    """torch's exporter keeps its own opset where it cannot convert to the one asked for, and only logs it."""
    from eca_models.export import export_model

    with pytest.raises(UsageError, match=r"^opset=99: torch's ONNX exporter could not write it \(it wrote 18\)"):
        export_model(timm.create_model("eca_resnet18", num_classes=3), "onnx", tmp_path / "m.onnx", 32, opset=99)
    assert not any(tmp_path.iterdir())


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


@pytest.fixture(scope="module")
def eca_resnet50():
    """ECA-ResNet-50 with spread BN statistics and ECA weights, so that the gates differ across channels."""
    return randomize(timm.create_model("eca_resnet50", num_classes=10), seed=5).eval()


@pytest.mark.parametrize("form", ["blocked", "plain"])
def test_onnx_forms_match_pytorch_and_say_which_they_are(eca_resnet50, tmp_path, form):
    """The blocked form (the default) multiplies each ECA gate at full size and pools spatially with
    GlobalAveragePool, the bottleneck's gate from conv3's input where that pays; the plain form is the graph as
    PyTorch runs it. Both within the tolerance of PyTorch, and the file says which it is."""
    import onnx

    from eca_models.export import export_model

    out = tmp_path / f"{form}.onnx"
    check = export_model(eca_resnet50, "onnx", out, 64, onnx_form=form)
    assert check.passed, check
    ops = [node.op_type for node in onnx.load(str(out)).graph.node]
    if form == "blocked":
        assert ops.count("Resize") == 16 and ops.count("GlobalAveragePool") == 17 and "ReduceMean" not in ops
        assert ops.count("Gemm") > 1  # gates pooled before conv3 (a Gemm each), besides the classifier
    else:
        assert "Resize" not in ops and ops.count("ReduceMean") == 17
    assert read_metadata(out, "onnx")["onnx_form"] == form


def test_blocked_form_leaves_mobilenetv2_gates_plain_and_an_unknown_form_is_refused(tmp_path, capsys):
    """MobileNetV2's blocks keep the (N, C, 1, 1) gate in the blocked form (the full-size gate measured slower there);
    its spatial means still become global pools."""
    import onnx

    out = tmp_path / "m.onnx"
    args = ["--model", "eca_mobilenetv2", "--no-weights", "--format", "onnx", "--img-size", "64"]
    assert main(["export", *args, "--out", str(out)]) == 0
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "Resize" not in ops and ops.count("GlobalAveragePool") == 18 and "ReduceMean" not in ops
    with pytest.raises(SystemExit):
        main(["export", *args, "--out", str(out), "--onnx-form", "nchwc"])
    assert "invalid choice: 'nchwc'" in capsys.readouterr().err
    with pytest.raises(UsageError, match="onnx_form='nchwc': choose one of blocked, plain"):
        export("eca_mobilenetv2", "onnx", out, pretrained=False, onnx_form="nchwc")


def test_only_spatial_means_of_4d_tensors_become_global_pools(tmp_path):
    import onnx

    from eca_models.export import write_onnx

    class Means(torch.nn.Module):
        def forward(self, x):
            return x.mean(dim=(2, 3)) + x.mean(dim=(-2, -1)) + x.mean(dim=1).mean(dim=(1, 2))[:, None]

    run = write_onnx(Means(), torch.randn(2, 4, 5, 6), tmp_path / "m.onnx")
    ops = [node.op_type for node in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops.count("GlobalAveragePool") == 2 and ops.count("ReduceMean") == 2
    x = torch.randn(3, 4, 5, 6)
    torch.testing.assert_close(run(x), Means()(x), atol=1e-5, rtol=1e-5)
