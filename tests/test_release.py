"""The release's checkpoints in one call, against a stand-in for Google Drive on loopback (LoopbackDrive): fetched
once with gdown, checked, converted and cached; loaded again with no request; every failure one line and the cache
as it was. The files are written here in the authors' formats (torch's legacy serialization, as PyTorch 1.0/1.1
wrote them, and the zip one) with random weights."""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from conftest import ROOT
from helpers import LoopbackDrive, Payload, randomize, reference_model, write_image

from eca_models.cli import main
from eca_models.weights import get_checkpoint

R18 = get_checkpoint("eca_resnet18_k3577.in1k")
MOBILE = get_checkpoint("eca_mobilenetv2_k13.in1k")
FASTER = get_checkpoint("fasterrcnn_eca_resnet50_fpn.coco")


def _authors_bytes(state, legacy: bool = True, **extra) -> bytes:
    buffer = io.BytesIO()
    obj = {"epoch": 100, "arch": "resnet", "state_dict": {f"module.{k}": v for k, v in state.items()}, **extra}
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A loopback Drive serving the release-format files of ResNet-18 (legacy), MobileNetV2 (zip) and the
    Faster R-CNN-50 (mmdetection v1, legacy); the reference models they came from."""
    from detection_helpers import write_mmdet_checkpoint

    drive = LoopbackDrive()
    r18 = randomize(reference_model("eca_resnet18_k3577"), seed=3).eval()
    mobile = randomize(reference_model("eca_mobilenetv2_k13"), seed=4).eval()
    drive.files[R18.release["drive_id"]] = _authors_bytes(r18.state_dict(), legacy=True)
    drive.files[MOBILE.release["drive_id"]] = _authors_bytes(mobile.state_dict(), legacy=False)
    root = tmp_path_factory.mktemp("release")
    src, _ = write_mmdet_checkpoint(root / "faster.pth", "fasterrcnn", kernel_sizes=(5, 5, 5, 5), seed=7)
    faster = torch.load(src, weights_only=True)
    buffer = io.BytesIO()
    torch.save(faster, buffer, _use_new_zipfile_serialization=False)
    drive.files[FASTER.release["drive_id"]] = buffer.getvalue()
    yield dict(drive=drive, r18=r18, mobile=mobile, root=root)
    drive.stop()


@pytest.fixture
def cache(served, tmp_path, monkeypatch):
    """An empty cache and the loopback Drive as the endpoint, for this test."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("ECA_MODELS_DRIVE_ENDPOINT", served["drive"].endpoint)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "hf" / "eca-models"


