"""The whole path from an authors' file to ``pretrained=True``, through a real HTTP Hub on loopback.

huggingface_hub reads HF_ENDPOINT, HF_HUB_CACHE and HF_HUB_OFFLINE when it is imported, so each
scenario runs in a fresh interpreter with those variables set, as a user's program would.
"""

import json
import textwrap

import pytest
import timm
import torch
from conftest import ROOT, run_python
from helpers import ARCHS, LoopbackHub, authors_file_for

from eca_models._files import sha256_file
from eca_models.weights.convert import convert_checkpoint

ORG = "eca-models"

LOAD_ALL = """
import json, sys, torch, timm, eca_models
x = torch.load(sys.argv[1] if len(sys.argv) > 1 else {x!r})
out = {{}}
for name in {names!r}:
    model = timm.create_model(name, pretrained=True).eval()
    with torch.no_grad():
        out[name] = model(x)
torch.save(out, {out!r})
print("loaded", len(out))
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Authors'-format files of every architecture, converted to Hub folders, with their logits."""
    root = tmp_path_factory.mktemp("hub")
    (root / "authors").mkdir()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    torch.save(x, root / "x.pt")
    expected, repos = {}, {}
    for name in ARCHS:
        src, _ = authors_file_for(name, root / "authors")
        source_model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(src))).eval()
        with torch.no_grad():
            expected[name] = source_model(x)
        folder = root / "repos" / f"{name}.in1k"
        convert_checkpoint(src, name, folder, check_size=64, log=lambda _: None)
        repos[f"{ORG}/{name}.in1k"] = folder
    return dict(root=root, x=x, expected=expected, repos=repos)


def _load_all(world, env, names=tuple(ARCHS), tag="out"):
    out = world["root"] / f"{tag}.pt"
    code = LOAD_ALL.format(x=str(world["root"] / "x.pt"), names=list(names), out=str(out))
    return run_python(code, env=env), out


def test_convert_download_load_then_offline_from_cache(world, tmp_path):
    hub = LoopbackHub()
    hub.repos.update(world["repos"])
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "0"}
    try:
        result, out = _load_all(world, env)
        assert result.returncode == 0, result.stderr
        logits = torch.load(out)
        for name in ARCHS:
            assert torch.equal(logits[name], world["expected"][name]), f"{name}: downloaded logits differ"
        assert len(list((tmp_path / "cache").glob("models--eca-models--*"))) == len(ARCHS)

        # timm's hf-hub: names and torch.hub take the same path
        code = textwrap.dedent(f"""
            import torch, timm, eca_models
            x = torch.load({str(world["root"] / "x.pt")!r})
            a = timm.create_model('hf-hub:{ORG}/eca_resnet18_k3577.in1k', pretrained=True).eval()
            b = torch.hub.load({str(ROOT)!r}, 'eca_resnet18', source='local', pretrained=True).eval()
            with torch.no_grad():
                torch.save([a(x), b(x)], {str(tmp_path / "hf.pt")!r})
            print(type(a).__name__, a.kernel_code)
        """)
        result = run_python(code, env=env)
        assert result.returncode == 0, result.stderr
        assert "EcaResNet k3577" in result.stdout
        for logits in torch.load(tmp_path / "hf.pt"):
            assert torch.equal(logits, world["expected"]["eca_resnet18_k3577"])
    finally:
        hub.stop()

    # the server is gone: the cache serves, with and without HF_HUB_OFFLINE
    for offline in ("0", "1"):
        result, out = _load_all(world, {**env, "HF_HUB_OFFLINE": offline}, tag=f"cached{offline}")
        assert result.returncode == 0, result.stderr
        logits = torch.load(out)
        assert all(torch.equal(logits[n], world["expected"][n]) for n in ARCHS)


