"""eca-models validate on generated ImageNet-style sets whose expected Top-1/Top-5 are exact."""

import csv
import importlib
import json
import shutil

import pytest
import timm
import torch
from conftest import run_python
from helpers import FAST_64, RANKED, one_line_error, ranking_checkpoint, write_image

import eca_models
from eca_models.cli import main
from eca_models.conversion.imagenet import convert_checkpoint
from eca_models.data.imagenet import imagenet_wnids
from eca_models.errors import DataError
from eca_models.evaluation import verdict, wilson_interval

# 5 images of the top class, 2 of lower-ranked ones, 1 of an unranked class (7), 1 corrupt file:
# 8 scored images, Top-1 = 5/8, Top-5 = 7/8. Global labels differ from the folders' positions.
LAYOUT = {500: 5, 250: 1, 900: 1, 7: 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    wnids = imagenet_wnids()
    folder, flat = root / "folders", root / "flat"
    flat.mkdir()
    solution, pairs, synsets, n = ["ImageId,PredictionString"], [], [], 0
    for cls, count in LAYOUT.items():
        for _ in range(count):
            n += 1
            name = f"ILSVRC2012_val_{n:08d}.JPEG"
            write_image(folder / wnids[cls] / name, seed=n)
            shutil.copy(folder / wnids[cls] / name, flat / name)
            solution.append(f"ILSVRC2012_val_{n:08d},{wnids[cls]} 1 2 3 4 {wnids[cls]} 5 6 7 8")
            pairs.append(f"{name} {cls}")
            synsets.append(wnids[cls])
    corrupt = folder / wnids[7] / "ILSVRC2012_val_00000099.JPEG"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / wnids[7] / "notes.txt").write_text("not an image: ignored")
    (root / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    (root / "val.txt").write_text("\n".join(pairs) + "\n")
    (root / "synsets.txt").write_text("\n".join(synsets) + "\n")  # TensorFlow's: a WordNet id a line, in val's order
    ckpt = ranking_checkpoint(root / "eca_resnet18_k3577.pth.tar", RANKED)
    wrong = ranking_checkpoint(root / "wrong.pth.tar", [1, 2, 4, 5, 6])
    return dict(root=root, folder=folder, flat=flat, ckpt=ckpt, wrong=wrong, corrupt=corrupt)


def _validate(*args):
    return main(["validate", "--workers", "0", "--batch-size", "4", "--img-size", "64", *map(str, args)])


def _measure(models, data, **options):
    """eca_models.validate with _validate's small settings: the Python call behind the command."""
    return eca_models.validate(models, data, workers=0, batch_size=4, img_size=64, device="cpu", **options)


def test_folder_layout_with_class_subset_and_corrupt_image(data, tmp_path, capsys):
    results = tmp_path / "r.json"
    code = _validate(
        "--model",
        "eca_resnet18_k3577",
        "--checkpoint",
        data["ckpt"],
        "--data",
        data["folder"],
        "--results-file",
        results,
    )
    out = capsys.readouterr().out
    assert code == 0, out
    [row] = json.loads(results.read_text())
    assert (row["images"], row["top1"], row["top5"]) == (8, 62.5, 87.5)
    assert row["unreadable"] == 1 and row["unreadable_images"] == [str(data["corrupt"])]
    assert row["reported_top1"] == 70.92 and row["paper_top1"] == 70.78 and row["verdict"] == "PASS"
    assert row["top1_ci95"] == [round(v, 3) for v in wilson_interval(62.5, 8)]
    assert row["params"] == 11_689_556 and row["kernel_code"] == "k3577"
    for column in (
        "model",
        "top1",
        "top1_err",
        "top5",
        "top5_err",
        "param_count",
        "img_size",
        "crop_pct",
        "interpolation",
    ):
        assert column in row  # timm validate.py's result columns
    assert "Top-1" in out and "70.92" in out and "PASS" in out and "1 unreadable" in out
    assert "published 11.15M (params / 2^20)" in out and "published 1.70G (thop MACs / 2^30)" in out


@pytest.mark.parametrize("labels", ["LOC_val_solution.csv", "val.txt", "synsets.txt"])
def test_flat_layout_with_ground_truth_file(data, tmp_path, labels):
    results = tmp_path / "r.csv"
    run = _measure(
        "eca_resnet18_k3577", data["flat"], checkpoint=str(data["ckpt"]), labels=str(data["root"] / labels),
        results_file=str(results),
    )  # fmt: skip
    assert run.status == 0
    [row] = list(csv.DictReader(results.open()))
    assert (row["images"], row["top1"], row["top5"], row["verdict"]) == ("8", "62.5", "87.5", "PASS")


@pytest.mark.parametrize("folders", ["wnid", "index"])
def test_another_test_set_is_measured_not_judged(data, tmp_path, folders):
    """Class folders of images not named as ImageNet val's (ImageNet-Sketch, -R, V2 as WordNet folders): another
    distribution, whose accuracy says nothing of the release's; it was judged as a subset of val (PASS or FAIL).
    ImageNetV2's own layout names its folders by class index (``7/``, ``250/``: not ImageFolder's sorted order); it
    was refused."""
    sketch = tmp_path / "sketch"
    for n, path in enumerate(sorted(data["folder"].rglob("*.JPEG"))):
        folder = sketch / (path.parent.name if folders == "wnid" else str(imagenet_wnids().index(path.parent.name)))
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, folder / f"{n:040x}.jpeg")  # V2's names are hashes
    row = _measure("eca_resnet18_k3577", sketch, checkpoint=str(data["ckpt"])).validations[0].row
    assert (row["top1"], row["reported_top1"], row["verdict"]) == (62.5, 70.92, "MEASURED")
    assert (
        row["verdict_reason"]
        == "the images are not ImageNet val's (named ILSVRC2012_val_NNNNNNNN): another test set, measured only"
    )


