"""Where and how jobs run: data loading processes."""

from eca_models import runtime


def test_more_workers_than_cores_are_capped_and_said_once(capsys):
    cores = runtime._cores()
    assert runtime.loader_workers(cores) == cores and capsys.readouterr().err == ""
    assert runtime.loader_workers(cores + 64) == cores and runtime.loader_workers(cores + 64) == cores
    assert capsys.readouterr().err.splitlines() == [
        f"eca-models: workers={cores + 64} is more than the {cores} cores usable here: using {cores}"
    ]
