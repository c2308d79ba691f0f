"""One exit-status rule for every command, one line per error, and --debug for the traceback."""

import argparse

import pytest

from eca_models.cli import main
from eca_models.cli.common import add_runtime_args, default_workers


def test_unknown_model_is_one_line_and_2_in_every_command_that_loads_one(tmp_path, capsys):
    for argv in (
        ["predict", "--model", "eca_resnet9", str(tmp_path / "x.jpg")],
        ["export", "--model", "eca_resnet9", "--format", "torchscript", "--out", str(tmp_path / "m.pt")],
        ["convert", str(tmp_path / "a.pth.tar"), "--model", "eca_resnet9", "--out", str(tmp_path / "o")],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"eca-models {argv[0]}: error:") and len(err.splitlines()) == 1, err


def test_debug_shows_the_traceback_instead(tmp_path, monkeypatch):
    argv = ["export", "--model", "eca_resnet9", "--format", "torchscript", "--out", str(tmp_path / "m.pt")]
    with pytest.raises(Exception, match="eca_resnet9"):
        main(["--debug", *argv])
    monkeypatch.setenv("ECA_MODELS_DEBUG", "1")
    with pytest.raises(Exception, match="eca_resnet9"):
        main(argv)


def test_workers_default_to_the_cores_available():
    import os

    parser = argparse.ArgumentParser()
    add_runtime_args(parser, batch_size=8)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert parser.parse_args([]).workers == default_workers() == min(8, cores)
