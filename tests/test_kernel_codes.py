import pytest
import timm

from eca_models.layers import format_kernel_code, parse_kernel_code


@pytest.mark.parametrize("code", ["k3557", "3557", "K3557", (3, 5, 5, 7), [3, 5, 5, 7]])
def test_every_spelling_of_a_code_parses_the_same(code):
    assert parse_kernel_code(code, 4) == (3, 5, 5, 7)


def test_one_digit_gives_every_resnet_stage_that_size():
    """The release's detectors name 'k5': kernel size 5 in every stage. MobileNetV2's codes stay two digits."""
    assert parse_kernel_code("k5", 4) == parse_kernel_code("5", 4) == (5, 5, 5, 5)
    assert timm.create_model("eca_resnet50", kernel_sizes="k5").kernel_code == "k5555"
    for bad in ("k4", "k0"):
        with pytest.raises(ValueError, match=r"one odd digit for every stage \('k5' = 'k5555'\)"):
            parse_kernel_code(bad, 4)
    with pytest.raises(ValueError, match="e.g. 'k13'"):
        parse_kernel_code("k3", 2)


def test_adaptive_and_large_kernels():
    assert parse_kernel_code("adaptive", 4) == "adaptive"
    assert parse_kernel_code((3, 5, 11, 7), 4) == (3, 5, 11, 7)
    assert format_kernel_code((3, 5, 11, 7)) == "k3-5-11-7"
    assert parse_kernel_code("k3-5-11-7", 4) == (3, 5, 11, 7)
    assert format_kernel_code((1, 3)) == "k13"


@pytest.mark.parametrize(
    "code", ["k2557", "k355", "kabc", "k3507", (3, 5, 5), (3, 0, 5, 7), "k35577", "", 3557, (3.0, 5, 5, 7)]
)
def test_bad_codes_raise_one_line_saying_what_a_code_looks_like(code):
    with pytest.raises(ValueError) as e:
        parse_kernel_code(code, 4)
    msg = str(e.value)
    assert "\n" not in msg
    assert "e.g. 'k3557'" in msg and "adaptive" in msg


@pytest.mark.parametrize(
    "name,code,expected",
    [
        ("eca_resnet50", "k2557", "e.g. 'k3557'"),
        ("eca_resnet18", "k355", "e.g. 'k3557'"),
        ("eca_resnet34", "kabc", "e.g. 'k3557'"),
        ("eca_mobilenetv2", "k3557", "e.g. 'k13'"),
        ("eca_mobilenetv2", "k12", "e.g. 'k13'"),
    ],
)
def test_models_refuse_bad_codes(name, code, expected):
    with pytest.raises(ValueError, match=expected):
        timm.create_model(name, kernel_sizes=code)


def test_models_take_every_spelling():
    for code in ("k3357", "3357", (3, 3, 5, 7)):
        model = timm.create_model("eca_resnet18", kernel_sizes=code)
        assert model.kernel_sizes == (3, 3, 5, 7) and model.kernel_code == "k3357"
    model = timm.create_model("eca_resnet50", kernel_sizes="adaptive")
    assert model.kernel_sizes == (5, 5, 5, 7) and model.kernel_code == "adaptive"  # 256, 512, 1024, 2048 channels
    model = timm.create_model("eca_mobilenetv2", kernel_sizes=(3, 5))
    assert set(model.kernel_sizes[:10]) == {3} and set(model.kernel_sizes[10:]) == {5}
