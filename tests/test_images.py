"""Reading images as users' files come: phone photos carry their orientation in EXIF."""

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from helpers import FAST_64, bomb_png, one_line_error, save_authors_checkpoint, write_image
from PIL import Image, ImageOps
from timm.data import create_transform, resolve_data_config

import eca_models
from eca_models.cli import main
from eca_models.data.imagenet import imagenet_wnids
from eca_models.data.images import find_images, open_rgb
from eca_models.prediction import classify_images


def test_a_photo_is_read_upright_as_its_exif_orientation_says(tmp_path):
    stored = Image.new("RGB", (40, 20), (200, 10, 10))
    stored.paste((10, 10, 200), (0, 0, 10, 20))  # blue on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    upright = open_rgb(tmp_path / "phone.jpg")
    assert upright.size == (20, 40)  # portrait, as the phone showed it
    top = upright.getpixel((10, 2))
    assert top[2] > 150 and top[0] < 100  # the stored left edge is now on top
    stored.save(tmp_path / "plain.jpg", quality=95)
    assert open_rgb(tmp_path / "plain.jpg").size == (40, 20)


def test_a_decompression_bomb_is_an_unreadable_image(val, tmp_path, capsys):
    folder = tmp_path / "imgs"
    good = [write_image(folder / f"{i}.png", seed=i, size=64) for i in range(2)]
    (folder / "b").mkdir()
    bomb = bomb_png(folder / "b" / "0.png")  # the unreadable image counts in telling names apart
    argv = ["predict", str(good[0]), str(bomb), str(good[1]), "--model", "eca_resnet18_k3577"]
    assert main([*argv, "--checkpoint", str(val["ckpt"]), "--top-k", "1"]) == 2
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("imgs/0.png: ") and lines[1].startswith("1.png: ")
    assert f"cannot read {bomb}" in captured.err and "decompression bomb" in captured.err
    data = tmp_path / "val"
    (data / imagenet_wnids()[500]).mkdir(parents=True)
    for i, path in enumerate(good):
        (data / imagenet_wnids()[500] / f"{i}.png").write_bytes(path.read_bytes())
    bomb_png(data / imagenet_wnids()[500] / "bomb.png")
    argv = ["validate", "--model", "eca_resnet18_k3577", "--checkpoint", str(val["ckpt"]), "--data", str(data)]
    assert main([*argv, *FAST_64]) == 0
    assert "2 scored, 1 unreadable" in capsys.readouterr().out


def test_predict_takes_folders_recursively_sorted(val, tmp_path, capsys):
    for name in ("b/2.png", "a/1.jpg", "c.png", ".hidden/x.png", "notes.txt", "d.jfif"):  # .jfif: a browser's JPEG
        path = tmp_path / "imgs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, seed=len(name)) if name.endswith(("png", "jpg", "jfif")) else path.write_text("x")
    argv = ["predict", str(tmp_path / "imgs"), "--model", "eca_resnet18_k3577", "--checkpoint", str(val["ckpt"])]
    assert main([*argv, "--json", "--top-k", "1"]) == 0
    shown = [Path(r["image"]).relative_to(tmp_path / "imgs").as_posix() for r in json.loads(capsys.readouterr().out)]
    assert shown == ["a/1.jpg", "b/2.png", "c.png", "d.jfif"]


