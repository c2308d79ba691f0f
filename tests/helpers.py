"""Test helpers: an independent reference ECA-Net, the authors' checkpoint format, a loopback Hub.

The reference is torchvision's ResNet / MobileNetV2 with a plainly written ECA layer spliced in
after the last BN of each block. It shares no code with eca_models, so agreement between the two
is evidence that both follow the paper and the authors' layout.
"""

import hashlib
import http.server
import itertools
import struct
import threading
import zlib
from pathlib import Path
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

ARCHS: Dict[str, Tuple[str, str]] = {
    # eca_models name: (torchvision builder, kernel code)
    "eca_resnet18_k3577": ("resnet18", "3577"),
    "eca_resnet34_k3357": ("resnet34", "3357"),
    "eca_resnet50_k3557": ("resnet50", "3557"),
    "eca_resnet101_k3357": ("resnet101", "3357"),
    "eca_resnet152_k3357": ("resnet152", "3357"),
    "eca_mobilenetv2_k13": ("mobilenet_v2", "13"),
}


class RefEca(nn.Module):
    """ECA exactly as eca-facts.md section 1 states it: GAP, 1D conv over channels, sigmoid, scale."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.adaptive_avg_pool2d(x, 1)  # N, C, 1, 1
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * torch.sigmoid(y)


def _splice_after(bn: nn.Module, eca: nn.Module) -> None:
    bn.register_forward_hook(lambda _m, _i, out: eca(out))


def reference_model(name: str) -> nn.Module:
    """torchvision's network with ECA spliced in, parameter names as in the authors' files."""
    builder, code = ARCHS[name]
    model = getattr(torchvision.models, builder)()
    if builder.startswith("resnet"):
        for stage, k in zip((model.layer1, model.layer2, model.layer3, model.layer4), code):
            for block in stage:
                block.eca = RefEca(int(k))
                last_bn = block.bn3 if hasattr(block, "bn3") else block.bn2
                _splice_after(last_bn, block.eca)
    else:
        model.classifier[0] = nn.Dropout(0.25)
        for block in model.features[1:18]:
            out_channels = block.conv[-1].num_features
            block.conv.append(RefEca(int(code[0]) if out_channels < 96 else int(code[1])))
    return model


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine terms, and random ECA kernels, so no layer is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.25)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, nn.Conv1d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.05)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
    return model


class Payload:
    """An object whose unpickling runs code: what weights_only=True must refuse."""

    def __reduce__(self):
        return (print, ("pickled code ran",))


def save_authors_checkpoint(state_dict: Dict[str, torch.Tensor], path: Path, arch: str = "eca_resnet50") -> Path:
    """Write a file in the authors' release format: a torch.save'd dict, ``module.`` prefixed keys."""
    torch.save(
        {
            "epoch": 100,
            "arch": arch,
            "state_dict": {f"module.{k}": v for k, v in state_dict.items()},
            "best_prec1": torch.tensor(77.42),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.0001, "momentum": 0.9, "params": [0, 1]}]},
        },
        path,
    )
    return path


def authors_file_for(name: str, folder: Path, seed: int = 0) -> Tuple[Path, nn.Module]:
    """A randomized reference model of ``name`` and its authors'-format file."""
    ref = randomize(reference_model(name), seed).eval()
    path = save_authors_checkpoint(ref.state_dict(), folder / f"{name}.pth.tar")
    return path, ref


