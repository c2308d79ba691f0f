"""The file helpers' Windows branches, run here by patching the one platform check (``files.WINDOWS``): the liveness
probe never sends a signal, held files are retried, and a folder replaces another by moving it aside first."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import one_line_error

from eca_models import files
from eca_models.cli import main
from eca_models.conversion.imagenet import convert_checkpoint


@pytest.fixture
def windows(monkeypatch):
    """files.* as on Windows: no os.kill, a fake Win32 liveness probe, no waiting between retries."""

    def no_signal(*args):
        raise AssertionError("os.kill must not be used on Windows (signal 0 is CTRL_C_EVENT there)")

    monkeypatch.setattr(files, "WINDOWS", True)
    monkeypatch.setattr(os, "kill", no_signal)
    monkeypatch.setattr(files, "_HELD_RETRIES", (0, 0, 0))
    running = set()
    monkeypatch.setattr(files, "_alive_windows", lambda pid: pid in running)
    return running


def _stale(folder, pid):
    entry = folder / f".x.eca-tmp.{files._host()}.{pid}.abc"
    entry.mkdir()
    (entry / "part").write_bytes(b"x")
    return entry


def test_windows_liveness_uses_the_win32_probe(windows, tmp_path):
    windows.add(4242)
    live, dead = _stale(tmp_path, 4242), _stale(tmp_path, 4243)
    assert files.remove_stale_temporaries(tmp_path, again=True) == 1
    assert live.exists() and not dead.exists()


def test_posix_liveness_survives_any_os_error(monkeypatch):
    def refuse(pid, sig):
        raise OSError(22, "invalid argument")

    monkeypatch.setattr(files, "WINDOWS", False)
    monkeypatch.setattr(os, "kill", refuse)
    assert files._alive(123) is False


def test_a_held_file_is_retried_then_replaced(windows, tmp_path, monkeypatch):
    target = tmp_path / "out.txt"
    target.write_text("old")
    real_replace, held = os.replace, iter([True, True])

    def replace(src, dst):
        if next(held, False):
            raise PermissionError(32, "The process cannot access the file because it is being used")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    files.write_text_atomic(target, "new")
    assert target.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_a_folder_replaces_another_and_a_held_old_one_stays_as_a_stale_temporary(windows, tmp_path, monkeypatch):
    out = tmp_path / "model"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"old")
    real_rmtree = files.shutil.rmtree

    def held(path, **kwargs):
        raise PermissionError(32, "used by another process")  # the old weights memory-mapped by a loaded model

    monkeypatch.setattr(files.shutil, "rmtree", held)
    with files.atomic_folder(out, overwrite=True) as tmp:
        (tmp / "model.safetensors").write_bytes(b"new")
    assert (out / "model.safetensors").read_bytes() == b"new"
    (left,) = [p for p in tmp_path.iterdir() if p != out]
    assert files.TMP_MARK in left.name and (left / "model.safetensors").read_bytes() == b"old"
    monkeypatch.setattr(files.shutil, "rmtree", real_rmtree)
    monkeypatch.setattr(files, "_alive_windows", lambda pid: False)  # the process that held it has ended
    monkeypatch.setattr(files, "_host", lambda: left.name.split(".")[-3])
    monkeypatch.setattr(os, "getpid", lambda: -1)
    assert files.remove_stale_temporaries(tmp_path, again=True) == 1 and not left.exists()


def test_a_failed_swap_puts_the_old_folder_back(windows, tmp_path, monkeypatch):
    out, new = tmp_path / "model", tmp_path / "new"
    out.mkdir()
    new.mkdir()
    (out / "kept").write_text("old")
    real_replace = os.replace

    def replace(src, dst):
        if str(src) == str(new):
            raise PermissionError(5, "Access is denied")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError):
        files.replace_folder(new, out)
    assert (out / "kept").read_text() == "old" and new.exists()


def test_read_only_files_are_removed(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / "blob").write_bytes(b"x")
    os.chmod(folder / "blob", 0o444)
    assert files.remove_tree(folder) and not folder.exists()


def test_unwritable_outputs_are_refused_before_any_model_is_loaded(val, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("a file, not a folder")
    target = blocker / "out"
    for argv, flag in (
        (["validate", "--model", "eca_resnet152", "--data", str(val["folder"]), "--results-file", f"{target}.json"], "--results-file"),
        (["benchmark", "--backbone", "resnet18", "--results-file", f"{target}.json"], "--results-file"),
        (["benchmark", "--backbone", "resnet18", "--plot", f"{target}.png"], "--plot"),
        (["attention", "--model", "eca_resnet152", "--data", str(val["folder"]), "--out", f"{target}.png"], "--out"),
        (["export", "--model", "eca_resnet152", "--format", "torchscript", "--out", f"{target}.pt"], "--out"),
        (["convert", str(val["ckpt"]), "--model", "eca_resnet18_k3577", "--out", str(target)], "--out"),
    ):  # fmt: skip
        start = time.perf_counter()
        assert main(argv) == 2, argv
        err = one_line_error(capsys, argv[0])
        assert flag in err and str(blocker) in err and ".tmp" not in err and "eca-tmp" not in err, err
        assert time.perf_counter() - start < 5, argv  # no model was built, no weights sought
    assert main(["convert", str(val["ckpt"]), "--model", "eca_resnet18_k3577", "--out", str(blocker)]) == 2
    assert "is a file" in one_line_error(capsys, "convert")


def test_a_folder_written_whole_is_not_the_working_folder_nor_one_holding_it(val, tmp_path, monkeypatch, capsys):
    """``--out ''``, ``.``, ``..`` or the working folder's own path: one line, and nothing there touched (it was
    the rename's 'Device or resource busy', reported as a bug; the absolute path replaced the working folder)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("the user's")
    monkeypatch.chdir(work)
    for out in ("", ".", "..", str(work), str(tmp_path)):
        assert main(["convert", str(val["ckpt"]), "--model", "eca_resnet18_k3577", "--out", out, "--overwrite"]) == 2
        err = one_line_error(capsys, "convert")
        assert "is the working folder or holds it, which a new folder cannot replace: name a new one" in err, err
        with pytest.raises(files.OutputPathError, match="is the working folder or holds it"):
            with files.atomic_folder(out, overwrite=True):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and (work / "keep.txt").read_text() == "the user's"
    assert main(["convert", str(val["ckpt"]), "--model", "eca_resnet18_k3577", "--out", "sub"]) == 0
    assert (work / "sub" / "model.safetensors").is_file()


