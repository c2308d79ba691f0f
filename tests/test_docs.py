"""The docs: every Python sample runs, every command line parses, and the site builds strictly."""

import json
import re
import shlex
import shutil
import statistics
import subprocess
import sys

import pytest
import timm
from conftest import ROOT
from helpers import LoopbackDrive, save_authors_checkpoint

from eca_models.benchmark import median_interval
from eca_models.cli import build_parser

PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.S | re.M)
# samples that run a job end to end (the deploy guide exports a detector and checks it on two real-sized images,
# about 25 s): CI's slow step runs them
END_TO_END = {"deploy.md"}


def _blocks(page, lang):
    return [code for kind, code in FENCE.findall(page.read_text()) if kind == lang]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, converted):
    """What the samples assume is at hand: an authors'-format file, a converted detector folder, torch.hub's
    repo at '.', and the release's ResNet-50 fetched once into the cache (from a loopback stand-in for Drive, the
    file being the authors'-format one), so that the samples load it offline as a user's second call does."""
    from eca_models.weights import fetch_weights, get_checkpoint

    folder = tmp_path_factory.mktemp("docs")
    shutil.copytree(converted["maskrcnn"][2], folder / "maskrcnn-eca50")
    src = save_authors_checkpoint(
        timm.create_model("eca_resnet50_k3557").state_dict(), folder / "eca_resnet50_k3557.pth.tar"
    )
    shutil.copy(ROOT / "hubconf.py", folder / "hubconf.py")
    ckpt = get_checkpoint("eca_resnet50_k3557.in1k")
    drive = LoopbackDrive()
    drive.files[ckpt.release["drive_id"]] = src.read_bytes()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("HF_HOME", str(folder / "hf"))
        env.setenv("ECA_MODELS_DRIVE_ENDPOINT", drive.endpoint)
        fetch_weights(ckpt, log=lambda _: None)
    drive.stop()
    return folder


@pytest.mark.parametrize(
    "page",
    [pytest.param(p, marks=[pytest.mark.slow] if p.name in END_TO_END else []) for p in PAGES if _blocks(p, "python")],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_python_samples_run(page, workdir, monkeypatch):
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(workdir / "hf"))
    namespace = {"__name__": f"docs_{page.stem}"}
    for n, code in enumerate(_blocks(page, "python")):
        exec(compile(code, f"{page.name}[{n}]", "exec"), namespace)  # noqa: S102 - the docs' own samples


def _command_lines(code):
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["eca-models"]:
            yield words[1:]
        elif "eca_models.cli" in words:
            yield words[words.index("eca_models.cli") + 1 :]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_command_lines_parse(page):
    parser = build_parser()
    for words in (w for code in _blocks(page, "bash") for w in _command_lines(code)):
        parser.parse_args(words)  # exits (fails the test) on a flag or command that does not exist


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    zoo = (tmp_path / "site" / "zoo" / "index.html").read_text()
    assert "25,557,112" in zoo and "eca_mobilenetv2_k13.in1k" in zoo and "not published yet" in zoo
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "EcaResNet" in api
    for markup in (":class:", ":func:", ":mod:", ":data:", "Example::"):  # reST the Markdown pages would print raw
        assert markup not in api, markup


def _table_rows(text: str, first_cell: str):
    """The rows of the markdown table whose header starts with ``first_cell``, as lists of cells."""
    return _tables(text, first_cell)[0][0]


def _tables(text: str, first_cell: str):
    """Every markdown table whose header starts with ``first_cell``: (rows as lists of cells, the text after it)."""
    tables = []
    for start in [m.start() for m in re.finditer(re.escape(f"| {first_cell} |"), text)]:
        lines = text[start:].splitlines()
        rows = []
        for line in lines[2:]:
            if not line.startswith("|"):
                break
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        tables.append((rows, "\n".join(lines[2 + len(rows) :])))
    return tables


def _linked_results(cells):
    """The raw results a table row links to in its first cell."""
    return _results_at(cells[0])


JSON_LINK = re.compile(r"\]\((assets/[^)]+\.json)\)")


def _first_link(text: str) -> str:
    """The first link to a JSON file under docs/assets in ``text``."""
    return JSON_LINK.search(text).group(1)


def _results(path: str):
    """The raw results at ``path``, relative to docs/."""
    return json.loads((ROOT / "docs" / path).read_text())


def _results_at(text: str):
    """The raw results of the first link to a JSON file under docs/assets in ``text``."""
    return _results(_first_link(text))


