"""The six detectors: torchvision's classes, the release's parameter counts and manifest entries, label maps, and
the mmdetection v1 conversion checked against a plain recomputation from the file's own tensors."""

import json

import pytest
import torch
import torch.nn.functional as F
from detection_helpers import coco_names, write_mmdet_checkpoint
from torchvision.models.detection import FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import FrozenBatchNorm2d

from eca_models.complexity import count_params, detector_macs
from eca_models.conversion.mmdet_v1 import convert_mmdet_checkpoint
from eca_models.detection import LabelMap, create_detector, list_detectors, load_detector, release_param_count
from eca_models.weights import WeightsError, list_checkpoints

RELEASE_PARAMS = {  # the release README's Param column, in decimal millions
    "fasterrcnn_eca_resnet50_fpn": 41.53,
    "fasterrcnn_eca_resnet101_fpn": 60.52,
    "maskrcnn_eca_resnet50_fpn": 44.18,
    "maskrcnn_eca_resnet101_fpn": 63.17,
    "retinanet_eca_resnet50_fpn": 37.74,
    "retinanet_eca_resnet101_fpn": 56.74,
}
DETECTOR_CHECKPOINTS = [c for c in list_checkpoints() if not c.is_classifier]


def test_the_six_builders_are_registered():
    assert list_detectors() == sorted(RELEASE_PARAMS)


@pytest.mark.parametrize("ckpt", DETECTOR_CHECKPOINTS, ids=lambda c: c.name)
def test_release_counts_and_manifest_entry(ckpt):
    with torch.device("meta"):
        model = create_detector(ckpt.architecture)
    assert isinstance(model, {"f": FasterRCNN, "m": MaskRCNN, "r": RetinaNet}[ckpt.architecture[0]])
    assert type(model) in (FasterRCNN, MaskRCNN, RetinaNet)  # torchvision's own classes, not subclasses
    assert isinstance(model.backbone, BackboneWithFPN)
    assert list(model.backbone.body.keys())[:2] == ["conv1", "bn1"] and "layer4" in model.backbone.body
    assert round(release_param_count(model) / 1e6, 2) == RELEASE_PARAMS[ckpt.architecture]
    assert f"{RELEASE_PARAMS[ckpt.architecture]:.2f}M" == ckpt.published["params"]
    assert count_params(model) == ckpt.num_params == ckpt.meta["num_params"]
    assert detector_macs(model) / 1e9 == pytest.approx(ckpt.gmacs, abs=5e-5)
    assert model.detector_cfg["kernel_code"] == ckpt.kernel_code
    metrics = ckpt.metrics["COCO-val2017"]
    assert ("mask_map" in metrics) == ckpt.architecture.startswith("maskrcnn")  # RetinaNet has no mask rows
    assert ckpt.task == ("instance-segmentation" if "mask_map" in metrics else "object-detection")
    assert 30 < metrics["box_map"] < metrics["box_map_50"] < 70
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("backbone.body.conv1", "backbone.body.layer1")) for n in frozen)
    assert all(not isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())


def test_release_defaults():
    with torch.device("meta"):
        faster = create_detector("fasterrcnn_eca_resnet50_fpn")
        retina = create_detector("retinanet_eca_resnet50_fpn")
    assert faster.detector_cfg["kernel_code"] == "k5555"  # the release's 'k5'
    assert faster.roi_heads.box_predictor.cls_score.out_features == 81
    assert faster.roi_heads.box_predictor.bbox_pred.out_features == 81 * 4
    assert (faster.transform.min_size, faster.transform.max_size) == ((800,), 1333)
    assert faster.transform.size_divisible == 32
    assert retina.head.classification_head.num_classes == 80
    sizes = retina.anchor_generator.sizes
    assert sizes[0] == pytest.approx((32, 32 * 2 ** (1 / 3), 32 * 2 ** (2 / 3)))  # exact octave scales
    assert retina.detections_per_img == 100 and retina.topk_candidates == 1000
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in retina.head.modules())


