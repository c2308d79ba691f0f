import pytest
import timm
from conftest import run_python

import eca_models
from eca_models.zoo import list_models

ARCHS = ["eca_resnet18", "eca_resnet34", "eca_resnet50", "eca_resnet101", "eca_resnet152", "eca_mobilenetv2"]
RELEASED = ["eca_resnet18_k3577", "eca_resnet34_k3357", "eca_resnet50_k3557", "eca_resnet101_k3357"]
RELEASED += ["eca_resnet152_k3357", "eca_mobilenetv2_k13"]


def test_every_name_is_registered():
    assert set(list_models()) == set(ARCHS + RELEASED) == set(eca_models.MODEL_NAMES)
    for name in ARCHS + RELEASED:
        assert timm.is_model(name)


def test_pretrained_tags_carry_hub_id_and_protocol():
    tags = timm.list_pretrained("eca_*")
    for name in ARCHS + RELEASED:
        assert f"{name}.in1k" in tags
        cfg = timm.models.get_pretrained_cfg(f"{name}.in1k")
        assert cfg.hf_hub_id.startswith("eca-models/") and cfg.hf_hub_id.endswith(".in1k")
        assert cfg.input_size == (3, 224, 224) and cfg.crop_pct == 0.875 and cfg.interpolation == "bilinear"
        assert cfg.mean == (0.485, 0.456, 0.406) and cfg.std == (0.229, 0.224, 0.225)
    assert timm.models.get_pretrained_cfg("eca_resnet50.in1k").hf_hub_id == "eca-models/eca_resnet50_k3557.in1k"


def test_architectures_default_to_the_released_kernel_codes():
    for arch, released in zip(ARCHS, RELEASED):
        assert timm.create_model(arch, num_classes=0).kernel_code == released.split("_")[-1]


@pytest.mark.slow
def test_no_timm_name_is_overwritten():
    code = (
        "import timm, warnings; before = set(timm.list_models(pretrained=False)); "
        "warnings.simplefilter('error'); import eca_models; print(' '.join(sorted(before)))"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr  # timm warns (here: raises) when a name is registered twice
    before = set(result.stdout.split())
    assert "resnet50" in before
    assert not (set(ARCHS + RELEASED) & before), "one of our names is timm's own"


def test_every_model_the_package_registers_is_listed():
    """The families are found from the package (every module of eca_models.models), not a hand-kept list: each
    timm entrypoint defined by eca-models is in list_models (and so in `eca-models list` and MODEL_NAMES)."""
    import timm

    from eca_models import MODEL_NAMES, list_models

    ours = {n for n in timm.list_models() if timm.models.model_entrypoint(n).__module__.startswith("eca_models.")}
    assert ours - {"with_eca"} == set(list_models()) == set(MODEL_NAMES) and len(ours) == 13
    # with_eca: a timm model with add_eca, as fine-tuned run folders name it; not a model of the zoo
    assert timm.models.model_entrypoint("with_eca").__module__ == "eca_models.insertion"