def test_wildcards_stand_for_what_they_match_and_a_url_is_one_line(tmp_path, capsys):
    for name in ("b/2.png", "a/1.jpg", "c.png", "[x].png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        write_image(tmp_path / name, seed=len(name))
    assert find_images([str(tmp_path / "**" / "*.png")]) == [
        tmp_path / "[x].png",
        tmp_path / "b/2.png",
        tmp_path / "c.png",
    ]
    assert find_images([str(tmp_path / "*")]) == [
        tmp_path / "[x].png",
        tmp_path / "a/1.jpg",
        tmp_path / "b/2.png",
        tmp_path / "c.png",
    ]
    assert find_images([str(tmp_path / "*.gif")]) == [tmp_path / "*.gif"]  # matches nothing: kept, reading reports it
    assert find_images([str(tmp_path / "[x].png")]) == [tmp_path / "[x].png"]  # a file named like a pattern
    assert main(["predict", "https://example.com/cat.jpg", "--model", "eca_resnet50"]) == 2  # before any weights
    assert "https://example.com/cat.jpg is a URL" in one_line_error(capsys, "predict")


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    from eca_models.data.images import open_rgb

    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    pixels = np.asarray(open_rgb(tmp_path / "g16.png"))
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[..., 0], np.rint(ramp / 257.0).astype(np.uint8))
    assert 120 < pixels.mean() < 135  # a ramp, not a white image


def test_imagenet_val_is_read_as_stored_as_the_published_figures_were(tmp_path):
    """torchvision's ImageFolder (the authors') and timm's validate.py read val's pixels as stored, an EXIF
    orientation tag ignored. The checkpoint here ranks class 500 first for the stored image and class 3 first for
    it turned upright; the image was turned, and scored 0 where the reference loaders score 100."""
    path = tmp_path / "val" / imagenet_wnids()[500] / "ILSVRC2012_val_00000001.JPEG"
    path.parent.mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    Image.open(write_image(tmp_path / "src.png", seed=3, size=48)).crop((0, 0, 48, 30)).save(path, exif=exif.tobytes())
    model = timm.create_model("eca_resnet18_k3577").eval()
    transform = create_transform(**resolve_data_config({"input_size": (3, 64, 64)}, model=model))
    with Image.open(path) as stored, torch.no_grad():
        images = (stored.convert("RGB"), ImageOps.exif_transpose(stored).convert("RGB"))
        stored_f, turned_f = (model.forward_head(model.forward_features(transform(i)[None]), True)[0] for i in images)
    state = model.state_dict()
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])
    state["fc.weight"][500] = stored_f - turned_f  # class 500 beats class 3 nearer the stored image's features
    state["fc.bias"] = torch.full_like(state["fc.bias"], -1e4)
    state["fc.bias"][[3, 500]] = torch.tensor([0.0, -float((stored_f - turned_f) @ (stored_f + turned_f) / 2)])
    ckpt = save_authors_checkpoint(state, tmp_path / "eca_resnet18_k3577.pth.tar", "eca_resnet18")
    run = eca_models.validate("eca_resnet18_k3577", tmp_path / "val", checkpoint=str(ckpt), workers=0, img_size=64)
    assert run.validations[0].row["top1"] == 100.0


def test_predict_classifies_in_batches_read_by_loading_processes(tmp_path, capsys):
    """A folder is classified a batch at a time, its images read by data loading processes (it was one image a
    forward pass, read in the main process); each image's classes are those it gets alone, in the images' order."""
    images = [write_image(tmp_path / f"{i:02d}.png", seed=i) for i in range(9)]
    (tmp_path / "04.png").write_bytes(b"not a png")
    model = timm.create_model("eca_resnet18_k3577", num_classes=10, pretrained_cfg_overlay={"input_size": (3, 64, 64)})
    calls = []
    model.eval().register_forward_hook(lambda module, args, out: calls.append(len(args[0])))
    found = classify_images(model, images, 3, "cpu", batch_size=4)
    assert calls == [4, 3, 1] and found.unreadable == 1
    assert f"cannot read {images[4]}: " in capsys.readouterr().err
    alone = [classify_images(model, [path], 3, "cpu").results for path in images]
    assert [r["image"] for r in found.results] == [str(p) for p in images if p.name != "04.png"]
    for result, [single] in zip(found.results, [a for a in alone if a]):
        assert [t["index"] for t in result["top"]] == [t["index"] for t in single["top"]]
        assert [t["prob"] for t in result["top"]] == pytest.approx([t["prob"] for t in single["top"]], abs=2e-4)