def _paired(model, base, mode: str):
    """``model``'s images/s over ``base``'s within each recorded repetition of ``mode`` (infer or train)."""
    return [a / b for a, b in zip(model[f"{mode}_runs"], base[f"{mode}_runs"])]


def _median_and_interval(ratios) -> str:
    """A ratio as the page writes it: the median, then its 95% interval in brackets."""
    low, high = median_interval(ratios)
    return f"{statistics.median(ratios):.3f} ({low:.3f}-{high:.3f})"


def test_performance_page_figures_are_the_recorded_ones():
    """Every figure of docs/performance.md's per-model tables, and every ratio of its table of runs, is
    recomputed from the raw results each links to (the paired statistic of eca_models.benchmark over the
    recorded repetitions)."""
    page = (ROOT / "docs" / "performance.md").read_text()
    tables = _tables(page, "model | params")
    assert len(tables) >= 4
    for rows, after in tables:
        models = {m["name"]: m for m in _results_at(after)["models"]}
        assert [cells[0] for cells in rows] == list(models)
        base = next(iter(models.values()))
        for cells in rows:
            m = models[cells[0]]
            assert cells[1] == f"{m['params']:,}" and cells[3] == f"{m['gmacs']:.3f}"
            assert [cells[4], cells[8]] == [f"{m['infer_img_s']:.1f}", f"{m['train_img_s']:.1f}"], cells[0]
            for cell, mode in ((cells[6], "infer"), (cells[10], "train")):
                ratios = _paired(m, base, mode)
                # the plain model's ratio is 1 by definition, and shown without an interval
                expected = f"{statistics.median(ratios):.3f}" if m is base else _median_and_interval(ratios)
                assert cell == expected, (cells[0], mode)

    def ratio(model, base, mode):
        ratios = _paired(model, base, mode)
        return f"{statistics.median(ratios):.3f}" if ratios else "-"

    rows = _table_rows(page, "run | settings") + _table_rows(page, "compiled run | settings")
    assert len(rows) >= 12
    for cells in rows:
        run = {m["name"]: m for m in _linked_results(cells)["models"]}
        base, ours, timms = run["resnet50"], run["eca_resnet50"], run["timm_eca_resnet50"]
        expected = [ratio(ours, base, "infer"), ratio(timms, base, "infer")]
        expected += [ratio(ours, base, "train"), ratio(timms, base, "train")]
        assert cells[2:6] == expected, cells[0]


def test_pooled_runs_are_recomputed_from_theirs():
    """The performance page's pooled figures: the median of the paired ratios of every repetition of the runs
    a row links to, with its 95% interval, and the number of repetitions (inference / training)."""
    page = (ROOT / "docs" / "performance.md").read_text()
    rows = _table_rows(page, "pooled runs | repetitions")
    assert len(rows) >= 2
    for cells in rows:
        paths = JSON_LINK.findall(cells[0])
        assert len(paths) >= 2
        ratios = {(name, mode): [] for mode in ("infer", "train") for name in ("eca_resnet50", "timm_eca_resnet50")}
        for path in paths:
            run = {m["name"]: m for m in _results(path)["models"]}
            for (name, mode), values in ratios.items():
                values += _paired(run[name], run["resnet50"], mode)
        expected = [f"{len(ratios['eca_resnet50', 'infer'])} / {len(ratios['eca_resnet50', 'train'])}"]
        expected += [_median_and_interval(values) for values in ratios.values()]
        assert cells[1:6] == expected, cells[0]
    # the summary at the top of the page repeats the pooled figures
    summary = {cells[0]: cells[1:] for cells in _table_rows(page, "speed against the plain ResNet-50")}
    default, kept = rows[0], rows[1]
    assert summary["our ECA-ResNet-50, the command's pooled runs"] == [default[2], default[4]]
    assert summary["timm's ECA path, the command's pooled runs"] == [default[3], default[5]]
    assert summary["our ECA-ResNet-50, the same with memory kept"] == [kept[2], f"{kept[4]}, one run"]
    [compiled_rows] = [
        rows for rows, after in _tables(page, "model | params") if _first_link(after).endswith("compile.json")
    ]
    compiled = {cells[0]: cells for cells in compiled_rows}["eca_resnet50"]
    assert summary["our ECA-ResNet-50 under `torch.compile`, one run"] == [compiled[6], compiled[10]]