def test_label_maps_round_trip():
    coco = LabelMap.coco()
    assert coco.num_classes == 81 and coco.name(1) == "person" and coco.category_id(80) == 90
    assert [coco.label(coco.category_id(j)) for j in range(1, 81)] == list(range(1, 81))
    retina = LabelMap.coco(background=False)
    assert retina.num_classes == 80 and retina.category_id(0) == 1 and retina.name(79) == "toothbrush"
    custom = LabelMap.from_categories([{"id": 40, "name": "b"}, {"id": 7, "name": "a"}])
    assert custom.names == ("a", "b") and custom.label(40) == 2
    assert LabelMap.from_json(json.loads(json.dumps(custom.to_json()))) == custom
    with pytest.raises(KeyError, match="category id 3 is not one of the model's classes"):
        custom.label(3)
    with pytest.raises(IndexError):
        custom.name(0)  # background has no name


def test_sizes_classes_and_categories_that_make_no_detector_are_one_line():
    """A Python caller's: sizes under 1 (torch's interpolate traceback at the first image), a fractional
    num_classes (a TypeError deep in torchvision), no categories (a background-only head, or RetinaNet's conv
    traceback), an id given twice (two classes under one id). A multi-scale tuple of sizes stays torchvision's."""
    from eca_models.errors import UsageError

    for name in ("fasterrcnn_eca_resnet50_fpn", "retinanet_eca_resnet50_fpn", "fasterrcnn_resnet50_fpn"):
        for kwargs, expected in (
            (dict(min_size=0), "min_size=0: expected a whole number of at least 1"),
            (dict(max_size=-1), "max_size=-1: expected a whole number of at least 1"),
            (dict(min_size=(640, 0)), "min_size=0: expected a whole number of at least 1"),
            (dict(num_classes=2.5), "num_classes=2.5: expected a whole number"),
            (dict(categories=[]), "categories: none given; a head needs at least one"),
            (dict(categories=[{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]), "categories: id 1 is given twice"),
        ):
            with pytest.raises(UsageError) as raised:
                create_detector(name, **kwargs)
            assert str(raised.value).startswith(expected), (name, raised.value)
    assert create_detector("retinanet_eca_resnet50_fpn", min_size=(64, 96), max_size=128).transform.min_size == (64, 96)


# -- the conversion, on files written as mmdetection v1 wrote them ---------------------------------------------


def _c_features(model, x):
    return list(model.backbone.body(x).values())


def _fpn(state, cs, retina):
    laterals = [F.conv2d(c, state[f"neck.lateral_convs.{i}.conv.weight"], state[f"neck.lateral_convs.{i}.conv.bias"])
                for i, c in enumerate(cs)]  # fmt: skip
    for i in range(len(laterals) - 1, 0, -1):
        laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], scale_factor=2, mode="nearest")
    outs = [F.conv2d(lat, state[f"neck.fpn_convs.{i}.conv.weight"], state[f"neck.fpn_convs.{i}.conv.bias"], padding=1)
            for i, lat in enumerate(laterals)]  # fmt: skip
    if retina:
        p6 = F.conv2d(cs[-1], state["neck.fpn_convs.3.conv.weight"], state["neck.fpn_convs.3.conv.bias"], 2, 1)
        outs += [p6, F.conv2d(p6, state["neck.fpn_convs.4.conv.weight"], state["neck.fpn_convs.4.conv.bias"], 2, 1)]
    else:
        outs.append(F.max_pool2d(outs[-1], 1, stride=2))
    return outs


def _conv(state, prefix, x, padding=0, relu=False):
    y = F.conv2d(x, state[f"{prefix}.weight"], state[f"{prefix}.bias"], padding=padding)
    return F.relu(y) if relu else y