class LoopbackServer:
    """An HTTP server on 127.0.0.1 in a thread of its own, at ``self.endpoint``, until :meth:`stop`."""

    def serve(self, handler: type, daemon_threads: bool = False) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = daemon_threads
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class LoopbackHub(LoopbackServer):
    """A minimal Hugging Face Hub on 127.0.0.1: serves files of local folders under resolve URLs.

    ``repos`` maps ``ORG/NAME`` to a folder; any revision resolves to the same files. huggingface_hub's
    own download code talks to it through ``HF_ENDPOINT``.
    """

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self) -> None:
        self.repos: Dict[str, Path] = {}
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "RepoNotFound")
                repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound")
                path = hub.repos[repo] / filename
                if not path.is_file():
                    return self._error(404, "EntryNotFound")
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("X-Repo-Commit", hub.COMMIT)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, code: int, error_code: str) -> None:
                self.send_response(code)
                self.send_header("X-Error-Code", error_code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.serve(Handler)


def ranking_checkpoint(path: Path, ranked: "list[int]", name: str = "eca_resnet18_k3577") -> Path:
    """An authors'-format file whose model ranks ``ranked`` first, in that order, for every image.

    The classifier's weight is zero and its bias orders the classes, so Top-1/Top-5 on any
    labelled set are exactly computable from the labels alone.
    """
    import timm

    model = timm.create_model(name)
    state = model.state_dict()
    state["fc.weight"] = torch.zeros_like(state["fc.weight"])
    bias = torch.full_like(state["fc.bias"], -1.0)
    for rank, cls in enumerate(ranked):
        bias[cls] = 10.0 - rank
    state["fc.bias"] = bias
    return save_authors_checkpoint(state, path)


def write_image(path: Path, seed: int, size: int = 40) -> Path:
    """A small random RGB image (format from the suffix)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(size, size, 3, generator=g) * 255).to(torch.uint8).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


class LoopbackDrive(LoopbackServer):
    """A stand-in for Google Drive's download endpoint on 127.0.0.1: ``/uc?id=<file id>`` answers as ``files`` says.

    ``files[id]`` is the file's bytes, or one of: ``"quota"`` (Drive's 'too many users' page), ``"missing"`` (404),
    ``"html"`` (another web page with status 200), ``("truncate", data)`` (a Content-Length the body never reaches),
    ``("slow", data)`` (half the body, then a pause longer than any test's read timeout). ``requests`` counts what
    was asked for. eca-models reaches it through ``ECA_MODELS_DRIVE_ENDPOINT``, with gdown as for the real Drive.
    """

    QUOTA_PAGE = (
        b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
        b'<p class="uc-error-caption">Sorry, you can\'t view or download this file at this time.</p>'
        b'<p class="uc-error-subcaption">Too many users have viewed or downloaded this file recently. Please try '
        b"accessing the file again later.</p></body></html>"
    )

    def __init__(self) -> None:
        self.files: Dict[str, object] = {}
        self.requests: list = []
        drive = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                from urllib.parse import parse_qs, urlparse

                query = parse_qs(urlparse(self.path).query)
                file_id = query.get("id", [""])[0]
                drive.requests.append(file_id)
                answer = drive.files.get(file_id, "missing")
                if answer == "missing":
                    return self._send(404, b"<html><body>Not Found</body></html>", "text/html")
                if answer == "quota":
                    return self._send(200, drive.QUOTA_PAGE, "text/html; charset=utf-8")
                if answer == "html":
                    return self._send(200, b"<!DOCTYPE html><html><body>Sign in to continue</body></html>", "text/html")
                if isinstance(answer, tuple):
                    kind, data = answer
                    self.send_response(200)
                    self.send_header("Content-Type", "application/octet-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    if kind == "slow":
                        import time

                        time.sleep(30)
                    return None  # the connection closes short of Content-Length
                return self._send(200, answer, "application/octet-stream")

            def _send(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.serve(Handler, daemon_threads=True)


RANKED = [500, 3, 250, 42, 900]  # what `ranking_checkpoint`'s controlled checkpoint predicts, best first
FAST_64 = ["--workers", "0", "--batch-size", "4", "--img-size", "64"]


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


def fault_at(monkeypatch, step: int, fault: BaseException) -> None:
    """Raise ``fault`` in the run's process as its ``step``-th training step begins (counted over the run), as a
    process killed there, or a Ctrl-C there, would stop it."""
    from eca_models.training import runner

    calls, real = itertools.count(1), runner.autocast_for

    def autocast_for(*args, **kwargs):
        if next(calls) == step:
            raise fault
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "autocast_for", autocast_for)