def test_a_failed_atomic_write_names_the_users_path(tmp_path):
    from eca_models.files import OutputPathError, write_text_atomic

    blocker = tmp_path / "f"
    blocker.write_text("x")
    with pytest.raises(OutputPathError, match=str(blocker / "r.json")) as error:
        write_text_atomic(blocker / "r.json", "{}")
    assert "tmp" not in str(error.value).replace(str(tmp_path), "")
    assert str(error.value).startswith(f"cannot write {blocker / 'r.json'}: ")  # one line, no "[Errno N]"


def test_an_output_file_in_a_folder_yet_to_be_made_is_written_there(tmp_path):
    """check_output_file lets a missing folder pass (it can be made): the atomic write makes it, after the work."""
    target = tmp_path / "results" / "2026" / "r.json"
    assert files.check_output_file(target, "results_file") == target and not target.parent.exists()
    files.write_text_atomic(target, "{}")
    assert target.read_text() == "{}" and os.listdir(target.parent) == ["r.json"]


@pytest.mark.slow
def test_kill_9_during_convert_and_export_leaves_nothing_a_later_run_keeps(val, tmp_path):
    cli = [sys.executable, "-m", "eca_models.cli"]
    out = tmp_path / "out"
    out.mkdir()
    convert = [*cli, "convert", str(val["ckpt"]), "--model", "eca_resnet18_k3577", "--check-size", "448"]
    _kill_when_temporary_appears([*convert, "--out", str(out / "first")], out)
    assert any(".eca-tmp." in p.name for p in out.iterdir()) and not (out / "first").exists()
    convert_checkpoint(val["ckpt"], "eca_resnet18_k3577", out / "second", log=lambda _: None, check_size=64)
    assert sorted(p.name for p in out.iterdir()) == ["second"]  # the killed run's folder is gone

    export = [*cli, "export", "--model", "eca_resnet18_k3577", "--checkpoint", str(val["ckpt"]), "--format"]
    _kill_when_temporary_appears([*export, "torchscript", "--out", str(out / "m.pt"), "--img-size", "320"], out)
    assert any(".eca-tmp." in p.name for p in out.iterdir())
    assert main(["export", *export[4:], "torchscript", "--out", str(out / "m.pt"), "--img-size", "64"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["m.pt", "second"]


def test_a_live_or_foreign_temporary_is_left_alone(tmp_path):
    from eca_models.files import _host, remove_stale_temporaries

    live = tmp_path / f".x.eca-tmp.{_host()}.{os.getppid()}.abc"
    foreign = tmp_path / ".x.eca-tmp.another-host.1.abc"
    live.mkdir()
    foreign.mkdir()
    assert remove_stale_temporaries(tmp_path, again=True) == 0 and live.exists() and foreign.exists()


def _kill_when_temporary_appears(cmd, folder: Path, timeout: float = 120) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline and proc.poll() is None:
            if any(".eca-tmp." in p.name for p in folder.iterdir()):
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return
            time.sleep(0.005)
        raise AssertionError(f"no temporary file appeared in {folder} (exit {proc.poll()})")
    finally:
        if proc.poll() is None:
            proc.kill()
