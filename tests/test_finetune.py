"""eca-models finetune and predict on real images: scikit-learn's handwritten digits."""

import json

import numpy as np
import pytest
import timm
import torch
from conftest import run_python
from helpers import fault_at, ranking_checkpoint, write_image
from PIL import Image

import eca_models
from eca_models.cli import main
from eca_models.errors import UsageError

FAST = ["--img-size", "32", "--batch-size", "64", "--workers", "0", "--opt", "adamw", "--lr", "0.003"]
FAST += ["--weight-decay", "0.01", "--scale", "0.6", "1.0", "--hflip", "0", "--no-pretrained"]
FAST_OPTIONS = dict(img_size=32, batch_size=64, workers=0, opt="adamw", lr=0.003, weight_decay=0.01, scale=(0.6, 1.0))
FAST_OPTIONS.update(hflip=0.0, no_pretrained=True)


def _write_digits(root, every=1):
    """The 1,797 8x8 digits of scikit-learn as class folders: every 5th image to val/."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i, (image, label) in enumerate(zip(digits.images, digits.target)):
        if i % every:
            continue
        folder = root / ("val" if i % 5 == 0 else "train") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((image * 255 / 16).astype(np.uint8)).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = _write_digits(tmp_path_factory.mktemp("digits"))
    (root / "train" / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (root / "train" / "3" / "README.txt").write_text("not an image: ignored")
    (root / "val" / "4" / "broken-val.png").write_bytes(b"\x89PNG\r\n\x1a\n not really either")
    return root


@pytest.fixture(scope="module")
def small_digits(tmp_path_factory):
    return _write_digits(tmp_path_factory.mktemp("small"), every=8)


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "digits-r18"
    result = eca_models.finetune("eca_resnet18", digits, output=run_dir, epochs=2, **FAST_OPTIONS)  # FAST, in Python
    assert result.run_dir == run_dir and [h["epoch"] for h in result.history] == [1, 2]
    return run_dir


def test_from_scratch_run_learns_the_digits(trained):
    history = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[-1]["val_top1"] > 50, history  # chance is 10%
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    for name in ("model.safetensors", "config.json", "README.md", "curves.png", "last.pth", "args.json"):
        assert (trained / name).is_file(), name
    assert (trained / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    skipped = (trained / "skipped_images.txt").read_text()
    assert "broken.png" in skipped and "broken-val.png" in skipped  # unreadable train and val images, both listed
    modes = {p.name: p.stat().st_mode & 0o777 for p in trained.iterdir() if p.name != "last.pth"}
    assert set(modes.values()) == {0o644}, modes  # the exported model.safetensors too (umask 022)
    config = json.loads((trained / "config.json").read_text())
    assert config["architecture"] == "eca_resnet18" and config["num_classes"] == 10
    assert config["label_names"] == [str(i) for i in range(10)] and config["model_args"]["kernel_sizes"] == "k3577"
    card = (trained / "README.md").read_text()
    assert (
        "library_name: timm" in card and "measured" in card and f"{max(h['val_top1'] for h in history):.2f}"[:4] in card
    )


def test_result_loads_everywhere(trained, digits, tmp_path, capsys):
    model = eca_models.load(trained)
    assert model.num_classes == 10 and model.pretrained_cfg["label_names"][3] == "3"
    same = timm.create_model(
        "eca_resnet18", num_classes=10, pretrained=True, pretrained_cfg_overlay=dict(file=str(trained))
    )
    for a, b in zip(model.state_dict().values(), same.state_dict().values()):
        assert torch.equal(a, b)
    # validate takes the run as a checkpoint: no reported numbers, so simply measured
    results = tmp_path / "r.json"
    args = ["--data", str(digits / "val"), "--workers", "0", "--results-file", str(results)]
    assert main(["validate", "--model", "eca_resnet18", "--checkpoint", str(trained), *args]) == 0
    row = json.loads(results.read_text())[0]
    history = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert row["verdict"] == "MEASURED" and row["images"] == 360
    assert row["top1"] == pytest.approx(max(h["val_top1"] for h in history), abs=1e-3)
    assert main(["validate", "--model", str(trained), *args]) == 0  # the run folder itself as --model
    assert json.loads(results.read_text())[0]["images"] == 360
    # publish takes it
    assert main(["publish", str(trained), "--repo", "me/digits", "--dry-run"]) == 0
    assert "no manifest entry" in capsys.readouterr().out
    # predict prints the run's class names, one line per image, or JSON
    images = sorted((digits / "val" / "7").iterdir())[:2]
    assert main(["predict", "--model", str(trained), *map(str, images), "--top-k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(images[0].name + ": ") and "%" in lines[0]
    assert main(["predict", "--model", str(trained), str(images[0]), "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"]
    assert len(top) == 5 and {t["class"] for t in top} <= {str(i) for i in range(10)}


def test_predict_with_imagenet_names(tmp_path, capsys):

    ckpt = ranking_checkpoint(tmp_path / "r.pth.tar", [1, 2, 3, 4, 5])
    image = write_image(tmp_path / "x.jpg", 0)
    assert (
        main(["predict", "--model", "eca_resnet18_k3577", "--checkpoint", str(ckpt), str(image), "--top-k", "2"]) == 0
    )
    assert capsys.readouterr().out.startswith("x.jpg: goldfish ")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    args = ["predict", "--model", "eca_resnet18_k3577", "--checkpoint", str(ckpt), str(broken), str(image)]
    assert main(args) == 2  # bad input, as in every command; the readable image is still reported
    captured = capsys.readouterr()
    assert captured.out.startswith("x.jpg: goldfish ") and "cannot read" in captured.err


def _small_run(data, run_dir, epochs):
    """finetune arguments for a quick from-scratch run on the small digits set."""
    return [
        "--model",
        "eca_resnet18",
        "--data",
        str(data),
        "--output",
        str(run_dir),
        "--epochs",
        str(epochs),
        *FAST,
        "--batch-size",
        "16",
    ]


@pytest.mark.slow
def test_a_run_that_dies_mid_epoch_resumes_to_an_uninterrupted_runs_weights(small_digits, tmp_path, monkeypatch):
    """Dying mid-way through epoch 2 (an error there: what is on disk is what a kill would leave, the last
    snapshot), then resuming, gives the weights and history of the run that was never stopped."""
    args = ["--data", str(small_digits), "--epochs", "2", "--save-every-steps", "1", *FAST, "--batch-size", "16"]
    assert main(["finetune", "--model", "eca_resnet18", "--output", str(tmp_path / "straight"), *args]) == 0
    per_epoch = len(list((small_digits / "train").rglob("*.png"))) // 16  # full batches only
    run = ["finetune", "--model", "eca_resnet18", "--output", str(tmp_path / "died"), *args]
    with monkeypatch.context() as patch:
        fault_at(patch, per_epoch + 4, RuntimeError("the process dies here"))
        with pytest.raises(RuntimeError, match="the process dies here"):
            eca_models.finetune("eca_resnet18", small_digits, output=tmp_path / "died", epochs=2,
                                save_every_steps=1, **{**FAST_OPTIONS, "batch_size": 16})  # fmt: skip
    died_at = torch.load(tmp_path / "died" / "last.pth", weights_only=True)
    assert (died_at["epoch"], died_at["step"]) == (1, 3)
    assert main(run) == 2  # an existing run is never overwritten without --resume or --overwrite
    assert main([*run, "--resume"]) == 0
    straight = torch.load(tmp_path / "straight" / "last.pth", weights_only=True)
    resumed = torch.load(tmp_path / "died" / "last.pth", weights_only=True)
    for key, value in straight["model"].items():
        assert torch.equal(value, resumed["model"][key]), f"{key} differs after resume"
    assert straight["history"] == resumed["history"]


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues(small_digits, tmp_path, monkeypatch, capsys):
    """Ctrl-C mid-way through an epoch saves the position it reached (between snapshots), says how to go on and
    exits 130; the same command with --resume finishes the run."""
    args = _small_run(small_digits, tmp_path / "interrupted", epochs=2)
    with monkeypatch.context() as patch:
        fault_at(patch, 3, KeyboardInterrupt())
        assert main(["finetune", *args, "--save-every-steps", "100"]) == 130
    assert "continue it with the same options and resume=True" in capsys.readouterr().err
    state = torch.load(tmp_path / "interrupted" / "last.pth", weights_only=True)
    assert (state["epoch"], state["step"]) == (0, 2)  # the two steps done, though no snapshot was due
    assert main(["finetune", *args, "--save-every-steps", "100", "--resume"]) == 0
    assert json.loads((tmp_path / "interrupted" / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 2


@pytest.mark.slow
def test_two_processes_under_torchrun(small_digits, tmp_path):
    run_dir = tmp_path / "ddp"
    torchrun = ["--standalone", "--nproc-per-node", "2", "-m", "eca_models.cli", "finetune"]
    torchrun += [*_small_run(small_digits, run_dir, epochs=1), "--amp"]  # bfloat16 autocast on the CPU
    result = run_python(
        f"import sys; from torch.distributed.run import main; sys.exit(main({torchrun!r}))",
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("epoch 1: train loss") == 1, "only rank 0 reports"
    [row] = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert row["val_top1"] >= 0 and (run_dir / "model.safetensors").is_file()
    assert eca_models.load(run_dir).num_classes == 10


def test_freeze_backbone_trains_the_head_only_and_mixup_runs(small_digits, tmp_path):
    run_dir = tmp_path / "frozen"
    args = ["finetune", *_small_run(small_digits, run_dir, epochs=1), "--freeze-backbone"]
    assert main([*args, "--mixup", "0.2", "--cutmix", "0.2", "--smoothing", "0.1"]) == 0
    torch.manual_seed(0)  # the run seeds the same way before building its model
    initial = timm.create_model("eca_resnet18").state_dict()
    trained = torch.load(run_dir / "last.pth", weights_only=True)["model"]
    changed = {k for k, v in trained.items() if not torch.equal(v, initial[k])}
    assert changed == {"fc.weight", "fc.bias"}, changed


def _cli_error(*args):
    return main(["finetune", "--model", "eca_resnet18", *args, "--epochs", "1", *FAST])


def test_a_class_holds_the_images_of_its_sub_folders(tmp_path):
    """As torchvision's ImageFolder reads a class folder: train/cat/2024/x.png is a cat (it was left out)."""
    from eca_models.data.folders import find_class_folders

    for path in ("train/cat/a.png", "train/cat/2024/b.png", "train/cat/.cache/c.png", "train/dog/d.png"):
        write_image(tmp_path / path, 0)
    for path in ("val/cat/e.png", "val/dog/2024/f.png"):
        write_image(tmp_path / path, 0)
    found = find_class_folders(tmp_path)
    assert [(p.relative_to(tmp_path).as_posix(), c) for p, c in found.train + found.val] == [
        ("train/cat/2024/b.png", 0), ("train/cat/a.png", 0), ("train/dog/d.png", 1), ("val/cat/e.png", 0),
        ("val/dog/2024/f.png", 1),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda r: None, "does not exist"),
        (lambda r: r.parent.mkdir(parents=True, exist_ok=True) or r.write_text("x"), "is a file, not a folder"),
        (
            lambda r: write_image(r / "train" / "a" / "1.png", 0) and write_image(r / "val" / "a" / "1.png", 0),
            "at least two",
        ),
        (
            lambda r: (
                [write_image(r / s / c / "1.png", 0) for s in ("train", "val") for c in "ab"]
                and (r / "train" / "c").mkdir()
            ),
            "holds no images",
        ),
        (
            lambda r: [
                write_image(r / s / c / "1.png", 0)
                for s, c in (("train", "a"), ("train", "b"), ("val", "a"), ("val", "z"))
            ],
            "val classes differ from train (only in train: b; only in val: z): give every class a folder in both",
        ),
        (lambda r: [write_image(r / c / "1.png", 0) for c in "ab"], "no train/ and val/"),
    ],
)
def test_bad_data_gets_one_line(tmp_path, capsys, make, expected):
    data = tmp_path / "data"
    make(data)
    assert _cli_error("--data", str(data), "--output", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists(), "a failed start left its run folder behind"


def test_resume_with_other_arguments_is_refused_and_args_json_stays_true(small_digits, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["finetune", *_small_run(small_digits, run_dir, epochs=1), "--workers", "0"]) == 0
    saved = (run_dir / "args.json").read_text()
    resume = ["finetune", *_small_run(small_digits, run_dir, epochs=2), "--resume"]
    capsys.readouterr()
    assert main([*resume, "--img-size", "40"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--resume with other arguments than the run's" in err and len(err.splitlines()) == 1
    assert "--epochs 1 -> 2" in err and "--img-size" in err
    assert (run_dir / "args.json").read_text() == saved
    assert json.loads(saved)["epochs"] == 1


def test_pretrained_default_says_what_to_do_when_weights_are_unpublished(digits, tmp_path, capsys):
    code = main(["finetune", "--model", "eca_resnet50", "--data", str(digits), "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "no pretrained weights for eca_resnet50 here" in err and "--no-pretrained" in err


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


def test_a_finetune_that_fails_its_data_checks_leaves_no_folder(tmp_path, capsys):
    argv = ["finetune", "--model", "eca_resnet18", "--data", str(tmp_path / "missing"), "--no-pretrained"]
    assert main([*argv, "--output", str(tmp_path / "runs" / "a" / "first")]) == 2
    assert not (tmp_path / "runs").exists()


class _Augmented(torch.utils.data.Dataset):
    """Items drawn from every generator an augmentation may use."""

    def __len__(self):
        return 24

    def __getitem__(self, index):
        import random

        return torch.tensor([index, random.random(), float(np.random.rand()), float(torch.rand(()))])


def test_a_timm_model_without_eca_is_refused_before_the_run(tmp_path, capsys):
    """A plain timm model is fine-tuned with the paper's layers put in (add_eca), or not at all, and one of the
    package's (ECA already) without them: refused before any folder, weights or epoch."""
    with pytest.raises(UsageError, match="resnet18 is not one of the package's ECA models: add_eca="):
        eca_models.finetune("resnet18", tmp_path, output=tmp_path / "run", **FAST_OPTIONS)
    assert (
        main(["finetune", "--model", "resnet18", "--data", str(tmp_path), "--output", str(tmp_path / "run"), *FAST])
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--add-eca puts the paper's layers into it" in err[0], err
    with pytest.raises(UsageError, match=r"^eca_resnet18 has ECA already: add_eca= is for other timm models"):
        eca_models.finetune("eca_resnet18", tmp_path, output=tmp_path / "run", add_eca="k3577", **FAST_OPTIONS)
    assert not (tmp_path / "run").exists()