def _files_under(folder: Path):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _one_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith(f"eca-models {command}: error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def test_pretrained_fetches_once_then_loads_from_the_cache_offline(served, cache, monkeypatch, capsys):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    before = list(served["drive"].requests)
    model = timm.create_model("eca_resnet18", pretrained=True).eval()
    with torch.no_grad():
        assert torch.allclose(model(x), served["r18"](x), atol=1e-5)
    assert served["drive"].requests[len(before) :] == [R18.release["drive_id"]]
    (folder,) = (cache / R18.name).iterdir()
    provenance = json.loads((folder / "config.json").read_text())["provenance"]
    assert provenance["source"] == "google-drive" and provenance["file_id"] == R18.release["drive_id"]
    assert folder.name == provenance["sha256"] and provenance["size"] == len(
        served["drive"].files[R18.release["drive_id"]]
    )
    assert provenance["converter"].startswith("eca-models ") and provenance["fetched"][:4].isdigit()
    assert not (cache / R18.name / R18.release["file_name"]).exists()  # the pickle is deleted after conversion
    capsys.readouterr()

    # the second time: no request at all, the Drive unreachable and HF_HUB_OFFLINE set
    monkeypatch.setenv("ECA_MODELS_DRIVE_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    asked = len(served["drive"].requests)
    for loaded in (
        timm.create_model("eca_resnet18_k3577", pretrained=True),
        torch.hub.load(str(ROOT), "eca_resnet18", source="local", pretrained=True),
    ):
        with torch.no_grad():
            assert torch.equal(loaded.eval()(x), model(x))
    image = write_image(cache.parent / "a.png", seed=1, size=64)
    assert main(["predict", str(image), "--model", "eca_resnet18", "--top-k", "1"]) == 0
    out = cache.parent / "m.pt"
    assert (
        main(["export", "--model", "eca_resnet18", "--format", "torchscript", "--out", str(out), "--img-size", "64"])
        == 0
    )
    assert len(served["drive"].requests) == asked
    capsys.readouterr()
    assert main(["list", "eca_resnet18*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["weights"] for r in rows} == {"cached"} and rows[0]["weights_source"].startswith("google-drive, 20")


def test_a_detector_from_the_authors_file(served, cache):
    from eca_models.detection import create_detector

    model = create_detector("fasterrcnn_eca_resnet50_fpn", pretrained=True)
    assert model.detector_cfg["kernel_code"] == "k5555" and len(model.label_map.names) == 80
    assert model.detector_cfg["legacy_coordinates"]  # the release's mmdetection v1 box conventions
    (folder,) = (cache / FASTER.name).iterdir()
    assert json.loads((folder / "config.json").read_text())["provenance"]["file_name"] == FASTER.release["file_name"]


@pytest.mark.slow
def test_download_all_on_three_stand_in_entries(served, cache, tmp_path):
    manifest = json.loads((ROOT / "eca_models" / "weights" / "manifest.json").read_text())
    keep = (R18.name, MOBILE.name, FASTER.name)
    manifest["checkpoints"] = {k: v for k, v in manifest["checkpoints"].items() if k in keep}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    env = {**os.environ, "ECA_MODELS_MANIFEST": str(tmp_path / "manifest.json")}
    command = [sys.executable, "-m", "eca_models.cli", "download", "--all", "--to", str(tmp_path / "weights")]
    first = subprocess.run([*command, "--keep-original"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count(": fetched ") == 3
    for name in keep:
        assert (tmp_path / "weights" / name / "model.safetensors").is_file()
        assert (cache / name / get_checkpoint(name).release["file_name"]).is_file()  # --keep-original
    asked = len(served["drive"].requests)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count(": cached ") == 3
    assert len(served["drive"].requests) == asked  # nothing fetched the second time


def _with_kernels(state, sizes):
    """``state`` with the ECA kernels of the stages in ``sizes`` of another size: a file of another kernel code."""
    return {
        k: torch.zeros(1, 1, sizes[k.split(".")[0]])
        if k.endswith("eca.conv.weight") and k.split(".")[0] in sizes
        else v
        for k, v in state.items()
    }


def _serve(served, ckpt, answer):
    served["drive"].files[ckpt.release["drive_id"]] = answer


@pytest.mark.parametrize(
    "case, says",
    [
        ("quota", "too many users have downloaded it recently"),
        ("missing", "HTTP 404"),
        ("html", "web page, not the checkpoint"),
        ("truncate", "download of eca_resnet18_k3577.pth.tar failed"),
        ("slow", "stalled (no data for 1 s)"),
        ("other kernel code", "this checkpoint is k3357"),
        ("pickled code", "pickled code"),
        ("ten classes", "10 classes"),
        ("timeout 0", "ECA_MODELS_DRIVE_TIMEOUT='0': expected a number of seconds above 0"),  # requests' ValueError
        ("timeout nan", "ECA_MODELS_DRIVE_TIMEOUT='nan': expected"),  # no timeout at all
        (
            "endpoint",
            "ECA_MODELS_DRIVE_ENDPOINT='127.0.0.1:9': expected an http:// or https:// address",
        ),  # not 'run again'
    ],
)
def test_every_failure_is_one_line_and_leaves_the_cache_as_it_was(served, cache, monkeypatch, capsys, case, says):
    monkeypatch.setenv("ECA_MODELS_DRIVE_TIMEOUT", case.split()[1] if case.startswith("timeout") else "1")
    good = served["drive"].files[R18.release["drive_id"]]
    answers = {
        "quota": "quota",
        "missing": "missing",
        "html": "html",
        "truncate": ("truncate", good),
        "slow": ("slow", good),
        "other kernel code": _authors_bytes(_with_kernels(served["r18"].state_dict(), {"layer2": 3, "layer3": 5})),
        "pickled code": _authors_bytes({}, code=Payload()),
        "ten classes": _authors_bytes(
            {**served["r18"].state_dict(), "fc.weight": torch.zeros(10, 512), "fc.bias": torch.zeros(10)}
        ),
    }
    if case == "endpoint":
        monkeypatch.setenv("ECA_MODELS_DRIVE_ENDPOINT", "127.0.0.1:9")
    try:
        _serve(served, R18, answers.get(case, good))
        assert main(["download", "eca_resnet18_k3577"]) == 2
        err = _one_line(capsys, "download")
        assert says in err, err
        if case == "quota":
            assert "Baidu https://pan.baidu.com/s/1Bh9J7VY2tYj5oEvEEqvdhQ (extract code utsy)" in err
        if case == "missing":  # the link that answered 404 is not offered again
            assert "drive.google.com" not in err and "Baidu https://pan.baidu.com/" in err
        assert _files_under(cache) == []  # nothing half-written, not even an empty folder
    finally:
        _serve(served, R18, good)


@pytest.mark.slow
def test_a_file_other_than_the_pinned_one_is_refused(served, cache, tmp_path, monkeypatch, capsys):
    manifest = json.loads((ROOT / "eca_models" / "weights" / "manifest.json").read_text())
    manifest["checkpoints"][R18.name]["release"]["sha256"] = "0" * 64
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    env = {**os.environ, "ECA_MODELS_MANIFEST": str(tmp_path / "manifest.json")}
    result = subprocess.run(
        [sys.executable, "-m", "eca_models.cli", "download", "eca_resnet18"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "the manifest pins 000000000000" in result.stderr
    assert _files_under(cache) == []


def test_offline_and_hub_only_say_at_once_what_is_missing_and_the_ways(served, cache, monkeypatch, capsys):
    asked = len(served["drive"].requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    assert main(["download", "eca_mobilenetv2"]) == 2
    err = _one_line(capsys, "download")
    assert "HF_HUB_OFFLINE" in err and "https://drive.google.com/uc?id=" + MOBILE.release["drive_id"] in err
    assert "Baidu " + MOBILE.release["baidu_url"] in err and "extract code atpt" in err and "--checkpoint DIR" in err
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("ECA_MODELS_SOURCES", "hub")
    with pytest.raises(Exception, match="not published on the Hub yet"):
        timm.create_model("eca_mobilenetv2", pretrained=True)
    assert main(["download", "eca_mobilenetv2", "--source", "hub"]) == 2
    assert "not published on the Hub yet" in _one_line(capsys, "download")
    (cache.parent / "weights").mkdir(parents=True)
    has_none = f"has no {MOBILE.name}/model.safetensors"
    for where, why in ((cache.parent / "nowhere", "is not a folder"), (cache.parent / "weights", has_none)):
        monkeypatch.setenv("ECA_MODELS_WEIGHTS_DIR", str(where))  # set, yet it supplies nothing: the line says why
        assert main(["download", "eca_mobilenetv2", "--source", "hub"]) == 2
        assert _one_line(capsys, "download").endswith(f"(it is set to {where}, which {why})")
    monkeypatch.delenv("ECA_MODELS_WEIGHTS_DIR")
    assert main(["list", "eca_mobilenetv2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["weights"] == "not published"
    assert time.perf_counter() - start < 10 and len(served["drive"].requests) == asked


def _interrupt_when(cache: Path, seen: str) -> str:
    """Run `eca-models download eca_resnet18`, press Ctrl-C once a path containing ``seen`` is in the cache."""
    env = {**os.environ, "ECA_MODELS_DRIVE_TIMEOUT": "60"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "eca_models.cli", "download", "eca_resnet18"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not any(seen in p for p in _files_under(cache)):
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "eca-models download: interrupted" in err, err[-2000:]
    return err


@pytest.mark.slow
def test_ctrl_c_during_download_or_conversion_exits_130_and_the_next_call_starts_clean(served, cache):
    good = served["drive"].files[R18.release["drive_id"]]
    _serve(served, R18, ("slow", good))
    try:
        _interrupt_when(cache, ".part")  # gdown's partial file: in the middle of the body
    finally:
        _serve(served, R18, good)
    assert _files_under(cache) == []
    _interrupt_when(cache, "converted")  # the conversion's folder is being written or checked
    assert _files_under(cache) == []
    assert main(["download", "eca_resnet18"]) == 0
    assert len(list((cache / R18.name).iterdir())) == 1


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_leaves_the_cache_as_it_was(served, cache):
    """A write the file system refuses (here a file-size limit of 1 MiB on the process: EFBIG, as ENOSPC would be)."""
    import resource

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    result = subprocess.run(
        [sys.executable, "-m", "eca_models.cli", "download", "eca_resnet18"],
        env=dict(os.environ), capture_output=True, text=True, preexec_fn=limit, timeout=300,
    )  # fmt: skip
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
    assert "could not write eca_resnet18_k3577.in1k into the cache" in errors[0] and "File too large" in errors[0]
    assert _files_under(cache) == []


def test_publish_all_cached_records_the_hub_pin_and_the_original(served, cache, tmp_path):
    from eca_models.weights import fetch_weights
    from eca_models.weights.manifest import load_manifest
    from eca_models.weights.publish import publish_cached

    fetch_weights(MOBILE)
    manifest = tmp_path / "manifest.json"
    manifest.write_text((ROOT / "eca_models" / "weights" / "manifest.json").read_text())
    uploads = []

    def upload(folder, repo_id, message):  # stands in for the network step only
        uploads.append((folder, repo_id))
        return "c" * 40

    published = publish_cached(manifest_path=manifest, upload=upload, log=lambda _: None)
    assert published == [MOBILE.name] and uploads[0][1] == MOBILE.hf_hub_id
    entry = load_manifest(manifest)[MOBILE.name]
    provenance = json.loads((uploads[0][0] / "config.json").read_text())["provenance"]
    assert entry.is_published and entry.revision == "c" * 40
    assert entry.release["sha256"] == provenance["sha256"] and entry.release["size"] == provenance["size"]
    assert entry.release["drive_id"] == MOBILE.release["drive_id"]


def test_download_checkpoints_from_python(served, cache, tmp_path):
    from eca_models import download_checkpoints

    lines = []
    (fetched,) = download_checkpoints(["eca_resnet18"], to=tmp_path / "weights", log=lines.append)
    assert fetched.checkpoint == R18.name and fetched.state == "fetched" and any("fetched" in line for line in lines)
    assert (tmp_path / "weights" / R18.name / "model.safetensors").is_file()
    (again,) = download_checkpoints([R18.name])
    assert again.state == "cached"


def test_a_damaged_cache_entry_is_fetched_again(served, cache):
    """A truncated model.safetensors in the cache (a disk error, a copy cut short) is not used: the next call
    fetches the file again and replaces the entry."""
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    timm.create_model("eca_resnet18", pretrained=True)
    (folder,) = (cache / R18.name).iterdir()
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    asked = len(served["drive"].requests)
    model = timm.create_model("eca_resnet18", pretrained=True).eval()
    with torch.no_grad():
        assert torch.allclose(model(x), served["r18"](x), atol=1e-5)
    assert served["drive"].requests[asked:] == [R18.release["drive_id"]]
    assert [p.name for p in (cache / R18.name).iterdir()] == [folder.name]


def test_two_fetches_of_one_checkpoint_take_turns(served, cache, monkeypatch):
    """Two downloads of one checkpoint at once (two threads here; two processes alike): the second waits for the
    first's lock, then finds its conversion and downloads nothing."""
    import threading

    from eca_models.weights import fetch_weights, release

    real, start = release._download, threading.Barrier(2)

    def slow_download(*args):
        result = real(*args)
        time.sleep(1.0)  # the other fetch has surely started by now
        return result

    monkeypatch.setattr(release, "_download", slow_download)
    asked, found = len(served["drive"].requests), []

    def fetch():
        start.wait()
        found.append(fetch_weights(R18, log=lambda _: None).folder)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert served["drive"].requests[asked:] == [R18.release["drive_id"]]
    assert len(found) == 2 and found[0] == found[1]


def test_a_cache_that_cannot_be_written_says_so(served, cache, monkeypatch):
    """A read-only HF_HOME (root ignores permissions, so the refusal is injected) is named as such, not as a full
    disk."""
    import errno

    from eca_models.weights import WeightsError, fetch_weights

    def refuse(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(WeightsError) as e:
        fetch_weights(R18, log=lambda _: None)
    assert "(Permission denied): set HF_HOME to a folder you can write" in str(e.value)
    assert "free some space" not in str(e.value) and len(str(e.value).splitlines()) == 1
