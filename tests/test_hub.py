"""The whole path from an authors' file to ``pretrained=True``, through a real HTTP Hub on loopback.

huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE when it is imported, so each
scenario runs in a fresh interpreter with those variables set, as a user's program would.
"""

import json
import socket
import time

import pytest
import timm
import torch
from conftest import ROOT, run_python
from helpers import ARCHS, LoopbackHub, authors_file_for
from huggingface_hub import constants as hf_constants

import eca_models
from eca_models.cli import main
from eca_models.conversion.imagenet import convert_checkpoint
from eca_models.files import sha256_file

ORG = "eca-models"

PIN = """
import dataclasses
from eca_models.weights import manifest
for name, sha in {pins!r}.items():  # as if published: pinned revision and checksum
    manifest._manifest()[name] = dataclasses.replace(manifest.get_checkpoint(name), revision={commit!r}, sha256=sha)
"""

LOAD_ALL = """
import os, torch, timm, eca_models
{pin}
x = torch.load({x!r})
out = {{}}
for name in {names!r}:
    model = timm.create_model(name, pretrained=True).eval()
    with torch.no_grad():
        out[name] = model(x)
if {extra!r}:  # timm's hf-hub: names and torch.hub take the same path
    a = timm.create_model("hf-hub:eca-models/eca_resnet18_k3577.in1k", pretrained=True).eval()
    b = torch.hub.load({root!r}, "eca_resnet18", source="local", pretrained=True).eval()
    with torch.no_grad():
        out["hf-hub"], out["torch.hub"] = a(x), b(x)
torch.save(out, {out!r})
"""


@pytest.fixture(scope="module")
def convert(tmp_path_factory):
    """Authors'-format files converted to Hub folders when a test first asks for one: ``convert(name)`` gives the
    folder and the source model's logits on ``convert.x`` (the quick tests need three architectures, not six)."""
    root = tmp_path_factory.mktemp("hub")
    (root / "authors").mkdir()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.save(x, root / "x.pt")
    done = {}

    def converted(name):
        if name not in done:
            src, _ = authors_file_for(name, root / "authors")
            source_model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(src))).eval()
            with torch.no_grad():
                logits = source_model(x)
            folder = root / "repos" / f"{name}.in1k"
            convert_checkpoint(src, name, folder, check_size=64, log=lambda _: None)
            done[name] = folder, logits
        return done[name]

    converted.root, converted.x = root, x
    return converted


@pytest.fixture(scope="module")
def world(convert):
    """Every architecture converted, with their logits and the manifest pinned to the converted files."""
    expected, repos = {}, {}
    for name in ARCHS:
        folder, expected[name] = convert(name)
        repos[f"{ORG}/{name}.in1k"] = folder
    pins = {f"{name}.in1k": sha256_file(folder / "model.safetensors") for name, folder in zip(ARCHS, repos.values())}
    return dict(
        root=convert.root,
        x=convert.x,
        expected=expected,
        repos=repos,
        pin=PIN.format(pins=pins, commit=LoopbackHub.COMMIT),
    )


def _load_all(world, env, names=tuple(ARCHS), tag="out", extra=False):
    out = world["root"] / f"{tag}.pt"
    code = LOAD_ALL.format(
        pin=world["pin"], x=str(world["root"] / "x.pt"), names=list(names), out=str(out), extra=extra, root=str(ROOT)
    )
    result = run_python(code, env=env)
    assert result.returncode == 0, result.stderr
    return torch.load(out)


@pytest.mark.slow
def test_convert_download_load_then_offline_from_cache(world, tmp_path):
    hub = LoopbackHub()
    hub.repos.update(world["repos"])
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "0"}
    try:
        logits = _load_all(world, env, extra=True)
    finally:
        hub.stop()
    for name in ARCHS:
        assert torch.equal(logits[name], world["expected"][name]), f"{name}: downloaded logits differ from the source's"
    assert torch.equal(logits["hf-hub"], world["expected"]["eca_resnet18_k3577"])
    assert torch.equal(logits["torch.hub"], world["expected"]["eca_resnet18_k3577"])
    assert len(list((tmp_path / "cache").glob("models--eca-models--*"))) == len(ARCHS)

    # the server is gone: the cache serves every architecture offline, and a plain call falls back to it
    logits = _load_all(world, {**env, "HF_HUB_OFFLINE": "1"}, tag="offline")
    assert all(torch.equal(logits[n], world["expected"][n]) for n in ARCHS)
    logits = _load_all(world, env, names=["eca_resnet50", "eca_mobilenetv2"], tag="down")
    assert torch.equal(logits["eca_resnet50"], world["expected"]["eca_resnet50_k3557"])
    assert torch.equal(logits["eca_mobilenetv2"], world["expected"]["eca_mobilenetv2_k13"])