def test_flat_layout_named_by_class_as_hugging_face_holds_it(data, tmp_path):
    """Hugging Face's imagenet-1k val archive is one flat folder of ``ILSVRC2012_val_00000001_n01751748.JPEG``: the
    class is in each name. It was refused for want of a ground-truth file."""
    named = tmp_path / "val_images"
    named.mkdir()
    for path in data["folder"].rglob("*.JPEG"):
        shutil.copy(path, named / f"{path.stem}_{path.parent.name}.JPEG")
    row = _measure("eca_resnet18_k3577", named, checkpoint=str(data["ckpt"])).validations[0].row
    assert (row["images"], row["top1"], row["top5"], row["verdict"]) == (8, 62.5, 87.5, "PASS")
    (named / "ILSVRC2012_val_00000100_n99999999.JPEG").write_bytes(b"")
    with pytest.raises(DataError, match=r"_n99999999.JPEG is named by n99999999, which is not an ImageNet-1k WordNet"):
        _measure("eca_resnet18_k3577", named, checkpoint=str(data["ckpt"]))


def test_the_devkits_numbered_labels_are_refused_with_the_file_to_use(data, tmp_path):
    """ILSVRC2012_validation_ground_truth.txt numbers the classes in the devkit's order, not the sorted WordNet ids'."""
    (tmp_path / "ground_truth.txt").write_text("490\n361\n")
    with pytest.raises(
        DataError, match=r"'490' is not one \(the devkit's .* own order, .*: use LOC_val_solution.csv\)$"
    ):
        _measure(
            "eca_resnet18_k3577", data["flat"], checkpoint=str(data["ckpt"]), labels=str(tmp_path / "ground_truth.txt")
        )


def test_flat_layout_finds_kaggle_solution_beside_it(data, tmp_path):
    run = _measure("eca_resnet18_k3577", data["flat"], checkpoint=str(data["ckpt"]))
    assert run.status == 0
    assert run.validations[0].row["images"] == 8


def test_flat_layout_finds_kaggle_solution_where_kaggles_download_holds_it(data, tmp_path):
    """Kaggle's ImageNet download keeps LOC_val_solution.csv four folders above its flat ILSVRC/Data/CLS-LOC/val; only
    the folder and its parent were looked in, and the user was asked for the file."""
    val = tmp_path / "imagenet-object-localization-challenge" / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    shutil.copytree(data["flat"], val)
    shutil.copy(data["root"] / "LOC_val_solution.csv", tmp_path / "imagenet-object-localization-challenge")
    row = _measure("eca_resnet18_k3577", val, checkpoint=str(data["ckpt"])).validations[0].row
    assert (row["images"], row["top1"], row["top5"], row["verdict"]) == (8, 62.5, 87.5, "PASS")


