"""eca-models validate on generated ImageNet-style sets whose expected Top-1/Top-5 are exact."""

import csv
import json
import shutil

import pytest
from conftest import run_python
from helpers import ranking_checkpoint, write_image

import eca_models
from eca_models.cli import main
from eca_models.conversion.imagenet import convert_checkpoint
from eca_models.data.imagenet import imagenet_wnids
from eca_models.evaluation import verdict, wilson_interval

RANKED = [500, 3, 250, 42, 900]  # what the controlled checkpoint predicts, best first
# 5 images of the top class, 2 of lower-ranked ones, 1 of an unranked class (7), 1 corrupt file:
# 8 scored images, Top-1 = 5/8, Top-5 = 7/8. Global labels differ from the folders' positions.
LAYOUT = {500: 5, 250: 1, 900: 1, 7: 1}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("val")
    wnids = imagenet_wnids()
    folder, flat = root / "folders", root / "flat"
    flat.mkdir()
    solution, pairs, n = ["ImageId,PredictionString"], [], 0
    for cls, count in LAYOUT.items():
        for _ in range(count):
            n += 1
            name = f"ILSVRC2012_val_{n:08d}.JPEG"
            write_image(folder / wnids[cls] / name, seed=n)
            shutil.copy(folder / wnids[cls] / name, flat / name)
            solution.append(f"ILSVRC2012_val_{n:08d},{wnids[cls]} 1 2 3 4 {wnids[cls]} 5 6 7 8")
            pairs.append(f"{name} {cls}")
    corrupt = folder / wnids[7] / "ILSVRC2012_val_00000099.JPEG"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / wnids[7] / "notes.txt").write_text("not an image: ignored")
    (root / "LOC_val_solution.csv").write_text("\n".join(solution) + "\n")
    (root / "val.txt").write_text("\n".join(pairs) + "\n")
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


@pytest.mark.parametrize("labels", ["LOC_val_solution.csv", "val.txt"])
def test_flat_layout_with_ground_truth_file(data, tmp_path, labels):
    results = tmp_path / "r.csv"
    run = _measure(
        "eca_resnet18_k3577", data["flat"], checkpoint=str(data["ckpt"]), labels=str(data["root"] / labels),
        results_file=str(results),
    )  # fmt: skip
    assert run.status == 0
    [row] = list(csv.DictReader(results.open()))
    assert (row["images"], row["top1"], row["top5"], row["verdict"]) == ("8", "62.5", "87.5", "PASS")


def test_flat_layout_finds_kaggle_solution_beside_it(data, tmp_path):
    run = _measure("eca_resnet18_k3577", data["flat"], checkpoint=str(data["ckpt"]))
    assert run.status == 0
    assert run.validations[0].row["images"] == 8


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


@pytest.mark.parametrize(
    "case,expected",
    [
        ("missing", "does not exist"),
        ("empty", "no images found"),
        ("not_wnid", "is not named by an ImageNet-1k WordNet id"),
        ("unknown_model", "unknown model 'eca_resnet99'"),
        ("other_arch", "does not fit eca_resnet34"),
        ("on_error_fail", "cannot read image"),
        ("no_labels", "no class sub-folders and no ground truth"),
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