CARD = """
import torch
{pin}
{snippet}
with torch.no_grad():
    torch.save(model(torch.load({x!r})), {out!r})
"""


def _card_snippet(folder) -> str:
    """The first Python block of a model card: the one a user copies."""
    card = (folder / "README.md").read_text()
    return card.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_the_model_cards_hf_hub_snippet_loads_the_release_and_a_users_repo(world, tmp_path):
    """timm.create_model('hf-hub:ORG/REPO') after import eca_models, exactly as the card writes it: for a release
    checkpoint (pinned in the manifest) and for a folder under a user's own repo (known to nothing but its config)."""
    folder = world["repos"][f"{ORG}/eca_resnet18_k3577.in1k"]
    hub = LoopbackHub()
    hub.repos.update(world["repos"])
    hub.repos["someone/eca-r18-birds"] = folder
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "0"}
    snippet = _card_snippet(folder)
    assert "timm.create_model('hf-hub:eca-models/eca_resnet18_k3577.in1k', pretrained=True)" in snippet
    try:
        for tag, code in (
            ("release", snippet),
            ("user", snippet.replace(f"{ORG}/eca_resnet18_k3577.in1k", "someone/eca-r18-birds")),
        ):
            out = tmp_path / f"{tag}.pt"
            result = run_python(
                CARD.format(pin=world["pin"], snippet=code, x=str(world["root"] / "x.pt"), out=str(out)), env=env
            )
            assert result.returncode == 0, result.stderr[-3000:]
            assert torch.equal(torch.load(out), world["expected"]["eca_resnet18_k3577"]), tag
    finally:
        hub.stop()


OFFLINE = """
import os, time, timm, torch, eca_models
start = time.perf_counter()
try:  # not published: said at once, no request
    timm.create_model("eca_resnet50", pretrained=True)
except eca_models.WeightsError as e:
    print(e, "|", time.perf_counter() - start)
{pin}
try:  # published, but nothing cached and no network
    timm.create_model("eca_resnet50", pretrained=True)
except eca_models.WeightsError as e:
    print(e)
os.environ["ECA_MODELS_WEIGHTS_DIR"] = {repos!r}
x = torch.load({x!r})
with torch.no_grad():
    torch.save({{n: timm.create_model(n, pretrained=True).eval()(x) for n in ("eca_mobilenetv2", "eca_resnet34")}}, {out!r})
"""


