"""Every job as a Python function, called once each on tiny data: what it returns, and the refusals a caller can
meet without the command line (the commands themselves are tested in the other modules)."""

import json
from pathlib import Path

import pytest
from conftest import run_python
from detection_helpers import write_coco_dataset
from helpers import authors_file_for, ranking_checkpoint, write_image

import eca_models
from eca_models.benchmark import benchmark, benchmark_detector
from eca_models.data.imagenet import imagenet_wnids
from eca_models.errors import EcaModelsError, UsageError
from eca_models.evaluation.report import format_report
from eca_models.export import export
from eca_models.training.options import FinetuneOptions

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two ImageNet classes (WordNet-id folders, four images each) and a classifier that ranks them first."""
    root = tmp_path_factory.mktemp("api")
    wnids = imagenet_wnids()
    for cls in (0, 1):
        for i in range(4):
            write_image(root / "val" / wnids[cls] / f"ILSVRC2012_val_{cls * 4 + i:08d}.JPEG", seed=cls * 4 + i)
    ckpt = ranking_checkpoint(root / "eca_resnet18_k3577.pth.tar", [0, 1, 2, 3, 4])
    return dict(root=root, val=root / "val", ckpt=ckpt)


def test_the_jobs_are_top_level_names():
    assert {"finetune", "validate", "predict", "convert", "attention_figure", "download_checkpoints"} <= set(
        eca_models.__all__
    )
    assert eca_models.finetune.__module__ == "eca_models.training.finetune"
    assert eca_models.validate.__module__ == "eca_models.evaluation.validate"


@pytest.mark.slow
def test_the_readmes_module_calls_work_after_a_plain_import():
    """``eca_models.export.export(...)`` and ``eca_models.benchmark.benchmark(...)``, as the README writes them, in a
    fresh interpreter where nothing else imported those modules first."""
    code = "import eca_models; print(eca_models.export.export.__name__, eca_models.benchmark.benchmark.__name__)"
    result = run_python(code)
    assert result.returncode == 0 and result.stdout.split() == ["export", "benchmark"], result.stderr[-2000:]


def test_finetune_a_classifier(tmp_path):
    data = tmp_path / "data"
    for split, n in (("train", 4), ("val", 2)):
        for cls in ("cat", "dog"):
            for i in range(n):
                write_image(data / split / cls / f"{i}.png", seed=hash((split, cls, i)) % 1000, size=32)
    options = dict(epochs=1, batch_size=4, img_size=32, workers=0, no_pretrained=True, device="cpu")
    result = eca_models.finetune("eca_resnet18", data, output=tmp_path / "run", **options)
    assert result.best["epoch"] == 1 and [h["epoch"] for h in result.history] == [1]
    assert 0 <= result.best["val_top1"] <= 100
    assert "val_top5" not in result.best  # two classes: Top-5 is 100% by definition, so not recorded
    assert json.loads((result.run_dir / "args.json").read_text())["lr"] == 0.01  # the classifiers' default, recorded
    model = eca_models.load(result.run_dir)
    assert model.pretrained_cfg["label_names"] == ["cat", "dog"]
    with pytest.raises(UsageError, match="^min_size= are for detectors"):
        eca_models.finetune("eca_resnet18", data, output=tmp_path / "other", min_size=96, **options)
    with pytest.raises(UsageError, match="^epochs=0"):
        FinetuneOptions(model="eca_resnet18", output=str(tmp_path / "x"), epochs=0)


def test_finetune_a_detector(converted, tmp_path):
    root = tmp_path / "coco"
    write_coco_dataset(root, "train2017", n_images=2, size=(96, 64), seed=1, empty_images=0)
    write_coco_dataset(root, "val2017", n_images=1, size=(96, 64), seed=2, empty_images=0)
    result = eca_models.finetune(
        "retinanet_eca_resnet50_fpn", root, output=tmp_path / "run", checkpoint=str(converted["retinanet"][2]),
        epochs=1, batch_size=2, warmup_iters=1, min_size=64, max_size=96, workers=0, device="cpu",
    )  # fmt: skip
    assert result.best["epoch"] == 1 and "val_box_map" in result.best
    assert json.loads((result.run_dir / "config.json").read_text())["label_map"]["categories"] == [
        {"id": 3, "name": "car"},
        {"id": 18, "name": "dog"},
    ]
    with pytest.raises(UsageError, match="^img_size= are for classifiers"):
        eca_models.finetune("retinanet_eca_resnet50_fpn", root, output=tmp_path / "other", img_size=64)


def test_validate_returns_a_verdict_per_model(folders, tmp_path):
    results = tmp_path / "rows.csv"
    run = eca_models.validate(
        "eca_resnet18_k3577", folders["val"], checkpoint=str(folders["ckpt"]), img_size=64, batch_size=4,
        workers=0, device="cpu", results_file=str(results),
    )  # fmt: skip
    (only,) = run.validations
    assert only.row["images"] == 8 and only.row["top1"] == 50.0 and only.row["top5"] == 100.0  # class 0 first
    assert only.verdict in ("PASS", "FAIL", "MEASURED") and only.reason
    assert run.status == (1 if only.verdict == "FAIL" else 0)
    assert "verdict   " + only.verdict in format_report(only)
    assert results.read_text().startswith("model,top1,")
    with pytest.raises(
        UsageError,
        match=r"^results_file=rows.txt: the rows are written as JSON or CSV; give a file name ending in .json or .csv",
    ):
        eca_models.validate("eca_resnet18_k3577", folders["val"], results_file="rows.txt")


def test_predict_classes_and_detections(folders, converted, tmp_path):
    found = eca_models.predict(folders["val"], "eca_resnet18_k3577", checkpoint=folders["ckpt"], top_k=2)
    assert found.images == 8 and found.unreadable == 0 and len(found.results) == 8
    assert [t["index"] for t in found.results[0]["top"]] == [0, 1]
    image = write_image(tmp_path / "street.jpg", seed=5, size=96)
    drawn = eca_models.predict([image], converted["maskrcnn"][2], score_thr=0.0, out_dir=tmp_path / "drawn")
    assert drawn.drawn == 1 and (tmp_path / "drawn" / "street.jpg").is_file()
    assert all({"box", "score", "label"} <= set(d) for d in drawn.results[0]["detections"])
    with pytest.raises(UsageError, match="^out_dir= draws detections"):
        eca_models.predict([image], "eca_resnet18_k3577", checkpoint=folders["ckpt"], out_dir=tmp_path / "no")


def test_convert_dispatches_on_the_model(converted, tmp_path):
    src, reference = authors_file_for("eca_resnet18_k3577", tmp_path)
    report = eca_models.convert(src, "eca_resnet18_k3577", tmp_path / "r18", check_size=64)
    assert report.kernel_code == "k3577" and (tmp_path / "r18" / "model.safetensors").is_file()
    detector = eca_models.convert(converted["retinanet"][0], "retinanet_eca_resnet50_fpn", tmp_path / "retina")
    assert detector.architecture == "retinanet_eca_resnet50_fpn" and detector.kernel_code == "k3377"


def test_export_returns_its_check(tmp_path):
    check = export("eca_resnet18", "torchscript", tmp_path / "r18.pt", pretrained=False, img_size=64)
    assert check.passed and check.img_size == 64 and check.path.is_file()
    with pytest.raises(UsageError, match="is a folder"):
        export("eca_resnet18", "torchscript", tmp_path, pretrained=False)


def test_benchmarks_return_their_reports(tmp_path):
    seen = []
    report = benchmark(
        "resnet18", batch_size=1, img_size=32, reps=1, warmup=0, train=False, announce=seen.append,
        results_file=tmp_path / "r.json",
    )  # fmt: skip
    assert [m["kind"] for m in report["models"]][0] == "plain" and report["models"][-1]["infer_img_s"] > 0
    assert seen == [report["settings"]] and json.loads((tmp_path / "r.json").read_text())["settings"]["reps"] == 1
    detectors = benchmark_detector("retinanet_eca_resnet50_fpn", det_size=(64, 96), reps=1, warmup=0)
    assert [d["name"] for d in detectors["detectors"]] == ["retinanet_resnet50_fpn", "retinanet_eca_resnet50_fpn"]
    with pytest.raises(UsageError, match="unknown detector"):
        benchmark_detector("yolo")


def test_attention_figure(folders, tmp_path):
    figure = eca_models.attention_figure(
        "eca_resnet18_k3577", folders["val"], tmp_path / "fig.png", checkpoint=folders["ckpt"], img_size=64
    )
    assert figure.figure.read_bytes()[:4] == b"\x89PNG" and figure.images == 8 and not figure.unreadable
    assert figure.rows[-1] == "all images" and len(figure.rows) == 3  # two classes, then all
    assert figure.panels["ECA"][figure.blocks[0]].shape[0] == 3
    with pytest.raises(EcaModelsError, match="is not an ECA block"):
        eca_models.attention_figure(
            "eca_resnet18_k3577", folders["val"], tmp_path / "f.png", checkpoint=folders["ckpt"], blocks=["nope"]
        )


def test_one_version():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{eca_models.__version__}"' in pyproject


def test_api_page_documents_every_job():
    page = (ROOT / "docs" / "api.md").read_text()
    for name in (
        "eca_models.training.finetune.finetune",
        "eca_models.evaluation.validate.validate",
        "eca_models.prediction.predict",
        "eca_models.conversion.convert",
        "eca_models.export.export",
        "eca_models.benchmark.classification.benchmark",
        "eca_models.benchmark.detection.benchmark_detector",
        "eca_models.attention.attention_figure",
        "eca_models.weights.fetch.download_checkpoints",
    ):
        assert f"::: {name}" in page, name


def test_what_python_callers_met_raw_or_not_at_all(folders, tmp_path, monkeypatch):
    """Issue 29's Python callers: one name given as a string, an image that cannot be read, top_k=0, categories
    without names: each one line of the package's own, as the commands say it."""
    from eca_models.detection import create_detector

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(EcaModelsError, match="^eca_resnet18_k3577.in1k is not in the cache"):
        eca_models.download_checkpoints("eca_resnet18")  # one name, not its letters
    with pytest.raises(EcaModelsError, match="^eca_resnet18_k3577.in1k is not in the cache"):
        eca_models.download_checkpoints(["eca_resnet18.in1k"])  # timm's name with the tag
    for names, all_ in (([], False), (["eca_resnet18"], True)):  # fetched everything, names or not
        with pytest.raises(UsageError, match="^name the checkpoints to fetch, or pass all=True$"):
            eca_models.download_checkpoints(names, all=all_)
    with pytest.raises(KeyError, match="no checkpoint 'eca_resnet18.foo' in the manifest"):  # was eca_resnet18's
        eca_models.download_checkpoints(["eca_resnet18.foo"])
    with pytest.raises(UsageError, match="^top_k=0: expected a whole number of at least 1"):
        eca_models.predict(folders["val"], "eca_resnet18_k3577", checkpoint=folders["ckpt"], top_k=0)
    with pytest.raises(UsageError, match="none of the 1 images could be read"):
        eca_models.predict(tmp_path / "nope.jpg", "eca_resnet18_k3577", checkpoint=folders["ckpt"], device="cpu")
    with pytest.raises(UsageError, match="each entry needs an integer 'id' and a 'name'"):
        create_detector("retinanet_eca_resnet50_fpn", categories=[{"id": 1}])
    with pytest.raises(UsageError, match="^num_classes='3': expected a whole number of at least 0"):  # not timm's
        eca_models.load("eca_resnet18", pretrained=False, num_classes="3")  # TypeError from deep inside


