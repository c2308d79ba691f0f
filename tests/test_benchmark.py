import copy
import importlib.util
import json
import math
import platform
import random
import re
import subprocess
import sys

import pytest
import timm
import torch
from conftest import ROOT, run_cli
from helpers import randomize
from timm.models.resnet import Bottleneck

from eca_models.benchmark import interleaved_orders, median_interval, run_benchmark
from eca_models.cli import main
from eca_models.layers import EcaLayer


def test_benchmark_command_on_a_tiny_configuration(tmp_path, capsys):
    results, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    args = [
        "benchmark",
        "--backbone",
        "resnet18",
        "--batch-size",
        "2",
        "--img-size",
        "32",
        "--reps",
        "2",
        "--warmup",
        "0",
    ]
    assert main([*args, "--results-file", str(results), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    report = json.loads(results.read_text())
    assert set(report) == {"settings", "machine", "models", "loading", "paper_table3"}
    names = [m["name"] for m in report["models"]]
    assert names == ["resnet18", "seresnet18", "cbam_resnet18", "timm_eca_resnet18", "eca_resnet18"]
    by_name = {m["name"]: m for m in report["models"]}
    assert by_name["resnet18"]["infer_ratio"] == 1.0 and by_name["resnet18"]["train_ratio"] == 1.0
    assert by_name["eca_resnet18"]["params"] - by_name["resnet18"]["params"] == 44  # k3577: 2*3 + 2*5 + 2*7 + 2*7
    assert by_name["timm_eca_resnet18"]["params"] == by_name["eca_resnet18"]["params"]  # same kernel sizes
    for m in report["models"]:
        assert len(m["infer_runs"]) == 2 and len(m["train_runs"]) == 2 and m["infer_img_s"] > 0 and m["train_img_s"] > 0
        assert m["gmacs"] > 0
        assert m["infer_ratio_interval"] is None and m["train_ratio_interval"] is None  # 2 repetitions: too few
    assert report["loading"]["safetensors"] > 0 and report["loading"]["pickle"] > 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "eca_resnet18" in out and "safetensors" in out


def test_mobilenetv2_backbone_and_paper_ratios():
    results = run_benchmark("mobilenetv2", batch_size=2, img_size=32, reps=1, warmup=0, train=False, log=lambda _: None)
    assert [r.name for r in results] == ["mobilenetv2_100", "eca_mobilenetv2"]
    assert results[1].params - results[0].params == 31
    assert results[1].paper_infer_ratio == 2010 / 2086


def test_any_timm_model_with_and_without_add_eca(tmp_path, capsys):
    results = tmp_path / "bench.json"
    argv = ["benchmark", "--backbone", "convnext_atto", "--batch-size", "2", "--img-size", "32", "--reps", "1"]
    assert main([*argv, "--warmup", "0", "--no-train", "--add-eca"]) == 2  # a ConvNeXt: not a block it knows
    assert "found no block it knows" in capsys.readouterr().err
    argv[2] = "resnet18"
    assert main([*argv, "--warmup", "0", "--no-train", "--add-eca", "k3577", "--results-file", str(results)]) == 0
    report = json.loads(results.read_text())
    assert [m["name"] for m in report["models"]] == ["resnet18", "resnet18+eca"] and report["loading"] is None
    assert report["models"][1]["params"] - report["models"][0]["params"] == 44  # the release's k3577 layout
    assert report["settings"]["add_eca"] == "k3577" and report["models"][1]["infer_ratio"] > 0
    assert main(["benchmark", "--backbone", "resnet18x", "--reps", "1"]) == 2
    assert "one of resnet18" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_keep_memory_stops_page_faults_on_reallocation():
    """In a fresh process (the setting lasts for the process): allocating and filling a 64 MiB block again and
    again faults its 16k pages in every time by default (glibc maps it anew); once freed memory is kept, the
    heap serves it again and almost every reallocation faults in nothing."""
    code = (
        "import resource, torch\n"
        "from eca_models.benchmark import keep_freed_memory\n"
        "assert keep_freed_memory()\n"
        "def faults():\n"
        "    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for i in range(10):\n"
        "    start = faults()\n"
        "    torch.empty(16 << 20).fill_(1)\n"
        "    print(faults() - start)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    faults = [int(line) for line in out.split()]
    assert sum(f < 1000 for f in faults) >= 7, f"page faults of ten reallocations of a kept 64 MiB block: {faults}"


def _gate_cost_script():
    spec = importlib.util.spec_from_file_location("gate_cost", ROOT / "benchmarks" / "gate_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gate_cost_variants_are_what_they_claim():
    """The copy is the plain network, ours carries its weights, and the constant-gate network equals the plain
    one with each block's residual branch halved (bn3's affine terms), with no ECA layer left to run."""
    plain = randomize(timm.create_model("resnet50"), seed=4).eval()
    models = _gate_cost_script().variants(plain)
    halved = copy.deepcopy(plain)
    for block in halved.modules():
        if isinstance(block, Bottleneck):
            block.bn3.weight.data.mul_(0.5)
            block.bn3.bias.data.mul_(0.5)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        out = {name: m(x) for name, m in models.items()}
        torch.testing.assert_close(out["resnet50 (copy)"], out["resnet50"], atol=0, rtol=0)
        torch.testing.assert_close(out["eca_resnet50, constant gate"], halved(x), atol=1e-5, rtol=1e-5)
    assert not any(isinstance(m, EcaLayer) for m in models["eca_resnet50, constant gate"].modules())
    eca = models["eca_resnet50"]
    assert all(torch.equal(p, eca.state_dict()[k]) for k, p in plain.state_dict().items())


@pytest.mark.slow
def test_gate_cost_script_writes_its_results(tmp_path):
    out = tmp_path / "gate.json"
    args = ["--batch-size", "1", "--img-size", "32", "--reps", "2", "--results-file", str(out)]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gate_cost.py"), *args], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert [m["name"] for m in result["models"]][0] == "resnet50" and len(result["models"]) == 4
    assert all(len(m["ms_runs"]) == 2 and m["speed_ratio"] > 0 for m in result["models"])
    assert "| eca_resnet50, constant gate |" in proc.stdout


def test_interleaved_orders_vary_each_models_predecessor_and_repeat_across_runs():
    """Each repetition runs every model once; no model always follows the same one (as in a rotation); and a
    second run gets the same sequence of orders."""
    names = ["a", "b", "c", "d", "e"]
    orders = list(interleaved_orders(names, 12))
    assert len(orders) == 12 and all(sorted(o) == names for o in orders)
    for name in names:
        predecessors = {o[o.index(name) - 1] for o in orders if o.index(name) > 0}
        assert len(predecessors) > 1, name
    assert list(interleaved_orders(names, 12)) == orders


def test_median_interval_is_the_order_statistics_that_cover_the_median():
    values = [0.9, 1.3, 0.7, 1.1, 1.0, 0.8, 1.2, 0.6, 1.4]
    assert median_interval(values) == (0.7, 1.3)  # n = 9: P(fewer than 2 below the median) = 10/512 <= 2.5%
    assert median_interval(values[:5]) is None  # n = 5: even the extremes miss it with probability 1/16
    assert median_interval(list(range(36))) == (11, 24)  # k = 12 of 36
    rng = random.Random(0)
    trials, covered = 4000, 0
    for _ in range(trials):  # a skewed distribution: exponential, median ln 2
        low, high = median_interval([rng.expovariate(1.0) for _ in range(9)])
        covered += low <= math.log(2) <= high
    assert 0.94 < covered / trials < 0.98  # exact coverage 1 - 2 * 10/512 = 0.961


@pytest.mark.parametrize(
    "command, flag, value, minimum",
    [
        *[("benchmark", flag, "0", 1) for flag in ("--reps", "--iters", "--batch-size", "--img-size")],
        ("benchmark", "--warmup", "-1", 0),
        ("validate", "--batch-size", "0", 1),
        ("finetune", "--workers", "-2", 0),
    ],
)
def test_counts_out_of_range_are_refused_in_one_line(command, flag, value, minimum, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, flag, value])
    err = capsys.readouterr().err.strip().splitlines()
    expected = f"eca-models {command}: error: argument {flag}(/-.)?: expected a whole number of at least {minimum}"
    assert exit_info.value.code == 2 and re.fullmatch(f"{expected}, got '{value}'", err[-1]), err[-1]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_traced_and_exported_paths_are_timed(tmp_path):
    """--trace times the FX-traced models; --runtime onnxruntime openvino adds each model exported to ONNX, in ONNX
    Runtime and in OpenVINO, timed alternately as the PyTorch modes are. (In a process of its own: OpenVINO's
    threads in the test process crashed a later fork there.)"""
    results = tmp_path / "b.json"
    args = ["benchmark", "--backbone", "mobilenetv2", "--batch-size", "2", "--img-size", "32", "--reps", "2"]
    args += ["--warmup", "0", "--trace", "--no-train", "--results-file", str(results)]
    done = run_cli(*args, "--runtime", "torch", "onnxruntime", "openvino")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "trace=True" in out and "ORT img/s" in out and "OpenVINO img/s" in out and "ONNX Runtime's CPU" in out
    report = json.loads(results.read_text())
    assert report["settings"]["runtimes"] == ["torch", "onnxruntime", "openvino"]
    assert report["settings"]["onnx_form"] == "blocked"
    for m in report["models"]:
        assert all(len(m[f"{mode}_runs"]) == 2 and m[f"{mode}_img_s"] > 0 for mode in ("infer", "ort", "ov"))
    assert report["models"][0]["ort_ratio"] == 1.0 and report["models"][1]["name"] == "eca_mobilenetv2"


def test_an_exported_runtime_alone_times_no_pytorch_mode(tmp_path, capsys):
    results = tmp_path / "b.json"
    args = ["benchmark", "--backbone", "resnet18", "--models", "eca_resnet18", "--batch-size", "2"]
    args += ["--img-size", "32", "--reps", "1", "--warmup", "0", "--runtime", "onnxruntime", "--onnx-form", "plain"]
    assert main([*args, "--results-file", str(results)]) == 0
    assert "infer img/s" not in capsys.readouterr().out
    models = json.loads(results.read_text())["models"]
    assert all(m["ort_runs"] and not m["infer_runs"] and not m["train_runs"] for m in models)
    from eca_models.benchmark import benchmark
    from eca_models.errors import UsageError

    with pytest.raises(UsageError, match=r"runtimes=\['tensorrt'\]: choose from torch, onnxruntime, openvino"):
        benchmark("mobilenetv2", runtimes=["tensorrt"])


def test_detector_against_its_plain_twin(tmp_path, capsys):
    from eca_models.cli import main

    out = tmp_path / "det.json"
    args = ["benchmark", "--detector", "retinanet_eca_resnet50_fpn", "--det-size", "64", "96", "--reps", "1"]
    assert main([*args, "--warmup", "0", "--results-file", str(out)]) == 0
    plain, ours = json.loads(out.read_text())["detectors"]
    assert plain["name"] == "retinanet_resnet50_fpn" and ours["name"] == "retinanet_eca_resnet50_fpn"
    assert round(plain["release_params"] / 1e6, 2) == round(ours["release_params"] / 1e6, 2) == 37.74
    assert ours["params"] - plain["params"] == 3 * 3 + 4 * 3 + 6 * 7 + 3 * 7  # k3377: one k-tap conv per block
    assert len(ours["runs"]) == 1 and ours["runs"][0] > 0
    assert main(["benchmark", "--detector", "yolo"]) == 2
    assert "unknown detector 'yolo'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_detector_exported_to_each_runtime_against_its_plain_twin(tmp_path):
    """--runtime times the plain and the ECA detector exported to ONNX, each runtime's ratio against its own plain
    detector (in a process of its own, for OpenVINO's threads)."""
    out = tmp_path / "det.json"
    args = ["benchmark", "--detector", "fasterrcnn_eca_resnet50_fpn", "--det-size", "96", "128", "--reps", "1"]
    done = run_cli(*args, "--warmup", "0", "--runtime", "torch", "onnxruntime", "openvino", "--results-file", str(out))
    assert done.returncode == 0, done.stderr
    detectors = json.loads(out.read_text())["detectors"]
    assert [(d["name"], d["runtime"]) for d in detectors] == [
        (name, runtime)
        for name in ("fasterrcnn_resnet50_fpn", "fasterrcnn_eca_resnet50_fpn")
        for runtime in ("torch", "onnxruntime", "openvino")
    ]
    assert all(d["runs"][0] > 0 for d in detectors)
    assert [d["ratio"] for d in detectors[:3]] == [1.0, 1.0, 1.0]
    assert "openvino" in done.stdout