@pytest.mark.slow
def test_offline_nothing_cached_then_the_weights_dir_variable(world, tmp_path):
    repos, x, out = str(world["root"] / "repos"), str(world["root"] / "x.pt"), str(tmp_path / "o.pt")
    code = OFFLINE.format(pin=world["pin"], repos=repos, x=x, out=out)
    result = run_python(code, env={"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    unpublished, message = result.stdout.strip().splitlines()
    # not on the Hub, not in the cache, and HF_HUB_OFFLINE forbids fetching the authors' file: said at once
    assert unpublished.startswith("eca_resnet50_k3557.in1k is not in the cache and HF_HUB_OFFLINE forbids")
    assert "(eca-models/eca_resnet50_k3557.in1k, not published yet)" in unpublished
    assert "eca-models convert eca_resnet50_k3557.pth.tar" in unpublished
    assert float(unpublished.split("|")[-1]) < 1.0  # no retries: the manifest already knows
    assert message.startswith("no cached copy of eca-models/eca_resnet50_k3557.in1k")
    assert "eca-models convert eca_resnet50_k3557.pth.tar" in message and "ECA_MODELS_WEIGHTS_DIR" in message
    logits = torch.load(tmp_path / "o.pt")
    assert torch.equal(logits["eca_mobilenetv2"], world["expected"]["eca_mobilenetv2_k13"])
    assert torch.equal(logits["eca_resnet34"], world["expected"]["eca_resnet34_k3357"])


BAD_FILES = """
import dataclasses, json, timm, eca_models
from eca_models.weights import manifest
for name, sha in {pins!r}.items():  # as if published: pinned revision and checksum
    manifest._manifest()[name] = dataclasses.replace(manifest.get_checkpoint(name), revision={commit!r}, sha256=sha)
for label, model, repo in {cases!r}:
    kwargs = dict(pretrained_cfg_overlay=dict(hf_hub_id=repo)) if repo else {{}}
    try:
        timm.create_model(model, pretrained=True, **kwargs)
        print(json.dumps([label, "LOADED"]))
    except eca_models.WeightsError as e:
        print(json.dumps([label, str(e)]))
try:  # a raw hf-hub: id that is not there, through the package's own load
    eca_models.load("hf-hub:someone/nothing-here@v2")
except eca_models.WeightsError as e:
    print(json.dumps(["hf-hub missing", str(e)]))
"""


@pytest.fixture(scope="module")
def bad_files(convert, tmp_path_factory):
    """Every bad download at once, from one loopback Hub, in one fresh interpreter."""
    root = tmp_path_factory.mktemp("bad")
    r18, r34 = convert("eca_resnet18_k3577")[0], convert("eca_resnet34_k3357")[0]

    def variant(name, mutate):
        folder = root / name
        folder.mkdir()
        for f in r18.iterdir():
            (folder / f.name).write_bytes(f.read_bytes())
        mutate(folder / "model.safetensors")
        return folder

    def flip(p):
        data = bytearray(p.read_bytes())
        data[-100] ^= 0xFF
        p.write_bytes(bytes(data))

    hub = LoopbackHub()
    hub.repos.update(
        {
            f"{ORG}/eca_resnet18_k3577.in1k": variant("flipped", flip),
            f"{ORG}/eca_resnet34_k3357.in1k": r34,
            "test/truncated": variant("truncated", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
            "test/pickle": variant("pickle", lambda p: torch.save({"fc.weight": torch.zeros(1)}, p)),
            "test/text": variant("text", lambda p: p.write_text("<html>not a model</html>")),
        }
    )
    pins = {
        "eca_resnet18_k3577.in1k": sha256_file(r18 / "model.safetensors"),
        "eca_resnet34_k3357.in1k": sha256_file(r34 / "model.safetensors"),
    }
    cases = [
        ("flipped", "eca_resnet18_k3577", ""),
        ("flipped again", "eca_resnet18_k3577", ""),
        ("pinned good", "eca_resnet34_k3357", ""),
        ("truncated", "eca_resnet18", "test/truncated"),
        ("pickle", "eca_resnet18", "test/pickle"),
        ("text", "eca_resnet18", "test/text"),
        ("unpublished", "eca_resnet50", ""),
        ("missing", "eca_resnet50", "someone/nothing-here"),
    ]
    cache = root / "cache"
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "0"}
    try:
        result = run_python(BAD_FILES.format(pins=pins, commit=LoopbackHub.COMMIT, cases=cases), env=env)
    finally:
        hub.stop()
    assert result.returncode == 0, result.stderr
    return dict(json.loads(line) for line in result.stdout.splitlines()), cache


def test_flipped_byte_fails_the_checksum_and_is_not_used_again(bad_files):
    outcome, cache = bad_files
    for case in ("flipped", "flipped again"):  # downloaded again, refused again: the bad file was not kept
        assert "has sha256" in outcome[case] and "the manifest expects" in outcome[case]
        assert "removed from the cache and will not be used" in outcome[case]
    blobs = [
        p for p in cache.glob("models--eca-models--eca_resnet18_k3577.in1k/blobs/*") if p.stat().st_size > 1_000_000
    ]
    assert not blobs, "the bad file was left in the cache"
    assert outcome["pinned good"] == "LOADED"


def test_truncated_file_is_refused(bad_files):
    assert "is not a valid safetensors file (truncated or corrupt?)" in bad_files[0]["truncated"]


def test_non_safetensors_file_is_refused_even_if_it_is_a_torch_file(bad_files):
    assert "is not a valid safetensors file" in bad_files[0]["pickle"]
    assert "is not a valid safetensors file" in bad_files[0]["text"]


def test_missing_repo(bad_files):
    outcome = bad_files[0]
    # not on the Hub: the authors' Drive file is asked for (a closed port here), and the ways are named
    assert outcome["unpublished"].startswith("cannot reach Google Drive for eca_resnet50_k3557.in1k")
    assert "(eca-models/eca_resnet50_k3557.in1k, not published yet)" in outcome["unpublished"]
    assert "eca-models convert eca_resnet50_k3557.pth.tar" in outcome["unpublished"]
    assert outcome["missing"].startswith("someone/nothing-here@main was not found on the Hub (RepositoryNotFoundError)")
    assert outcome["hf-hub missing"] == (
        "someone/nothing-here@v2 was not found on the Hub (RepositoryNotFoundError); "
        "pass a folder holding its config.json and model.safetensors"
    )


def test_an_uncached_hf_hub_id_without_the_hub_is_one_line_at_once(monkeypatch, capsys):
    """No retries for half a minute and no huggingface_hub traceback: said before timm asks the Hub."""
    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
    start = time.monotonic()
    with pytest.raises(eca_models.WeightsError, match=r"^someone/x is not cached here .* \(no connection\): download"):
        eca_models.load("hf-hub:someone/x")
    with pytest.raises(eca_models.WeightsError, match=r"^someone/x is not cached here"):  # timm reads its config.json
        eca_models.load("hf-hub:someone/x", pretrained=False)
    assert time.monotonic() - start < 5
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["predict", "--model", "hf-hub:someone/x@v1", "x.jpg"]) == 2
    assert capsys.readouterr().err == (
        "eca-models predict: error: someone/x is not cached here and the Hub cannot be reached (HF_HUB_OFFLINE is "
        "set): download it once with a connection, or pass a folder holding its config.json and model.safetensors\n"
    )


def test_converted_folder_is_hub_ready(convert):
    folder = convert("eca_resnet50_k3557")[0]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "eca_resnet50_k3557" and config["model_args"]["kernel_sizes"] == "k3557"
    assert config["pretrained_cfg"]["crop_pct"] == 0.875 and config["pretrained_cfg"]["interpolation"] == "bilinear"
    card = (folder / "README.md").read_text()
    front = card.split("---")[1]
    for field in ("library_name: timm", "license: mit", "imagenet-1k"):
        assert field in front, field
    assert "model-index:" not in front  # nothing was measured for this file: the release's figures are in the text
    assert "Reported by the release for its eca_resnet50_k3557.pth.tar" in card and "Top-1 77.42, Top-5 93.62" in card
    for text in ("timm.create_model", "torch.hub.load", "k3557", "2^20", "multiply-accumulates", "@InProceedings"):
        assert text in card, text
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["kernel_code"] == "k3557" and meta["checkpoint"] == "eca_resnet50_k3557.in1k"
    assert meta["source_sha256"] == sha256_file(convert.root / "authors" / "eca_resnet50_k3557.pth.tar")


DETECTOR = """
import torch
from safetensors.torch import load_file
from eca_models.detection import create_detector
from eca_models.detection.legacy import LegacyBoxCoder
{pin}
model = create_detector("maskrcnn_eca_resnet50_fpn", pretrained=True)
expected = load_file({weights!r})
assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items()), "downloaded weights differ"
assert model.label_map.names[0] == "person" and isinstance(model.rpn.box_coder, LegacyBoxCoder)
print("ok", model.detector_cfg["kernel_code"])
"""


@pytest.mark.slow
def test_detector_weights_from_the_hub_pinned_and_checked(converted, tmp_path, capsys):
    from eca_models.cli import main

    folder = converted["maskrcnn"][2]
    assert main(["publish", str(folder), "--repo", f"{ORG}/maskrcnn_eca_resnet50_fpn.coco", "--dry-run"]) == 0
    assert (
        "would record revision, sha256 and size in manifest entry maskrcnn_eca_resnet50_fpn.coco"
        in capsys.readouterr().out
    )
    hub = LoopbackHub()
    hub.repos[f"{ORG}/maskrcnn_eca_resnet50_fpn.coco"] = folder
    pin = PIN.format(
        pins={"maskrcnn_eca_resnet50_fpn.coco": sha256_file(folder / "model.safetensors")}, commit=LoopbackHub.COMMIT
    )
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "0"}
    try:
        result = run_python(DETECTOR.format(pin=pin, weights=str(folder / "model.safetensors")), env=env)
    finally:
        hub.stop()
    assert result.returncode == 0 and "ok k3377" in result.stdout, result.stderr[-2000:]
    wrong = PIN.format(pins={"maskrcnn_eca_resnet50_fpn.coco": "0" * 64}, commit=LoopbackHub.COMMIT)
    result = run_python(
        DETECTOR.format(pin=wrong, weights=str(folder / "model.safetensors")), env={**env, "HF_HUB_OFFLINE": "1"}
    )
    assert result.returncode != 0 and "the manifest expects 000000000000" in result.stderr
