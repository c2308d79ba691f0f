"""What a new user hit on real data, each case pinned: no verdict on nothing, one line for bad input, no lost work.

The numbered comments follow the hardening issue's items.
"""

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from helpers import ranking_checkpoint, save_authors_checkpoint, write_image
from PIL import Image

from eca_models.cli import main
from eca_models.conversion.imagenet import convert_checkpoint
from eca_models.data.imagenet import imagenet_wnids
from eca_models.evaluation import verdict

RANKED = [500, 3, 250, 42, 900]
FAST = ["--workers", "0", "--batch-size", "4", "--img-size", "64"]


def bomb_png(path: Path, side: int = 14000) -> Path:
    """A PNG whose header says ``side`` x ``side`` pixels: PIL refuses it on opening, before decoding anything."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    return path


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"eca-models {command}: error:") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    return err


@pytest.fixture(scope="module")
def val(tmp_path_factory):
    """An ImageNet-style val folder (8 images of classes 500, 250, 900) and a checkpoint ranking 500 first."""
    root = tmp_path_factory.mktemp("val")
    wnids = imagenet_wnids()
    n = 0
    for cls, count in {500: 5, 250: 2, 900: 1}.items():
        for _ in range(count):
            n += 1
            write_image(root / "folders" / wnids[cls] / f"ILSVRC2012_val_{n:08d}.JPEG", seed=n)
    ckpt = ranking_checkpoint(root / "eca_resnet18_k3577.pth.tar", RANKED)
    model10 = timm.create_model("eca_resnet18_k3577", num_classes=10)
    r10 = save_authors_checkpoint(model10.state_dict(), root / "r18_10cls.pth.tar")
    return dict(root=root, folder=root / "folders", ckpt=ckpt, r10=r10, model10=model10.eval())


@pytest.fixture(scope="module")
def two_class_run(tmp_path_factory):
    """A 2-class fine-tuned run folder at 32 px (tiny, from scratch) and its data."""
    root = tmp_path_factory.mktemp("pets")
    for split, count in (("train", 8), ("val", 3)):
        for c, name in enumerate(("cat", "dog")):
            for i in range(count):
                write_image(root / "data" / split / name / f"{i}.png", seed=100 * c + i + (50 if split == "val" else 0))

    def argv(run_dir):
        return ["finetune", "--model", "eca_resnet18", "--data", str(root / "data"), "--output", str(run_dir),
                "--epochs", "1", "--img-size", "32", "--batch-size", "4", "--workers", "0", "--no-pretrained"]  # fmt: skip

    assert main(argv(root / "run")) == 0
    return dict(data=root / "data", run=root / "run", argv=argv)


# 1. verdicts only on something


def test_counts_below_one_are_usage_errors(val, capsys):
    for flag in ("--limit", "--img-size", "--batch-size"):
        for value in ("0", "-5"):
            argv = ["validate", "--model", "eca_resnet18_k3577", "--data", str(val["folder"]), flag, value]
            with pytest.raises(SystemExit) as exit_:
                main(argv)
            assert exit_.value.code == 2
            assert "at least 1" in capsys.readouterr().err


def test_no_image_scored_gives_no_verdict(val, tmp_path, capsys):
    bad = tmp_path / "unreadable" / imagenet_wnids()[500]
    bad.mkdir(parents=True)
    for i in range(3):
        (bad / f"{i}.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    results = tmp_path / "r.json"
    argv = ["validate", "--model", "eca_resnet18_k3577", "--checkpoint", str(val["ckpt"]), "--data", str(bad.parent)]
    assert main([*argv, *FAST, "--results-file", str(results)]) == 2
    out = capsys.readouterr().out
    assert "verdict   NOT SCORED" in out and "PASS" not in out and "FAIL" not in out and "nan" not in out
    row = json.loads(results.read_text())[0]  # strict JSON: no NaN
    assert row["images"] == 0 and row["top1"] is None and row["verdict"] == "NOT SCORED"


def test_verdicts_need_images_that_could_fail():
    reported = {"acc@1": 77.42, "acc@5": 93.62}
    assert verdict({"acc@1": 0.0, "acc@5": 0.0}, reported, 0)[0] == "NOT SCORED"
    assert verdict({"acc@1": 0.0, "acc@5": 0.0}, None, 0)[0] == "NOT SCORED"
    # one image: its Top-1 interval holds 77.42 whether it is right or wrong, so no result could FAIL it
    assert verdict({"acc@1": 0.0, "acc@5": 0.0}, reported, 1)[0] == "MEASURED"
    assert verdict({"acc@1": 100.0, "acc@5": 100.0}, reported, 1)[0] == "MEASURED"
    assert verdict({"acc@1": 0.0, "acc@5": 0.0}, reported, 8)[0] == "FAIL"
    assert verdict({"acc@1": 75.0, "acc@5": 100.0}, reported, 8)[0] == "PASS"


def test_detector_with_every_image_unreadable_gives_no_verdict(converted, tmp_path, capsys):
    from detection_helpers import write_coco_dataset

    write_coco_dataset(tmp_path, "val2017", n_images=2, size=(96, 64))
    for image in (tmp_path / "val2017").glob("*.jpg"):
        image.write_bytes(b"not a jpeg")
    folder = converted["fasterrcnn"][2]
    argv = ["validate", "--model", str(folder), "--data", str(tmp_path), "--min-size", "64", "--max-size", "96"]
    assert main([*argv, "--workers", "0"]) == 2
    out = capsys.readouterr().out
    assert "verdict   NOT SCORED" in out and "images    0 scored, 2 unreadable" in out


# 2. a checkpoint of another shape


def test_a_checkpoint_of_another_class_count_is_one_line_naming_the_flag(val, tmp_path, capsys):
    image = write_image(tmp_path / "a.png", seed=3, size=64)
    safetensors_file = tmp_path / "r18_10cls.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in val["model10"].state_dict().items()}, str(safetensors_file))
    for weights in (val["r10"], safetensors_file):
        assert main(["predict", str(image), "--model", "eca_resnet18_k3577", "--checkpoint", str(weights)]) == 2
        err = one_line_error(capsys, "predict")
        assert weights.name in err and "10 classes" in err and "--num-classes 10" in err
    for argv in (
        ["validate", "--data", str(val["folder"]), *FAST],
        ["export", "--format", "torchscript", "--out", str(tmp_path / "m.pt")],
        ["attention", "--data", str(val["folder"]), "--out", str(tmp_path / "a.png")],
    ):
        assert main([argv[0], "--model", "eca_resnet18_k3577", "--checkpoint", str(val["r10"]), *argv[1:]]) == 2
        assert "--num-classes 10" in one_line_error(capsys, argv[0])
    # with the count it loads as it is: the file's own classifier, not a new one
    argv = ["predict", str(image), "--model", "eca_resnet18_k3577", "--checkpoint", str(val["r10"])]
    assert main([*argv, "--num-classes", "10", "--json", "--top-k", "10"]) == 0
    probs = {t["index"]: t["prob"] for t in json.loads(capsys.readouterr().out)[0]["top"]}
    from eca_models.data.images import open_rgb

    transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=val["model10"]))
    with torch.no_grad():
        expected = val["model10"](transform(open_rgb(image))[None]).softmax(1)[0]
    assert all(abs(probs[i] - float(expected[i])) < 1e-3 for i in range(10))


def test_a_converted_folder_with_weights_of_another_shape(val, tmp_path, capsys):
    folder = tmp_path / "conv"
    convert_checkpoint(val["ckpt"], "eca_resnet18_k3577", folder, log=lambda _: None, check_size=64)
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in val["model10"].state_dict().items()}
    save_file(state, str(folder / "model.safetensors"))  # config.json still says 1000 classes
    assert main(["predict", str(write_image(tmp_path / "a.png", 1)), "--model", str(folder)]) == 2
    assert "10 classes" in one_line_error(capsys, "predict")


# 3. a detector folder where a classifier is expected


def test_a_detector_folder_where_a_classifier_goes_is_named_as_one(converted, two_class_run, tmp_path, capsys):
    from detection_helpers import write_coco_dataset

    for split in ("train2017", "val2017"):
        write_coco_dataset(tmp_path / "coco", split, n_images=2, size=(96, 64))
    detector = str(converted["fasterrcnn"][2])
    image = str(write_image(tmp_path / "a.png", 1))
    for argv in (
        ["export", "--model", detector, "--format", "onnx", "--out", str(tmp_path / "d.onnx")],
        ["predict", image, "--model", "eca_resnet50_k3557", "--checkpoint", detector],
        ["finetune", "--model", "eca_resnet50", "--checkpoint", detector, "--data", str(two_class_run["data"])]
        + ["--output", str(tmp_path / "run"), "--batch-size", "2"],
        ["finetune", "--model", "fasterrcnn_eca_resnet50_fpn", "--weights-backbone", str(converted["maskrcnn"][2])]
        + ["--data", str(tmp_path / "coco"), "--output", str(tmp_path / "run2"), "--batch-size", "1"],
    ):
        assert main(argv) == 2, argv
        err = one_line_error(capsys, argv[0])
        assert "detector" in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "run2").exists()


# 4. --device cuda without a GPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_one_line_before_any_model(tmp_path, capsys):
    for argv in (
        ["predict", "x.jpg", "--model", "eca_resnet9"],
        ["validate", "--model", "eca_resnet9", "--data", str(tmp_path)],
        ["attention", "--model", "eca_resnet9", "--data", str(tmp_path), "--out", str(tmp_path / "a.png")],
        ["finetune", "--model", "eca_resnet9", "--data", str(tmp_path), "--output", str(tmp_path / "r")],
        ["benchmark", "--backbone", "resnet18"],
    ):
        assert main([*argv, "--device", "cuda"]) == 2
        assert "no CUDA device" in one_line_error(capsys, argv[0])  # not 'unknown model': checked first
    assert main(["predict", "x.jpg", "--model", "eca_resnet9", "--device", "tpu7"]) == 2
    assert "--device" in one_line_error(capsys, "predict")


# 5. a decompression bomb among good images


def test_a_decompression_bomb_is_an_unreadable_image(val, tmp_path, capsys):
    folder = tmp_path / "imgs"
    good = [write_image(folder / f"{i}.png", seed=i, size=64) for i in range(2)]
    bomb = bomb_png(folder / "bomb.png")
    argv = ["predict", str(good[0]), str(bomb), str(good[1]), "--model", "eca_resnet18_k3577"]
    assert main([*argv, "--checkpoint", str(val["ckpt"]), "--top-k", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out.count("\n") == 2 and "0.png" in captured.out and "1.png" in captured.out
    assert f"cannot read {bomb}" in captured.err and "decompression bomb" in captured.err
    data = tmp_path / "val"
    (data / imagenet_wnids()[500]).mkdir(parents=True)
    for i, path in enumerate(good):
        (data / imagenet_wnids()[500] / f"{i}.png").write_bytes(path.read_bytes())
    bomb_png(data / imagenet_wnids()[500] / "bomb.png")
    argv = ["validate", "--model", "eca_resnet18_k3577", "--checkpoint", str(val["ckpt"]), "--data", str(data)]
    assert main([*argv, *FAST]) == 0
    assert "2 scored, 1 unreadable" in capsys.readouterr().out


# 6. attention


def test_attention_says_in_one_line_what_it_cannot_do(val, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    out = str(tmp_path / "a.png")
    base = ["attention", "--data", str(val["folder"]), "--out", out, "--img-size", "64"]
    ours = ["--model", "eca_resnet18_k3577", "--checkpoint", str(val["ckpt"])]
    start = time.perf_counter()
    assert main([*base, *ours, "--compare", "seresnet18"]) == 2
    assert "no pretrained weights" in one_line_error(capsys, "attention")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main([*base, *ours, "--compare", "seresnet50"]) == 2
    assert "HF_HUB_OFFLINE" in one_line_error(capsys, "attention")
    assert time.perf_counter() - start < 30  # at once, not after the Hub client's retries
    plain = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18").state_dict(), plain)
    assert main([*base, "--model", "resnet18", "--checkpoint", str(plain)]) == 2
    assert "no ECA or SE blocks" in one_line_error(capsys, "attention")


def test_attention_reports_unreadable_images(val, tmp_path, capsys):
    data = tmp_path / "val"
    wnid = imagenet_wnids()[500]
    for i in range(2):
        write_image(data / wnid / f"{i}.png", seed=i)
    (data / wnid / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    argv = ["attention", "--model", "eca_resnet18_k3577", "--checkpoint", str(val["ckpt"]), "--data", str(data)]
    assert main([*argv, "--img-size", "64", "--blocks", "layer4.1", "--out", str(tmp_path / "a.png")]) == 0
    err = capsys.readouterr().err
    assert f"skipping unreadable image {data / wnid / 'broken.png'}" in err and "1 of 3 images" in err


# 7. outputs checked before the work


def test_unwritable_outputs_are_refused_before_any_model_is_loaded(val, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file, not a folder")
    target = blocker / "out"
    for argv, flag in (
        (["validate", "--model", "eca_resnet152", "--data", str(val["folder"]), "--results-file", f"{target}.json"], "--results-file"),
        (["benchmark", "--backbone", "resnet18", "--results-file", f"{target}.json"], "--results-file"),
        (["benchmark", "--backbone", "resnet18", "--plot", f"{target}.png"], "--plot"),
        (["attention", "--model", "eca_resnet152", "--data", str(val["folder"]), "--out", f"{target}.png"], "--out"),
        (["export", "--model", "eca_resnet152", "--format", "torchscript", "--out", f"{target}.pt"], "--out"),
        (["convert", str(val["ckpt"]), "--model", "eca_resnet18_k3577", "--out", str(target)], "--out"),
    ):  # fmt: skip
        start = time.perf_counter()
        assert main(argv) == 2, argv
        err = one_line_error(capsys, argv[0])
        assert flag in err and str(blocker) in err and ".tmp" not in err and "eca-tmp" not in err, err
        assert time.perf_counter() - start < 5, argv  # no model was built, no weights sought
    assert main(["convert", str(val["ckpt"]), "--model", "eca_resnet18_k3577", "--out", str(blocker)]) == 2
    assert "is a file" in one_line_error(capsys, "convert")


def test_a_failed_atomic_write_names_the_users_path(tmp_path):
    from eca_models.files import OutputPathError, write_text_atomic

    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match=str(blocker / "r.json")) as error:
        write_text_atomic(blocker / "r.json", "{}")
    assert "tmp" not in str(error.value).replace(str(tmp_path), "")


# 8. a pattern run carries on


def test_a_pattern_run_skips_what_it_cannot_load_and_writes_the_rest(val, tmp_path, capsys, monkeypatch):
    weights = tmp_path / "weights"
    convert_checkpoint(val["ckpt"], "eca_resnet18_k3577", weights / "eca_resnet18_k3577.in1k", log=lambda _: None)
    monkeypatch.setenv("ECA_MODELS_WEIGHTS_DIR", str(weights))
    results = tmp_path / "r.json"
    argv = ["validate", "--model", "eca_resnet1*", "--data", str(val["folder"]), *FAST]
    assert main([*argv, "--results-file", str(results)]) == 0
    captured = capsys.readouterr()
    rows = json.loads(results.read_text())
    assert [r["model"] for r in rows] == ["eca_resnet18", "eca_resnet18_k3577"]
    assert all(r["verdict"] == "PASS" for r in rows)
    # 14: the weights line names the folder ECA_MODELS_WEIGHTS_DIR supplied, not the Hub repo
    assert rows[0]["checkpoint"] == str(weights / "eca_resnet18_k3577.in1k")
    skipped = [line for line in captured.err.splitlines() if line.startswith("eca-models validate: skipping")]
    assert len(skipped) == 4 and all("not published" in line for line in skipped)
    assert "validated 2 of 6 models" in captured.out
    monkeypatch.delenv("ECA_MODELS_WEIGHTS_DIR")
    assert main(argv) == 2  # nothing could be loaded
    assert "none of the 6 models could be loaded" in capsys.readouterr().err


# 9. say what the bytes are


@pytest.mark.parametrize(
    "content, said",
    [
        (b"", "is empty (0 bytes)"),
        (bytes(range(256)) * 8, "neither a PyTorch nor a safetensors file"),
        (b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>", "an HTML page"),
    ],
)
def test_a_file_that_is_no_checkpoint_is_named_for_what_it_is(content, said, tmp_path, capsys):
    src = tmp_path / "eca_resnet18_k3577.pth.tar"
    src.write_bytes(content)
    assert main(["convert", str(src), "--model", "eca_resnet18_k3577", "--out", str(tmp_path / "o")]) == 2
    err = one_line_error(capsys, "convert")
    assert said in err and "safetensors file (truncated" not in err and ".safetensors file" in err
    assert not (tmp_path / "o").exists()


def test_a_broken_config_json_is_named_with_its_line(val, tmp_path, capsys):
    folder = tmp_path / "conv"
    convert_checkpoint(val["ckpt"], "eca_resnet18_k3577", folder, log=lambda _: None, check_size=64)
    (folder / "config.json").write_text('{\n  "architecture": "eca_resnet18",\n  "num_classes": 1000,,\n}\n')
    assert main(["predict", str(write_image(tmp_path / "a.png", 1)), "--model", str(folder)]) == 2
    err = one_line_error(capsys, "predict")
    assert str(folder / "config.json") in err and "line 3" in err


# 10. interrupted writes leave nothing


def _kill_when_temporary_appears(cmd, folder: Path, timeout: float = 120) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(".eca-tmp." in p.name for p in folder.iterdir()):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
            time.sleep(0.005)
        raise AssertionError(f"no temporary file appeared in {folder} (exit {proc.poll()})")
    finally:
        if proc.poll() is None:
            proc.kill()


def test_kill_9_during_convert_and_export_leaves_nothing_a_later_run_keeps(val, tmp_path):
    cli = [sys.executable, "-m", "eca_models.cli"]
    out = tmp_path / "out"
    out.mkdir()
    convert = [*cli, "convert", str(val["ckpt"]), "--model", "eca_resnet18_k3577", "--check-size", "448"]
    _kill_when_temporary_appears([*convert, "--out", str(out / "first")], out)
    assert any(".eca-tmp." in p.name for p in out.iterdir()) and not (out / "first").exists()
    convert_checkpoint(val["ckpt"], "eca_resnet18_k3577", out / "second", log=lambda _: None, check_size=64)
    assert sorted(p.name for p in out.iterdir()) == ["second"]  # the killed run's folder is gone

    export = [*cli, "export", "--model", "eca_resnet18_k3577", "--checkpoint", str(val["ckpt"]), "--format"]
    _kill_when_temporary_appears([*export, "torchscript", "--out", str(out / "m.pt"), "--img-size", "320"], out)
    assert any(".eca-tmp." in p.name for p in out.iterdir())
    assert main(["export", *export[4:], "torchscript", "--out", str(out / "m.pt"), "--img-size", "64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["m.pt", "second"]


def test_a_live_or_foreign_temporary_is_left_alone(tmp_path):
    from eca_models.files import _host, remove_stale_temporaries

    live = tmp_path / f".x.eca-tmp.{_host()}.{os.getppid()}.abc"
    foreign = tmp_path / ".x.eca-tmp.another-host.1.abc"
    live.mkdir()
    foreign.mkdir()
    assert remove_stale_temporaries(tmp_path, again=True) == 0 and live.exists() and foreign.exists()


# 11. resume always means resume


def test_resume_of_a_run_stopped_before_its_first_checkpoint_starts_it_again(two_class_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    argv = two_class_run["argv"](run_dir)
    saved = json.loads((two_class_run["run"] / "args.json").read_text())
    (run_dir / "args.json").write_text(json.dumps({**saved, "output": str(run_dir)}))  # killed before last.pth
    assert main(argv) == 2  # a plain rerun still refuses a used folder
    capsys.readouterr()
    assert main([*argv, "--resume"]) == 0
    assert "starting it from the beginning" in capsys.readouterr().out
    assert (run_dir / "last.pth").is_file() and (run_dir / "model.safetensors").is_file()
    assert main([*argv, "--resume", "--lr", "0.5"]) == 2  # its arguments are still the run's
    empty = tmp_path / "never-ran"
    empty.mkdir()
    assert main([*two_class_run["argv"](empty), "--resume"]) == 2
    assert "holds no run" in capsys.readouterr().err


class _Augmented(torch.utils.data.Dataset):
    """Items drawn from every generator an augmentation may use."""

    def __len__(self):
        return 24

    def __getitem__(self, index):
        import random

        return torch.tensor([index, random.random(), float(np.random.rand()), float(torch.rand(()))])


@pytest.mark.parametrize("workers", [0, 2])
def test_a_resumed_epoch_draws_what_the_uninterrupted_one_did(workers):
    from eca_models.training.sampler import epoch_loader

    def batches(step):
        loader = epoch_loader(_Augmented(), 4, seed=3, epoch=1, step=step, rank=0, world_size=1, workers=workers)
        return [b for b in loader]

    straight, resumed = batches(0), batches(2)
    assert len(resumed) == len(straight) - 2
    for a, b in zip(straight[2:], resumed):
        assert torch.equal(a, b)
    state = torch.random.get_rng_state()
    batches(1)
    assert torch.equal(state, torch.random.get_rng_state())  # the main process's draws are its own


# 12. publish only what a Hub repo holds


def test_publish_of_a_run_folder_uploads_only_the_model_files(two_class_run, capsys):
    assert main(["publish", str(two_class_run["run"]), "--repo", "me/pets", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "model.safetensors" in out and "config.json" in out and "README.md" in out
    assert "last.pth" not in out and "args.json" not in out and "metrics.jsonl" not in out


# 13. no empty --out-dir


def test_detector_predict_with_only_unreadable_images_makes_no_folder(converted, tmp_path, capsys):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    out_dir = tmp_path / "drawn"
    argv = ["predict", str(broken), "--model", str(converted["fasterrcnn"][2]), "--out-dir", str(out_dir)]
    assert main([*argv, "--min-size", "64", "--max-size", "96"]) == 2
    assert not out_dir.exists() and "drawn" not in capsys.readouterr().err


# 14. small inconsistencies


def test_out_of_range_flags_are_usage_errors(capsys):
    for argv in (
        ["predict", "x.jpg", "--model", "eca_resnet18", "--top-k", "0"],
        ["predict", "x.jpg", "--model", "eca_resnet18", "--min-size", "0"],
        ["predict", "x.jpg", "--model", "eca_resnet18", "--score-thr", "2"],
        ["validate", "--model", "eca_resnet18", "--data", "x", "--max-size", "0"],
        ["finetune", "--model", "eca_resnet18", "--data", "x", "--output", "y", "--min-size", "0"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
        capsys.readouterr()
    assert main(["list", "nomatch*"]) == 2
    assert "no model matches" in one_line_error(capsys, "list")
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and "eca-models 0." in capsys.readouterr().out


def test_a_two_class_run_shows_no_top5_and_its_own_size(two_class_run, capsys):
    argv = ["validate", "--model", str(two_class_run["run"]), "--data", str(two_class_run["data"] / "val")]
    assert main([*argv, "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "Top-1" in out and "Top-5" not in out and "e9 at 32 (flop_counter)" in out and "e9 at 224" not in out
    assert "Top-5" not in (two_class_run["run"] / "README.md").read_text()


def test_interrupted_is_said_on_a_line_of_its_own(monkeypatch, capsys):
    from tqdm import tqdm

    from eca_models.cli import list_models

    def interrupted(_args):
        bar = tqdm(total=10, desc="working")
        bar.update(3)
        raise KeyboardInterrupt

    monkeypatch.setattr(list_models, "run", interrupted)
    assert main(["list"]) == 130
    err = capsys.readouterr().err
    assert any(line.startswith("eca-models list: interrupted") for line in err.replace("\r", "\n").splitlines())


def test_a_finetune_that_fails_its_data_checks_leaves_no_folder(tmp_path, capsys):
    argv = ["finetune", "--model", "eca_resnet18", "--data", str(tmp_path / "missing"), "--no-pretrained"]
    assert main([*argv, "--output", str(tmp_path / "runs" / "a" / "first")]) == 2
    assert not (tmp_path / "runs").exists()


# 15. what a timm / torchvision user expects


def test_predict_takes_folders_recursively_sorted(val, tmp_path, capsys):
    for name in ("b/2.png", "a/1.jpg", "c.png", ".hidden/x.png", "notes.txt"):
        path = tmp_path / "imgs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, seed=len(name)) if name.endswith(("png", "jpg")) else path.write_text("x")
    argv = ["predict", str(tmp_path / "imgs"), "--model", "eca_resnet18_k3577", "--checkpoint", str(val["ckpt"])]
    assert main([*argv, "--json", "--top-k", "1"]) == 0
    shown = [Path(r["image"]).relative_to(tmp_path / "imgs").as_posix() for r in json.loads(capsys.readouterr().out)]
    assert shown == ["a/1.jpg", "b/2.png", "c.png"]


def test_detector_lines_show_the_top_boxes_and_json_all(converted, tmp_path, capsys):
    from eca_models.prediction import detection_line

    result = {
        "image": "x.jpg",
        "detections": [{"label": "car", "score": s / 10, "box": [0, 0, 1, 1]} for s in range(9)],
    }
    line = detection_line(result, 3)
    assert line.startswith("x.jpg: 9 detections: car 0.80") and line.count("car") == 3 and "+6 more" in line


def test_three_column_imagenet_labels(val, tmp_path):
    from eca_models.data.imagenet import imagenet_samples
    from eca_models.errors import DataError

    wnids = imagenet_wnids()
    flat = tmp_path / "flat"
    write_image(flat / "ILSVRC2012_val_00000347.JPEG", seed=1)
    write_image(flat / "ILSVRC2012_val_00000001.JPEG", seed=2)
    labels = tmp_path / "val.txt"
    labels.write_text(f"ILSVRC2012_val_00000347.JPEG n02951358 472\nILSVRC2012_val_00000001.JPEG {wnids[65]}\n")
    assert sorted(label for _, label in imagenet_samples(flat, labels)) == [65, 472]
    labels.write_text("ILSVRC2012_val_00000347.JPEG n02951358 473\n")
    with pytest.raises(DataError, match="val.txt:1: n02951358 is class 472"):
        imagenet_samples(flat, labels)


def test_16_bit_grayscale_is_scaled_not_clipped(tmp_path):
    from eca_models.data.images import open_rgb

    ramp = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    pixels = np.asarray(open_rgb(tmp_path / "g16.png"))
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[..., 0], np.rint(ramp / 257.0).astype(np.uint8))
    assert 120 < pixels.mean() < 135  # a ramp, not a white image


def test_help_texts_have_no_markup(capsys):
    from eca_models.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert "``" not in text and ":mod:" not in text and ":func:" not in text, name
        if name == "finetune":
            assert "COCO" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "COCO" in capsys.readouterr().out
