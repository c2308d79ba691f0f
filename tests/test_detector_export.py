"""Detectors exported as torchvision's deploy: ONNX (one image of any size, checked in ONNX Runtime) and
TorchScript, from converted folders in mmdetection v1's conventions; the file's detections match PyTorch's."""

import numpy as np
import pytest
import torch
from timm.layers import set_layer_config

from eca_models.cli import main
from eca_models.detection import create_detector
from eca_models.detection.legacy import use_legacy_coordinates
from eca_models.export import export_detector, read_metadata


def _detector(kind: str) -> torch.nn.Module:
    """Random weights whose scores are far apart (nothing near-equal for the runtimes to order otherwise), every
    detection kept (threshold 0), in mmdetection v1's conventions as the release's detectors are."""
    torch.manual_seed(0)
    with set_layer_config(exportable=True):
        if kind == "retinanet":
            model = create_detector("retinanet_eca_resnet50_fpn", pretrained=False, score_thresh=0.02)
            with torch.no_grad():  # RetinaNet's random scores all sit near its prior: spread them
                head = model.head.classification_head
                for conv in (m for m in head.conv.modules() if isinstance(m, torch.nn.Conv2d)):
                    conv.weight.mul_(3)
                head.cls_logits.weight.mul_(30)
        else:
            model = create_detector(f"{kind}_eca_resnet50_fpn", pretrained=False, box_score_thresh=0.0)
    return use_legacy_coordinates(model).eval()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fasterrcnn", "maskrcnn", "retinanet"])
def test_each_detector_kind_exports_to_onnx_and_torchscript_with_the_same_detections(kind, tmp_path):
    model = _detector(kind)
    for fmt, suffix in (("onnx", ".onnx"), ("torchscript", ".pt")):
        check = export_detector(model, fmt, tmp_path / f"{kind}{suffix}")
        assert check.passed and check.detections == 200, (fmt, check)  # 100 per image, two images
        meta = read_metadata(tmp_path / f"{kind}{suffix}", fmt)
        assert meta["architecture"] == f"{kind}_eca_resnet50_fpn" and len(meta["label_map"]["categories"]) == 80
        assert meta["legacy_coordinates"] is True


@pytest.mark.slow
def test_an_exported_detector_runs_in_onnx_runtime_alone_on_any_image_size(tmp_path):
    """What the deploy guide shows: numpy in, boxes out, no torch."""
    import onnxruntime

    out = tmp_path / "maskrcnn.onnx"
    assert export_detector(_detector("maskrcnn"), "onnx", out).passed
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "labels", "scores", "masks"]
    for height, width in ((300, 500), (521, 347)):
        image = np.random.default_rng(0).random((3, height, width), dtype=np.float32)
        boxes, labels, scores, masks = session.run(None, {"image": image})
        assert boxes.shape == (100, 4) and masks.shape == (100, 1, height, width) and len(labels) == len(scores)


@pytest.mark.slow
def test_the_command_exports_a_detector_and_says_when_nothing_was_compared(tmp_path, capsys):
    argv = ["export", "--model", "retinanet_eca_resnet50_fpn", "--no-weights", "--format", "onnx"]
    assert main([*argv, "--out", str(tmp_path / "r.onnx")]) == 0  # random weights: no detection above 0.05
    printed = capsys.readouterr().out
    assert "no detection to compare: pass --check-image" in printed and "over 0 detections" in printed
    assert (tmp_path / "r.onnx").is_file()


def test_a_detector_refuses_torch_export_in_one_line(tmp_path, capsys):
    argv = ["export", "--model", "retinanet_eca_resnet50_fpn", "--format", "exported-program"]
    assert main([*argv, "--out", str(tmp_path / "r.pt2")]) == 2
    assert "a detector exports to onnx or torchscript" in capsys.readouterr().err


def test_detections_are_paired_by_label_and_box_whatever_their_order():
    from eca_models.export import _compare_detections

    expected = {"boxes": torch.tensor([[0.0, 0, 10, 10], [5, 5, 20, 20]]), "labels": torch.tensor([1, 2])}
    expected["scores"] = torch.tensor([0.5, 0.5])
    swapped = {k: v.flip(0) for k, v in expected.items()}
    assert _compare_detections([swapped], [expected]) == (0.0, 1.0)
    other = dict(swapped, labels=torch.tensor([1, 1]))
    assert _compare_detections([other], [expected])[0] == float("inf")


def test_an_unreadable_check_image_is_one_line_before_any_model(tmp_path, capsys):
    (tmp_path / "street.jpg").write_text("not an image")
    argv = ["export", "--model", "fasterrcnn_eca_resnet50_fpn", "--no-weights", "--format", "torchscript"]
    assert main([*argv, "--out", str(tmp_path / "d.pt"), "--check-image", str(tmp_path / "street.jpg")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"eca-models export: error: check image {tmp_path / 'street.jpg'} cannot be read (")
    assert len(err.splitlines()) == 1 and not (tmp_path / "d.pt").exists()
