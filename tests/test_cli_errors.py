"""One exit-status rule for every command, one line per error, and --debug for the traceback."""

import argparse
import os
import re

import pytest
import torch
from helpers import one_line_error

import eca_models
from eca_models.cli import main
from eca_models.cli.common import add_runtime_args, default_workers
from eca_models.errors import UnknownModel, UsageError


def test_unknown_model_is_one_line_and_2_in_every_command_that_loads_one(tmp_path, capsys):
    for argv in (
        ["predict", "--model", "eca_resnet9", str(tmp_path / "x.jpg")],
        ["export", "--model", "eca_resnet9", "--format", "torchscript", "--out", str(tmp_path / "m.pt")],
        ["convert", str(tmp_path / "a.pth.tar"), "--model", "eca_resnet9", "--out", str(tmp_path / "o")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"eca-models {argv[0]}: error:") and len(err.splitlines()) == 1, err


def test_names_timm_or_the_hub_would_refuse_are_one_line_before_any_weights(tmp_path, capsys):
    """A pretrained tag timm has not, an hf-hub: id the Hub cannot have, timm's local-dir: prefix, an empty name: one
    line naming what to give (they were timm's and huggingface_hub's tracebacks, reported as bugs; the empty name was
    read as the working folder)."""
    cases = {
        "eca_resnet50.foo": "eca_resnet50 has no weights tagged 'foo'; its tags: in1k",
        "hf-hub:": "'hf-hub:' is not an hf-hub:ORG/REPO[@REVISION] id: ",
        "hf-hub:a/b/c@v1": "'hf-hub:a/b/c@v1' is not an hf-hub:ORG/REPO[@REVISION] id: ",
        f"local-dir:{tmp_path}": f"'local-dir:{tmp_path}': pass the folder itself, {tmp_path} (local-dir: is timm's",
        "": "the model name is empty: give a registered name or a model folder",  # not the working folder
    }
    for name, expected in cases.items():
        with pytest.raises(UnknownModel) as raised:
            eca_models.load(name)
        assert str(raised.value).startswith(expected), raised.value
        argv = ["export", "--model", name, "--no-weights", "--format", "torchscript", "--out", str(tmp_path / "m.pt")]
        assert main(argv) == 2, name
        assert expected in one_line_error(capsys, "export")
    assert main(["predict", "--model", "eca_resnet50.foo", str(tmp_path / "x.jpg")]) == 2
    assert "its tags: in1k" in one_line_error(capsys, "predict")
    assert eca_models.load("eca_resnet18.in1k", pretrained=False).pretrained_cfg["tag"] == "in1k"
    with pytest.raises(UnknownModel, match="^unknown detector '': not a registered detector nor a folder"):
        eca_models.detection.load_detector("")


def test_debug_shows_the_traceback_instead(tmp_path, monkeypatch):
    argv = ["export", "--model", "eca_resnet9", "--format", "torchscript", "--out", str(tmp_path / "m.pt")]
    with pytest.raises(Exception, match="eca_resnet9"):
        main(["--debug", *argv])
    monkeypatch.setenv("ECA_MODELS_DEBUG", "1")
    with pytest.raises(Exception, match="eca_resnet9"):
        main(argv)


def test_workers_default_to_the_cores_available():

    parser = argparse.ArgumentParser()
    add_runtime_args(parser, batch_size=8)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert parser.parse_args([]).workers == default_workers() == min(8, cores)


def _failing(monkeypatch, error):
    from eca_models.cli import list_models

    def fails(_args):
        raise error

    monkeypatch.setattr(list_models, "run", fails)


@pytest.mark.parametrize("error", [KeyError("stage"), ValueError("shapes"), OSError(5, "I/O error", "/elsewhere/x")])
def test_a_bug_is_its_traceback_a_request_to_report_it_and_1(monkeypatch, capsys, error):
    """A built-in error the package did not raise as bad input (nor of a path the user gave) is not bad usage."""
    _failing(monkeypatch, error)
    assert main(["list"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and type(error).__name__ in err
    assert (
        err.strip().splitlines()[-1]
        == "eca-models list: internal error (a bug): please report it with the traceback above"
    )


def test_an_os_error_of_a_path_the_user_gave_is_their_input(monkeypatch, tmp_path, capsys):
    _failing(monkeypatch, PermissionError(13, "Permission denied", str(tmp_path / "mine" / "a.csv")))
    assert main(["list", str(tmp_path / "mine")]) == 2  # the pattern argument names a path here: one the user gave
    assert capsys.readouterr().err.strip().endswith(f"Permission denied: '{tmp_path / 'mine' / 'a.csv'}'")


def test_out_of_memory_is_the_machines_limit_not_a_bug(monkeypatch, capsys):
    _failing(monkeypatch, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert main(["list"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("eca-models list: error: out of memory (CUDA out of memory.") and "--batch-size" in err


def test_messages_name_keywords_and_the_command_line_prints_its_flags():
    from eca_models.cli import as_flags

    assert as_flags("batch_size='8': expected a whole number") == "--batch-size '8': expected a whole number"
    assert as_flags("pass checkpoint= or no_pretrained=True, lower batch_size=.") == (
        "pass --checkpoint or --no-pretrained, lower --batch-size."
    )
    assert as_flags("val_split=0.2 to split; timm: pretrained_cfg_overlay=dict(file=DIR)") == (
        "--val-split 0.2 to split; timm: pretrained_cfg_overlay=dict(file=DIR)"  # not a flag of any command
    )


def test_package_messages_name_no_flags():
    """The functions speak to Python callers: options by keyword; flags are the command line's (cli/)."""
    from conftest import ROOT

    flags = re.compile(r"""["'][^"'\n]*(?<![\w`-])--[a-z][a-z-]+""")
    found = [
        f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
        for path in sorted((ROOT / "eca_models").rglob("*.py"))
        if "cli" not in path.parts
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if flags.search(line) and "eca-models " not in line and not line.strip().startswith(("#", '"""'))
    ]
    assert not found, "\n".join(found)


def test_unknown_names_are_the_packages_error_and_still_a_key_error(tmp_path):
    from eca_models.conversion import convert_checkpoint
    from eca_models.detection import get_architecture
    from eca_models.errors import UnknownModel
    from eca_models.weights.manifest import get_checkpoint

    for call in (
        lambda: get_checkpoint("eca_resnet9.in1k"),
        lambda: get_architecture("fasterrcnn_eca_resnet9_fpn"),
        lambda: convert_checkpoint(tmp_path / "a.pth.tar", "eca_resnet9", tmp_path / "out"),
    ):
        with pytest.raises(UnknownModel) as raised:
            call()
        assert isinstance(raised.value, KeyError) and "eca_resnet9" in str(raised.value)


def test_validate_checks_the_data_before_any_model_or_weights(tmp_path, monkeypatch):
    """Nothing cached and offline: the missing data folder is what is said, not the weights."""
    import eca_models
    from eca_models.errors import DataError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(DataError, match="^data folder .*nowhere does not exist$"):
        eca_models.validate("eca_resnet50", tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder$"):
        eca_models.validate("eca_resnet50", tmp_path / "file")
    with pytest.raises(DataError, match="^labels=.*gt.csv: no such file$"):
        eca_models.validate("eca_resnet50", tmp_path, labels=tmp_path / "gt.csv")
    with pytest.raises(DataError, match="^data folder .*nowhere does not exist$"):  # attention: the same order
        eca_models.attention_figure("eca_resnet50", tmp_path / "nowhere", tmp_path / "a.png")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_one_line_before_any_model(tmp_path, capsys):
    for argv in (
        ["predict", "x.jpg", "--model", "eca_resnet9"],
        ["validate", "--model", "eca_resnet9", "--data", str(tmp_path)],
        ["attention", "--model", "eca_resnet9", "--data", str(tmp_path), "--out", str(tmp_path / "a.png")],
        ["finetune", "--model", "eca_resnet9", "--data", str(tmp_path), "--output", str(tmp_path / "r")],
        ["benchmark", "--backbone", "resnet18"],
    ):
        assert main([*argv, "--device", "cuda"]) == 2
        assert "no CUDA device" in one_line_error(capsys, argv[0])  # not 'unknown model': checked first
    assert main(["predict", "x.jpg", "--model", "eca_resnet9", "--device", "tpu7"]) == 2
    assert "--device" in one_line_error(capsys, "predict")
    for call in (  # the functions check it too, in keyword words
        lambda: eca_models.predict("x.jpg", "eca_resnet9", device="cuda"),
        lambda: eca_models.validate("eca_resnet9", tmp_path, device="cuda"),
        lambda: eca_models.attention_figure("eca_resnet9", tmp_path, tmp_path / "a.png", device="cuda"),
        lambda: eca_models.finetune("eca_resnet9", tmp_path, output=tmp_path / "r", device="cuda"),
        lambda: eca_models.benchmark.benchmark("resnet18", device="cuda"),
    ):
        with pytest.raises(UsageError, match=r"^device='cuda', but torch sees no CUDA device here: pass device='cpu'"):
            call()


def test_a_url_where_a_file_or_folder_goes_is_one_line_before_any_weights(tmp_path, capsys):
    url = "https://example.com/x"
    for argv, said in (
        (["predict", f"{url}.jpg", "--model", "eca_resnet18"], f"image {url}.jpg is a URL"),
        (["predict", "x.jpg", "--model", "eca_resnet18", "--checkpoint", url], f"weights file {url} is a URL"),
        (["validate", "--model", "eca_resnet18", "--data", url], f"data folder {url} is a URL"),
        (["finetune", "--model", "eca_resnet18", "--data", url, "--output", str(tmp_path / "r")], f"data folder {url}"),
        (["convert", url, "--model", "eca_resnet18_k3577", "--out", str(tmp_path / "c")], f"weights file {url} is"),
    ):
        assert main(argv) == 2
        assert said in one_line_error(capsys, argv[0])


def test_out_of_range_flags_are_usage_errors(capsys):
    for argv in (
        ["predict", "x.jpg", "--model", "eca_resnet18", "--top-k", "0"],
        ["predict", "x.jpg", "--model", "eca_resnet18", "--min-size", "0"],
        ["predict", "x.jpg", "--model", "eca_resnet18", "--score-thr", "2"],
        ["validate", "--model", "eca_resnet18", "--data", "x", "--max-size", "0"],
        ["finetune", "--model", "eca_resnet18", "--data", "x", "--output", "y", "--min-size", "0"],
    ):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2, argv
        capsys.readouterr()
    assert main(["list", "nomatch*"]) == 2
    assert "no model matches" in one_line_error(capsys, "list")
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and "eca-models 0." in capsys.readouterr().out


def test_interrupted_is_said_on_a_line_of_its_own(monkeypatch, capsys):
    from tqdm import tqdm

    from eca_models.cli import list_models

    def interrupted(_args):
        bar = tqdm(total=10, desc="working")
        bar.update(3)
        raise KeyboardInterrupt

    monkeypatch.setattr(list_models, "run", interrupted)
    assert main(["list"]) == 130
    err = capsys.readouterr().err
    assert any(line.startswith("eca-models list: interrupted") for line in err.replace("\r", "\n").splitlines())


def test_help_texts_have_no_markup(capsys):
    from eca_models.cli import COMMANDS

    for name in COMMANDS:
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert "``" not in text and ":mod:" not in text and ":func:" not in text, name
        if name == "finetune":
            assert "COCO" in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "COCO" in capsys.readouterr().out