def test_predict_names_images_by_the_shortest_path_that_tells_them_apart(monkeypatch):
    import ntpath
    import pathlib
    import types

    from eca_models import prediction
    from eca_models.prediction import short_names

    names = short_names(["/d/a/x.jpg", "/d/b/x.jpg", "/d/a/y.jpg", "/e/a/x.jpg"])
    assert names == {
        "/d/a/x.jpg": "d/a/x.jpg",
        "/d/b/x.jpg": "b/x.jpg",
        "/d/a/y.jpg": "y.jpg",
        "/e/a/x.jpg": "e/a/x.jpg",
    }
    monkeypatch.setattr(prediction, "os", types.SimpleNamespace(path=ntpath))  # as on Windows
    monkeypatch.setattr(prediction, "Path", pathlib.PureWindowsPath)
    paths = ["C:\\a\\x.jpg", "D:\\a\\x.jpg", "\\\\srv\\share\\a\\x.jpg", "C:\\b\\y.jpg"]
    names = short_names(paths)
    assert [names[p] for p in paths] == ["C/a/x.jpg", "D/a/x.jpg", "share/a/x.jpg", "y.jpg"]


@pytest.mark.parametrize(
    "keyword, value, argv",
    [
        ("lr", -5.0, ["--lr", "-5"]),
        ("val_split", 1.5, ["--val-split", "1.5"]),
        ("mixup", -1.0, ["--mixup", "-1"]),
        ("smoothing", 1.0, ["--smoothing", "1"]),
        ("scale", (1.0, 0.1), ["--scale", "1", "0.1"]),
        ("cutmix", float("inf"), ["--cutmix", "inf"]),  # a number, but no alpha: NumPy's beta failed mid-epoch
        ("seed", -1, ["--seed", "-1"]),  # NumPy's generator takes 0 to 2**32 - 1
        ("sched", "none", ["--sched", "none"]),  # timm gives no scheduler for it, and the run needs one
        ("lr_steps", [11, 8], ["--lr-steps", "11", "8"]),  # timm's multi-step schedule bisects them
    ],
)
def test_a_bad_option_is_said_alike_by_the_function_and_the_command(folders, tmp_path, capsys, keyword, value, argv):
    """Checked with the options, before a model is built or the run folder made, in the same words: the keyword
    for a Python caller, the flag on the command line."""
    from eca_models.cli import main

    out = tmp_path / "run"
    with pytest.raises(UsageError) as raised:
        eca_models.finetune("eca_resnet18", folders["val"], output=out, no_pretrained=True, **{keyword: value})
    command = ["finetune", "--model", "eca_resnet18", "--data", str(folders["val"]), "--output", str(out)]
    assert main([*command, "--no-pretrained", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert str(raised.value).startswith(f"{keyword}={value!r}: expected ")
    flagged = str(raised.value).replace(f"{keyword}=", "--" + keyword.replace("_", "-") + " ", 1)
    assert err == [f"eca-models finetune: error: {flagged}"] and not out.exists()


def test_an_optimizer_timm_cannot_make_is_one_line_before_the_run(folders, tmp_path, capsys):
    """An optimizer name timm does not know, or a momentum its optimizer refuses (timm's 'sgd' is Nesterov's), for a
    classifier or a detector: one line before any folder, model or data (it was timm's or torch's traceback after
    the model was built)."""
    from eca_models.cli import main

    out = tmp_path / "run"
    for model, keyword, value, flag in [
        ("eca_resnet18", "opt", "adamx", "--opt adamx"),
        ("eca_resnet18", "momentum", 0.0, "--momentum 0"),
        ("fasterrcnn_eca_resnet50_fpn", "opt", "adamx", "--opt adamx"),
    ]:
        with pytest.raises(UsageError) as raised:
            eca_models.finetune(model, folders["val"], output=out, no_pretrained=True, **{keyword: value})
        opt, momentum = (value, 0.9) if keyword == "opt" else ("sgd", value)
        assert str(raised.value).startswith(f"opt={opt!r} with momentum={momentum}: timm cannot make it ("), raised
        command = ["finetune", "--model", model, "--data", str(folders["val"]), "--output", str(out)]
        assert main([*command, "--no-pretrained", *flag.split()]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(
            f"eca-models finetune: error: --opt {opt!r} with --momentum {momentum}: timm cannot make it ("
        ), err
        assert not out.exists()


@pytest.mark.parametrize(
    "call, expected",
    [
        (lambda d: eca_models.predict(d["image"], "eca_resnet99", score_thr=2.0), "score_thr=2.0: expected a score"),
        (lambda d: eca_models.predict(d["image"], "eca_resnet99", min_size=0), "min_size=0: expected a whole number"),
        (lambda d: eca_models.attention_figure("eca_resnet99", d["val"], d["png"], img_size=-1), "img_size=-1: "),
        (lambda d: eca_models.attention_figure("eca_resnet99", d["val"], d["png"], batch_size=0), "batch_size=0: "),
        (lambda d: eca_models.convert(d["ckpt"], "eca_resnet18_k3577", d["out"], check_size=0), "check_size=0: "),
        (
            lambda d: eca_models.convert(d["ckpt"], "eca_resnet18_k3577", d["out"], kernel_code="k3577"),
            "kernel_code= is",
        ),
        (lambda d: benchmark("resnet18", reps=0), "reps=0: expected a whole number of at least 1"),
        (lambda d: benchmark("resnet18", iters=0), "iters=0: expected a whole number of at least 1"),
        (lambda d: benchmark("resnet18", batch_size=-1), "batch_size=-1: expected a whole number"),
        (lambda d: benchmark("resnet18", runtimes="onnx"), "runtimes=['onnx']: choose from torch, onnxruntime"),
        (lambda d: benchmark_detector("fasterrcnn_eca_resnet50_fpn", det_size=(0, 64)), "det_size=0: expected"),
        (lambda d: benchmark_detector("fasterrcnn_eca_resnet50_fpn", warmup=-1), "warmup=-1: expected"),
        (lambda d: benchmark("resnet18", plot=d["out"]), "plot="),
        (lambda d: benchmark("resnet18", results_file=d["out"].with_suffix(".csv")), "results_file="),
        (lambda d: benchmark_detector("retinanet_eca_resnet50_fpn", results_file=d["out"]), "results_file="),
    ],
)
def test_a_python_callers_option_out_of_range_is_one_line_before_any_work(folders, tmp_path, call, expected):
    """What the command line's types check (argparse), the functions check too: these were torch's or the
    statistics module's tracebacks after a model was built, or a value silently ignored (a classifier's kernel_code=,
    a classifier's score_thr=). The model names that do not exist show nothing was loaded before the check."""
    given = dict(image=folders["val"], val=folders["val"], png=tmp_path / "a.png", ckpt=folders["ckpt"])
    with pytest.raises(UsageError) as raised:
        call({**given, "out": tmp_path / "out"})
    assert str(raised.value).startswith(expected), raised.value
    if expected in ("plot=", "results_file="):  # a name that says another format than the file is written in
        assert "; give a file name ending in ." in str(raised.value), raised.value
    assert not (tmp_path / "out").exists() and not (tmp_path / "a.png").exists()


def test_python_keywords_of_the_wrong_type_are_one_line(folders, tmp_path):
    with pytest.raises(UsageError, match="^lr='0.01': expected a number above 0$"):
        eca_models.finetune("eca_resnet18", folders["val"], output=tmp_path / "r", lr="0.01")
    with pytest.raises(UsageError, match="^scale=0.5: expected two numbers MIN MAX"):
        eca_models.finetune("eca_resnet18", folders["val"], output=tmp_path / "r", scale=0.5)
    with pytest.raises(UsageError, match="^top_k='2': expected a whole number"):
        eca_models.predict(folders["val"], "eca_resnet18", top_k="2")
    assert FinetuneOptions(model="m", output="o", img_size=None).img_size == 224  # None: the default


def test_an_unknown_model_or_a_file_as_output_is_said_first(folders, tmp_path, capsys):
    from eca_models.cli import main
    from eca_models.detection import load_detector

    data = ["--data", str(folders["val"])]
    assert main(["finetune", "--model", "eca_resnt18", "--no-pretrained", *data, "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("eca-models finetune: error: unknown model 'eca_resnt18'") and "warning" not in err
    (tmp_path / "r18.pth.tar").write_bytes(b"x")
    argv = ["finetune", "--model", "eca_resnet18", "--no-pretrained", *data, "--output", str(tmp_path / "r18.pth.tar")]
    assert main(argv) == 2
    assert "r18.pth.tar is a file, not a folder: --output names the folder" in capsys.readouterr().err
    with pytest.raises(KeyError):  # an unknown name is a KeyError too, as before
        eca_models.load("eca_resnt18")
    with pytest.raises(UsageError, match="^unknown detector 'no_dir': not a registered detector nor a folder"):
        load_detector("no_dir")


@pytest.mark.parametrize(
    "call, what",
    [
        (lambda out: eca_models.predict("", "eca_resnet99"), "image"),
        (lambda out: eca_models.predict([out, ""], "eca_resnet99"), "image"),
        (lambda out: eca_models.validate("eca_resnet99", ""), "data folder"),
        (lambda out: eca_models.finetune("eca_resnet99", "", output=out), "data folder"),
        (lambda out: eca_models.finetune("eca_resnet99", out, output=""), "output"),
        (lambda out: eca_models.convert("", "eca_resnet18_k3577", out), "weights file"),
        (lambda out: eca_models.convert("", "maskrcnn_eca_resnet50_fpn", out), "weights file"),
        (lambda out: eca_models.load("eca_resnet18", checkpoint=""), "weights file"),
        (lambda out: eca_models.attention_figure("eca_resnet99", "", out.with_suffix(".png")), "data folder"),
    ],
)
def test_an_empty_path_is_one_line_not_the_working_folder(tmp_path, monkeypatch, call, what):
    """``Path("")`` is the working folder: an empty path (an unset shell variable) predicted every image under it,
    validated or fine-tuned on it, or was read as a checkpoint folder. Now one line, before any model or weights
    (the model names that do not exist show nothing was loaded first)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=f"^the {what} path is empty: name the file or folder"):
        call(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