def test_offline_with_nothing_cached_says_how_to_supply_weights(world, tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    result, _ = _load_all(world, env, names=["eca_resnet50"])
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "WeightsError: no cached copy of eca-models/eca_resnet50_k3557.in1k" in last
    assert "eca-models convert eca_resnet50_k3557.pth.tar" in last and "ECA_MODELS_WEIGHTS_DIR" in last


def test_weights_dir_variable_supplies_converted_folders(world, tmp_path):
    env = {"ECA_MODELS_WEIGHTS_DIR": str(world["root"] / "repos"), "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    result, out = _load_all(world, env, names=["eca_mobilenetv2", "eca_resnet34"], tag="dir")
    assert result.returncode == 0, result.stderr
    logits = torch.load(out)
    assert torch.equal(logits["eca_mobilenetv2"], world["expected"]["eca_mobilenetv2_k13"])
    assert torch.equal(logits["eca_resnet34"], world["expected"]["eca_resnet34_k3357"])


BAD_FILE = """
import dataclasses, sys, timm, eca_models
from eca_models.weights import manifest
name = 'eca_resnet18_k3577.in1k'
if {pin!r}:  # as if published: pinned revision and checksum
    manifest._manifest()[name] = dataclasses.replace(manifest.get_checkpoint(name), revision={commit!r}, sha256={pin!r})
for attempt in range({attempts}):
    try:
        timm.create_model({model!r}, pretrained=True, **{kwargs!r})
        print('LOADED')
    except eca_models.WeightsError as e:
        print('ERROR', e)
"""


def _serve_bad(world, tmp_path, mutate, pin="", attempts=1, model="eca_resnet18_k3577", kwargs=None):
    good = world["repos"][f"{ORG}/eca_resnet18_k3577.in1k"]
    bad = tmp_path / "bad"
    bad.mkdir(parents=True, exist_ok=True)
    for f in good.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    mutate(bad / "model.safetensors")
    hub = LoopbackHub()
    hub.repos[f"{ORG}/eca_resnet18_k3577.in1k"] = bad
    env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "0"}
    code = BAD_FILE.format(pin=pin, commit=LoopbackHub.COMMIT, attempts=attempts, model=model, kwargs=kwargs or {})
    try:
        result = run_python(code, env=env)
    finally:
        hub.stop()
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines(), tmp_path / "cache"


def test_truncated_file_is_refused(world, tmp_path):
    lines, _ = _serve_bad(world, tmp_path, lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]))
    assert lines[-1].startswith("ERROR") and "is not a valid safetensors file (truncated or corrupt?)" in lines[-1]


def test_flipped_byte_fails_the_checksum_and_is_not_used_again(world, tmp_path):
    good = world["repos"][f"{ORG}/eca_resnet18_k3577.in1k"] / "model.safetensors"

    def flip(p):
        data = bytearray(p.read_bytes())
        data[-100] ^= 0xFF
        p.write_bytes(bytes(data))

    lines, cache = _serve_bad(world, tmp_path, flip, pin=sha256_file(good), attempts=2)
    assert len(lines) == 2 and all(line.startswith("ERROR") for line in lines)
    assert "the manifest expects" in lines[0] and "removed from the cache and will not be used" in lines[0]
    assert not [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size > 1_000_000], "bad blob left in cache"
    # the same pin with the good file served: accepted
    lines, _ = _serve_bad(world, tmp_path / "ok", lambda p: None, pin=sha256_file(good))
    assert lines == ["LOADED"]


def test_non_safetensors_file_is_refused_even_if_it_is_a_torch_file(world, tmp_path):
    def as_pickle(p):
        torch.save({"fc.weight": torch.zeros(1)}, p)

    lines, _ = _serve_bad(world, tmp_path, as_pickle)
    assert lines[-1].startswith("ERROR") and "is not a valid safetensors file" in lines[-1]
    lines, _ = _serve_bad(world, tmp_path / "text", lambda p: p.write_text("<html>not a model</html>"))
    assert lines[-1].startswith("ERROR") and "is not a valid safetensors file" in lines[-1]


def test_missing_repo(world, tmp_path):
    lines, _ = _serve_bad(world, tmp_path, lambda p: None, model="eca_resnet50")
    assert lines[-1].startswith("ERROR eca-models/eca_resnet50_k3557.in1k@main is not published on the Hub yet")
    kwargs = {"pretrained_cfg_overlay": {"hf_hub_id": "someone/nothing-here"}}
    lines, _ = _serve_bad(world, tmp_path / "b", lambda p: None, model="eca_resnet50", kwargs=kwargs)
    assert lines[-1].startswith("ERROR someone/nothing-here@main was not found on the Hub (RepositoryNotFoundError)")


def test_converted_folder_is_hub_ready(world):
    folder = world["repos"][f"{ORG}/eca_resnet50_k3557.in1k"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "eca_resnet50_k3557" and config["model_args"]["kernel_sizes"] == "k3557"
    assert config["pretrained_cfg"]["crop_pct"] == 0.875 and config["pretrained_cfg"]["interpolation"] == "bilinear"
    card = (folder / "README.md").read_text()
    front = card.split("---")[1]
    for field in ("library_name: timm", "license: mit", "imagenet-1k", "model-index:", "value: 77.42", "value: 93.62"):
        assert field in front, field
    for text in ("timm.create_model", "torch.hub.load", "k3557", "2^20", "multiply-accumulates", "@InProceedings"):
        assert text in card, text
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert meta["kernel_code"] == "k3557" and meta["checkpoint"] == "eca_resnet50_k3557.in1k"
    assert meta["source_sha256"] == sha256_file(world["root"] / "authors" / "eca_resnet50_k3557.pth.tar")