def test_gate_cost_figures_are_the_recorded_ones():
    """docs/performance.md's whole-network gate-cost table, recomputed from the runs committed beside it."""
    page = (ROOT / "docs" / "performance.md").read_text()
    rows = _table_rows(page, "run | resnet50 (copy)")
    assert len(rows) >= 2
    for cells in rows:
        runs = {m["name"]: m["ms_runs"] for m in _linked_results(cells)["models"]}
        names = ("resnet50 (copy)", "eca_resnet50", "eca_resnet50, constant gate")
        speed = [statistics.median(b / t for b, t in zip(runs["resnet50"], runs[n])) for n in names]
        assert cells[1:4] == [f"{s:.3f}" for s in speed], cells[0]


def test_detector_figures_are_the_recorded_ones():
    """docs/performance.md's detector table, recomputed from the run it links to."""
    page = (ROOT / "docs" / "performance.md").read_text()
    [(rows, after)] = _tables(page, "detector | params")
    run = _results_at(after)
    assert run["settings"]["detector"] == "fasterrcnn_eca_resnet50_fpn"
    base = run["detectors"][0]
    assert [cells[0] for cells in rows] == [d["name"] for d in run["detectors"]]
    for cells, d in zip(rows, run["detectors"]):
        ratios = [a / b for a, b in zip(d["runs"], base["runs"])]
        ratio = f"{statistics.median(ratios):.3f}" if d is base else _median_and_interval(ratios)
        assert cells[1:] == [f"{d['params']:,}", f"{d['release_params'] / 1e6:.3f}M", f"{d['gmacs']:.2f}",
                             f"{statistics.median(d['runs']):.3f}", ratio]  # fmt: skip


def test_detection_example_figures_are_the_recorded_ones():
    """The detection page's drawn example: the image is there and its AP is the recorded run's last epoch."""
    page = (ROOT / "docs" / "guides" / "detection.md").read_text()
    history = [json.loads(line) for line in (ROOT / "docs" / "assets" / "detection-example-metrics.jsonl").open()]
    last = history[-1]
    assert len(history) == 6 and (ROOT / "docs" / "assets" / "detection-example.png").is_file()
    assert f"val box AP {last['val_box_map']:.2f} (AP50 {last['val_box_map_50']:.2f})" in page


def test_runtime_figures_are_the_recorded_ones():
    """docs/performance.md's ONNX Runtime and OpenVINO ratios, recomputed from the runs committed beside it; the
    page's summary repeats the batch-32 ones."""
    page = (ROOT / "docs" / "performance.md").read_text()
    rows = {cells[0]: cells for cells in _table_rows(page, "speed against the plain model | eager")}

    def ratio(path: str, name: str, mode: str) -> str:
        run = {m["name"]: m for m in _results(f"assets/benchmark-runtimes/{path}")["models"]}
        return _median_and_interval(_paired(run[name], next(iter(run.values())), mode))

    for row, name, blocked, plain in (
        ("ECA-ResNet-50, batch 32", "eca_resnet50", "pair_r50_b32.json", "r50_b32_plain.json"),
        ("ECA-MobileNetV2, batch 32", "eca_mobilenetv2", "pair_mnv2_b32_final.json", "pair_mnv2_b32_plain.json"),
    ):
        assert rows[row][3:7] == [ratio(f, name, mode) for mode in ("ort", "ov") for f in (blocked, plain)], row
    batch16 = rows["ECA-ResNet-50, batch 16"]
    assert [batch16[3], batch16[5]] == [ratio("pair_r50_b16.json", "eca_resnet50", m) for m in ("ort", "ov")]
    detectors = _results("assets/benchmark-runtimes/det_runtimes.json")["detectors"]
    ours = {d["runtime"]: d for d in detectors if "_eca_" in d["name"]}
    plain = {d["runtime"]: d for d in detectors if "_eca_" not in d["name"]}
    medians = {r: statistics.median(a / b for a, b in zip(ours[r]["runs"], plain[r]["runs"])) for r in ours}
    cells = rows["Faster R-CNN ECA-R50-FPN, one 800 x 1216 image"]
    assert [cells[1], cells[3], cells[5]] == [
        f"{medians['torch']:.3f}, 5 reps",
        f"{medians['onnxruntime']:.3f}, 5 reps (plain form)",
        f"{medians['openvino']:.3f}, 5 reps (plain form)",
    ]
    summary = {cells[0]: cells[1] for cells in _table_rows(page, "speed against the plain ResNet-50")}
    r50 = rows["ECA-ResNet-50, batch 32"]
    assert summary["our ECA-ResNet-50 exported to ONNX (blocked form), in ONNX Runtime, batch 32"] == r50[3]
    assert summary["our ECA-ResNet-50 exported to ONNX, in OpenVINO, batch 32"] == r50[5]