@pytest.mark.parametrize("kind", ["fasterrcnn", "maskrcnn", "retinanet"])
def test_converted_outputs_equal_a_plain_recomputation(converted, kind):
    src, state, folder, report, lines = converted[kind]
    assert report.max_abs_diff == 0.0 and report.kernel_code == ("k5555" if kind == "fasterrcnn" else "k3377")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == f"{kind}_eca_resnet50_fpn" and config["kernel_sizes"] == list(
        (5, 5, 5, 5) if kind == "fasterrcnn" else (3, 3, 7, 7)
    )
    assert [c["name"] for c in config["label_map"]["categories"]] == coco_names()
    assert config["label_map"]["categories"][-1]["id"] == 90
    model = load_detector(folder)
    x = torch.randn(1, 3, 128, 160, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        cs = _c_features(model, x)
        expected = _fpn(state, cs if kind != "retinanet" else cs, kind == "retinanet")
        got = list(model.backbone.fpn({str(i): c for i, c in enumerate(cs)}).values())
        assert len(got) == len(expected) == 5
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)
        if kind == "retinanet":
            head = model.head(got)
            for key, conv, out in (("cls_logits", "cls_convs", "retina_cls"),
                                   ("bbox_regression", "reg_convs", "retina_reg")):  # fmt: skip
                flat = []
                for p in got:
                    h = p
                    for i in range(4):
                        h = _conv(state, f"bbox_head.{conv}.{i}.conv", h, 1, relu=True)
                    y = _conv(state, f"bbox_head.{out}", h, 1)
                    n, _, hh, ww = y.shape  # mmdetection: permute(0, 2, 3, 1), then (anchor, class) per location
                    flat.append(y.permute(0, 2, 3, 1).reshape(n, hh * ww * 9, -1))
                torch.testing.assert_close(head[key], torch.cat(flat, 1), rtol=1e-4, atol=1e-5)
            return
        objectness, deltas = model.rpn.head(got)
        for p, o, d in zip(got, objectness, deltas):
            h = _conv(state, "rpn_head.rpn_conv", p, 1, relu=True)
            torch.testing.assert_close(o, _conv(state, "rpn_head.rpn_cls", h), rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(d, _conv(state, "rpn_head.rpn_reg", h), rtol=1e-5, atol=1e-5)
        rois = torch.randn(5, 256, 7, 7, generator=torch.Generator().manual_seed(4))
        h = F.relu(
            F.linear(rois.flatten(1), state["bbox_head.shared_fcs.0.weight"], state["bbox_head.shared_fcs.0.bias"])
        )
        h = F.relu(F.linear(h, state["bbox_head.shared_fcs.1.weight"], state["bbox_head.shared_fcs.1.bias"]))
        scores, boxes = model.roi_heads.box_predictor(model.roi_heads.box_head(rois))
        torch.testing.assert_close(
            scores, F.linear(h, state["bbox_head.fc_cls.weight"], state["bbox_head.fc_cls.bias"])
        )
        torch.testing.assert_close(boxes, F.linear(h, state["bbox_head.fc_reg.weight"], state["bbox_head.fc_reg.bias"]))
        if kind == "maskrcnn":
            m = torch.randn(3, 256, 14, 14, generator=torch.Generator().manual_seed(5))
            h = m
            for i in range(4):
                h = _conv(state, f"mask_head.convs.{i}.conv", h, 1, relu=True)
            h = F.relu(F.conv_transpose2d(h, state["mask_head.upsample.weight"], state["mask_head.upsample.bias"], 2))
            expected = _conv(state, "mask_head.conv_logits", h)
            got = model.roi_heads.mask_predictor(model.roi_heads.mask_head(m))
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_trunk_equals_the_classification_model(converted):
    import timm

    _, state, folder, _, _ = converted["maskrcnn"]
    model = load_detector(folder)
    trunk = timm.create_model("eca_resnet50", kernel_sizes="k3377", num_classes=0, global_pool="")
    trunk.load_state_dict({k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")})
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model.backbone.body(x)["3"], trunk.eval()(x), rtol=1e-4, atol=1e-5)


def test_conversion_names_the_files_kernel_code(converted, tmp_path):
    src = converted["maskrcnn"][0]
    with pytest.raises(
        WeightsError, match="trained with kernel code k3377, not k3557: drop kernel_code= or pass kernel_code=k3377"
    ):
        convert_mmdet_checkpoint(src, "maskrcnn_eca_resnet50_fpn", tmp_path / "x", kernel_code="k3557", log=print)
    with pytest.raises(WeightsError, match="holds a maskrcnn_eca_resnet50_fpn, not a fasterrcnn_eca_resnet50_fpn"):
        convert_mmdet_checkpoint(src, "fasterrcnn_eca_resnet50_fpn", tmp_path / "y", log=print)
    with pytest.raises(WeightsError, match="holds a maskrcnn_eca_resnet50_fpn, not a maskrcnn_eca_resnet101_fpn"):
        convert_mmdet_checkpoint(src, "maskrcnn_eca_resnet101_fpn", tmp_path / "z", log=print)
    assert not any(tmp_path.iterdir())
    assert any("kernel code k3377" in line for line in converted["maskrcnn"][4])


def test_eca_tensors_are_matched_by_structure_whatever_their_name(tmp_path):
    from eca_models.conversion.mmdet_v1 import read_mmdet_checkpoint, remap_state_dict

    src, state = write_mmdet_checkpoint(
        tmp_path / "f.pth", "retinanet", kernel_sizes=(3, 5, 5, 7), eca_name="eca_layer.conv.weight"
    )
    ckpt = read_mmdet_checkpoint(src)
    assert ckpt.kernel_code == "k3557" and ckpt.architecture == "retinanet_eca_resnet50_fpn"
    with torch.device("meta"):
        model = create_detector("retinanet_eca_resnet50_fpn", kernel_sizes="k3557")
    remapped = remap_state_dict(ckpt, model)
    assert torch.equal(
        remapped["backbone.body.layer4.2.eca.conv.weight"], state["backbone.layer4.2.eca_layer.conv.weight"]
    )
    assert torch.equal(remapped["head.classification_head.cls_logits.weight"], state["bbox_head.retina_cls.weight"])


def test_imagenet_trunk_weights_load_with_their_own_kernel_code(tmp_path):
    import timm
    from helpers import save_authors_checkpoint

    state = timm.create_model("eca_resnet50", kernel_sizes="k3377").state_dict()
    path = save_authors_checkpoint(state, tmp_path / "eca_resnet50_k3377.pth.tar")
    model = create_detector("fasterrcnn_eca_resnet50_fpn", weights_backbone=str(path))  # the release's code is k5
    assert model.detector_cfg["kernel_code"] == "k3377"
    body = model.backbone.body.state_dict()
    assert all(torch.equal(body[k], v) for k, v in state.items() if k in body) and "layer4.2.eca.conv.weight" in body
    with pytest.raises(
        WeightsError, match="is an ECA-ResNet of kernel code k3377, not k5555: leave the kernel code out"
    ):
        create_detector("fasterrcnn_eca_resnet50_fpn", kernel_sizes="k5", weights_backbone=str(path))


def test_other_classes_load_the_weights_under_a_new_head(converted):
    """num_classes / categories other than the weights' keep every weight but the classification layers, which are
    new (torchvision's predictors, RetinaNet's last classification conv), as timm resets a classifier."""
    folder = converted["maskrcnn"][2]
    coco, three = load_detector(folder), load_detector(folder, num_classes=3)
    heads = ("roi_heads.box_predictor.", "roi_heads.mask_predictor.")  # torchvision's predictors, whole
    kept = {k: v for k, v in coco.state_dict().items() if not k.startswith(heads)}
    assert all(torch.equal(three.state_dict()[k], v) for k, v in kept.items())
    assert three.roi_heads.box_predictor.cls_score.out_features == 3 and three.label_map.names == ("class_1", "class_2")
    assert three.roi_heads.mask_predictor.mask_fcn_logits.out_channels == 3 and not three.training
    same = load_detector(folder, num_classes=81)  # the weights' own count: their head and names, as torchvision
    assert same.label_map.names == coco.label_map.names
    assert all(torch.equal(same.state_dict()[k], v) for k, v in coco.state_dict().items())
    retina = create_detector(
        "retinanet_eca_resnet50_fpn", checkpoint=converted["retinanet"][2], categories=[{"id": 7, "name": "kite"}]
    )
    assert retina.head.classification_head.cls_logits.out_channels == 9 and retina.label_map.category_ids == (7,)


def test_a_folder_is_used_at_the_sizes_it_records(converted, tmp_path):
    """A detector fine-tuned with --min-size 256 --max-size 384 records them in config.json: the one loader builds
    it at those sizes (validate and predict then work at the training scale); an explicit size still wins."""
    import shutil

    folder = tmp_path / "small"
    shutil.copytree(converted["retinanet"][2], folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "min_size": 256, "max_size": 384}))
    model, bigger = load_detector(folder), load_detector(folder, min_size=512)
    assert (model.transform.min_size, model.transform.max_size) == ((256,), 384)
    assert model.detector_cfg["min_size"] == 256 and bigger.transform.min_size == (512,)
