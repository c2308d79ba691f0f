"""The file helpers' Windows branches, run here by patching the one platform check (``files.WINDOWS``): the liveness
probe never sends a signal, held files are retried, and a folder replaces another by moving it aside first."""

import os

import pytest

from eca_models import files


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