def test_amp_channels_last_and_recording_a_full_set(data, tmp_path, monkeypatch, capsys):
    import eca_models.evaluation.classification as validate_cmd
    from eca_models.weights import manifest

    copy = tmp_path / "manifest.json"
    copy.write_text(manifest._manifest_path().read_text())
    monkeypatch.setattr(manifest, "_manifest_path", lambda: copy)
    manifest._CACHE.clear()
    monkeypatch.setattr(validate_cmd, "IMAGENET_VAL_SIZE", 8)  # this little set plays the full 50,000
    results = tmp_path / "r.json"
    args = ["--model", "eca_resnet18_k3577", "--checkpoint", data["ckpt"], "--data", data["folder"]]
    assert _validate(*args, "--amp", "--channels-last", "--record", "--results-file", results) in (0, 1)
    row = json.loads(results.read_text())[0]
    assert (row["images"], row["top1"], row["top5"]) == (8, 62.5, 87.5)  # the ranking survives bfloat16
    entry = manifest.load_manifest(copy)["eca_resnet18_k3577.in1k"]
    assert entry.measured_metrics == {"ImageNet-1K": {"acc@1": 62.5, "acc@5": 87.5}}
    assert "recorded the measurement" in capsys.readouterr().out
    manifest._CACHE.clear()


def test_fail_verdict_exits_1(data, tmp_path, capsys):
    results = tmp_path / "r.json"
    assert (
        _validate(
            "--model",
            "eca_resnet18",
            "--checkpoint",
            data["wrong"],
            "--data",
            data["folder"],
            "--results-file",
            results,
        )
        == 1
    )
    row = json.loads(results.read_text())[0]
    assert row["top1"] == 0.0 and row["verdict"] == "FAIL" and "outside" in row["verdict_reason"]
    assert "FAIL" in capsys.readouterr().out


def test_limit_spreads_over_the_set(data, tmp_path):
    run = _measure("eca_resnet18_k3577", data["folder"], checkpoint=str(data["ckpt"]), limit=3)
    row = run.validations[0].row
    assert row["images"] + row["unreadable"] == 3


