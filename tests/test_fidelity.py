"""Our models against an independent reference, both loaded from one authors'-format file."""

import pytest
import timm
import torch
from helpers import ARCHS, authors_file_for


@pytest.mark.parametrize("name", list(ARCHS))
def test_authors_file_loads_strictly_and_matches_the_reference(name, tmp_path, x64):
    path, ref = authors_file_for(name, tmp_path)
    model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path))).eval()
    theirs = {f"module.{k}" for k in model.state_dict()}
    assert theirs == set(torch.load(path, weights_only=True)["state_dict"]), "keys must match the authors' file 1:1"
    with torch.no_grad():
        diff = (model(x64) - ref(x64)).abs().max().item()
    assert diff <= 1e-5, f"{name}: max abs diff {diff:.3g} against the reference"