def test_pattern_validates_each_model(data, tmp_path, monkeypatch):
    weights = tmp_path / "weights"
    convert_checkpoint(
        data["ckpt"], "eca_resnet18_k3577", weights / "eca_resnet18_k3577.in1k", check_size=32, log=lambda _: None
    )
    monkeypatch.setenv("ECA_MODELS_WEIGHTS_DIR", str(weights))
    results = tmp_path / "r.json"
    assert _measure("eca_resnet18*", data["folder"], results_file=str(results)).status == 0
    rows = json.loads(results.read_text())
    assert [r["model"] for r in rows] == ["eca_resnet18", "eca_resnet18_k3577"]
    assert all((r["top1"], r["top5"], r["verdict"]) == (62.5, 87.5, "PASS") for r in rows)

    # stopped during the second model: the first one's row is kept (the file was written only at the end)
    validate_module = importlib.import_module("eca_models.evaluation.validate")  # the package names its function so
    measured = validate_module.validate_classifier

    def stopped_at_the_second(name, *args):
        if name == "eca_resnet18_k3577":
            raise KeyboardInterrupt
        return measured(name, *args)

    monkeypatch.setattr(validate_module, "validate_classifier", stopped_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        _measure("eca_resnet18*", data["folder"], results_file=str(tmp_path / "stopped.csv"))
    with open(tmp_path / "stopped.csv", newline="") as f:
        assert [r["model"] for r in csv.DictReader(f)] == ["eca_resnet18"]


def test_a_csv_row_per_model_holds_every_models_columns(tmp_path):
    """A box-only detector's row before a Mask R-CNN's: the mask columns were not in the first row's, and writing
    the file failed after every model had been measured."""
    from eca_models.evaluation.validate import write_results

    box = {"model": "fasterrcnn", "metrics": {"box": {"map": 38.1}}, "reported": {"box_map": 38.0}}
    mask = {"model": "maskrcnn", "metrics": {"box": {"map": 39.1}, "mask": {"map": 35.5}}, "reported": None}
    write_results(tmp_path / "rows.csv", [box, mask])
    with open(tmp_path / "rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["model"], r["box_map"], r["mask_map"], r["reported_box_map"]) for r in rows] == [
        ("fasterrcnn", "38.1", "", "38.0"),
        ("maskrcnn", "39.1", "35.5", ""),
    ]


def test_a_folder_without_ground_truth_is_said_before_any_weights(tmp_path, capsys):
    """No class sub-folders and no labels: said before the model's weights are looked for (there are none here)."""
    write_image(tmp_path / "flat" / "a.JPEG", 0)
    with pytest.raises(DataError, match=r"flat has no class sub-folders, .*: pass labels=FILE$"):
        eca_models.validate("eca_resnet50", tmp_path / "flat")
    args = ["attention", "--model", "eca_resnet50", "--data", str(tmp_path / "flat"), "--out", str(tmp_path / "a.png")]
    assert main(args) == 2
    assert one_line_error(capsys, "attention").endswith(
        "(LOC_val_solution.csv): give it one sub-folder of images per class"
    )  # attention has no --labels to offer


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing", "does not exist"),
        ("empty", "no images found"),
        ("not_wnid", "is not named by an ImageNet-1k WordNet id"),
        (
            "dataset_root",
            "train is not named by an ImageNet-1k WordNet id; each sub-folder of --data must be one (the "
            "validation split: --data ",
        ),
        ("unknown_model", "unknown model 'eca_resnet99'"),
        ("other_arch", "does not fit eca_resnet34"),
        ("on_error_fail", "cannot read image"),
        ("no_labels", "no class sub-folders, no images named by class (x_n01751748.JPEG) and no ground truth"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(data, tmp_path, capsys, case, expected):
    model, ckpt, folder, extra = "eca_resnet18_k3577", data["ckpt"], data["folder"], []
    if case == "missing":
        folder = tmp_path / "nowhere"
    elif case == "empty":
        folder = tmp_path / "empty"
        (folder / imagenet_wnids()[0]).mkdir(parents=True)
    elif case == "not_wnid":
        folder = tmp_path / "cats"
        write_image(folder / "cat" / "1.png", 0)
    elif case == "dataset_root":  # train/ and val/ of one dataset
        folder = tmp_path / "imagenet"
        for split in ("train", "val"):
            write_image(folder / split / imagenet_wnids()[0] / "1.png", 0)
    elif case == "unknown_model":
        model = "eca_resnet99"
    elif case == "other_arch":
        model = "eca_resnet34"
    elif case == "on_error_fail":
        extra = ["--on-error", "fail"]
    elif case == "no_labels":
        folder = tmp_path / "flat"
        write_image(folder / "a.JPEG", 0)
    code = _validate("--model", model, "--checkpoint", ckpt, "--data", folder, *extra)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert expected in err.splitlines()[-1] and "Traceback" not in err, err


@pytest.mark.parametrize(
    "keyword, value, argv, expected",
    [
        ("interpolation", "abc", ["--interpolation", "abc"], "choose one of nearest, bilinear, bicubic,"),
        ("crop_pct", -1.0, ["--crop-pct", "-1"], "expected a fraction above 0, at most 1"),
        ("crop_pct", 5.0, ["--crop-pct", "5"], "expected a fraction above 0, at most 1"),
        ("std", (0.0, 0.0, 0.0), ["--std", "0", "0", "0"], "expected three numbers above 0, one per channel"),
        ("mean", (0.5,), None, "expected three numbers, one per channel (R, G, B)"),
        ("tolerance", -1.0, ["--tolerance", "-1"], "expected a number of points, at least 0"),
        ("workers", -1, None, "expected a whole number of at least 0"),
    ],
)
def test_a_preprocessing_or_verdict_option_out_of_range_is_one_line_before_any_model(
    data, tmp_path, capsys, keyword, value, argv, expected
):
    """Checked with the options (they were a KeyError traceback, 'NOT SCORED' from a zero std or a negative crop, a
    verdict against a negative tolerance), in the keyword's words for a Python caller and the flag's on the command
    line; nothing is loaded first (the model here is one that does not exist)."""
    with pytest.raises(eca_models.EcaModelsError) as raised:
        eca_models.validate("eca_resnet99", data["folder"], **{keyword: value})
    assert str(raised.value).startswith(f"{keyword}={value!r}: {expected}"), raised.value
    if argv:
        assert main(["validate", "--model", "eca_resnet99", "--data", str(data["folder"]), *argv]) == 2
        err = one_line_error(capsys, "validate")
        assert f"--{keyword.replace('_', '-')} " in err and expected in err, err


def test_verdict_rules():
    reported = {"acc@1": 77.42, "acc@5": 93.62}
    assert verdict({"acc@1": 77.2, "acc@5": 93.5}, reported, 50_000)[0] == "PASS"
    assert verdict({"acc@1": 77.0, "acc@5": 93.5}, reported, 50_000)[0] == "FAIL"
    assert verdict({"acc@1": 77.0, "acc@5": 93.5}, reported, 50_000, tolerance=0.5)[0] == "PASS"
    assert verdict({"acc@1": 76.0, "acc@5": 93.0}, reported, 1_000)[0] == "PASS"  # inside the interval
    status, why = verdict({"acc@1": 70.0, "acc@5": 93.0}, reported, 1_000)
    assert status == "FAIL" and why.startswith("subset of 1000 images, where each reported value must lie inside")
    assert why.endswith(": acc@1 reported 77.42 is outside [67.09, 72.76]")  # the rule, then what broke it
    assert verdict({"acc@1": 70.0, "acc@5": 93.0}, None, 1_000)[0] == "MEASURED"
    low, high = wilson_interval(77.42, 50_000)
    assert 77.0 < low < 77.42 < high < 77.8


@pytest.mark.slow
def test_two_processes_under_torchrun_count_every_image_once(data, tmp_path):
    single, double = tmp_path / "one.json", tmp_path / "two.json"
    args = [
        "validate",
        "--model",
        "eca_resnet18_k3577",
        "--checkpoint",
        str(data["ckpt"]),
        "--data",
        str(data["folder"]),
    ]
    args += ["--workers", "0", "--batch-size", "2", "--img-size", "64"]
    assert main([*args, "--results-file", str(single)]) == 0
    torchrun = ["--standalone", "--nproc-per-node", "2", "-m", "eca_models.cli", *args, "--results-file", str(double)]
    code = f"import sys; from torch.distributed.run import main; sys.exit(main({torchrun!r}))"
    result = run_python(code, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = json.loads(single.read_text())[0], json.loads(double.read_text())[0]
    for key in ("images", "top1", "top5", "unreadable", "unreadable_images", "verdict"):
        assert one[key] == two[key], key
    assert result.stdout.count("verdict") == 1, "only rank 0 reports"


def test_a_converted_folder_names_its_weights_and_unreadable_images_are_listed_when_no_file_is(data, tmp_path, capsys):
    folder = tmp_path / "eca_resnet18_k3577.in1k"
    convert_checkpoint(data["ckpt"], "eca_resnet18_k3577", folder, check_size=32, log=lambda _: None)
    capsys.readouterr()
    assert _validate("--model", folder, "--data", data["folder"]) == 0
    out = capsys.readouterr().out
    assert f"weights {folder})" in out and "weights none" not in out
    assert "1 unreadable (not scored, listed below)" in out and f"unreadable: {data['corrupt']}" in out
    results = tmp_path / "r.json"
    assert _validate("--model", folder, "--data", data["folder"], "--results-file", results) == 0
    assert f"1 unreadable (not scored, listed in {results})" in capsys.readouterr().out


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
    assert main([*argv, *FAST_64, "--results-file", str(results)]) == 2
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
        ["validate", "--data", str(val["folder"]), *FAST_64],
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


def test_a_detector_folder_where_a_classifier_goes_is_named_as_one(converted, two_class_run, tmp_path, capsys):
    from detection_helpers import write_coco_dataset

    for split in ("train2017", "val2017"):
        write_coco_dataset(tmp_path / "coco", split, n_images=2, size=(96, 64))
    detector = str(converted["fasterrcnn"][2])
    image = str(write_image(tmp_path / "a.png", 1))
    for argv in (
        ["export", "--model", detector, "--format", "exported-program", "--out", str(tmp_path / "d.pt2")],
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


def test_a_pattern_run_skips_what_it_cannot_load_and_writes_the_rest(val, tmp_path, capsys, monkeypatch):
    weights = tmp_path / "weights"
    convert_checkpoint(val["ckpt"], "eca_resnet18_k3577", weights / "eca_resnet18_k3577.in1k", log=lambda _: None)
    monkeypatch.setenv("ECA_MODELS_WEIGHTS_DIR", str(weights))
    results = tmp_path / "r.json"
    argv = ["validate", "--model", "eca_resnet1*", "--data", str(val["folder"]), *FAST_64]
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


def test_a_two_class_run_shows_no_top5_and_its_own_size(two_class_run, capsys):
    argv = ["validate", "--model", str(two_class_run["run"]), "--data", str(two_class_run["data"] / "val")]
    assert main([*argv, "--workers", "0"]) == 0
    out = capsys.readouterr().out
    assert "Top-1" in out and "Top-5" not in out and "e9 at 32 (flop_counter)" in out and "e9 at 224" not in out
    assert "Top-5" not in (two_class_run["run"] / "README.md").read_text()


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
    # saved again by Excel or Notepad: a byte order mark and CRLF line ends (the first line was refused)
    kaggle = tmp_path / "LOC_val_solution.csv"
    rows = [
        "ImageId,PredictionString",
        "ILSVRC2012_val_00000347,n02951358 1 2 3 4",
        f"ILSVRC2012_val_00000001,{wnids[65]} 1 2 3 4",
    ]
    for labels in (kaggle, tmp_path / "val.txt"):
        lines = rows if labels == kaggle else ["ILSVRC2012_val_00000347.JPEG 472", "ILSVRC2012_val_00000001.JPEG 65"]
        labels.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\n")
        assert sorted(label for _, label in imagenet_samples(flat, labels)) == [65, 472]
