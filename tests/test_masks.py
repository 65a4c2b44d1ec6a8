"""The LRBM mask figures of ``erf`` for each generator norm option (issue #12), and the mask statistics."""

import json
from pathlib import Path

import numpy as np
import pytest

from rep3d_networks.analysis import cli
from rep3d_networks.analysis.masks import change_from_init, initial_mask


@pytest.mark.parametrize("norm", ["channel", "tap", "none"])
def test_erf_mask_figure_takes_the_generator_norm_option(tmp_path, norm):
    paths = cli.erf(
        str(tmp_path), input_size=32, num_inputs=1, feature_size=4, hidden_size=8, generator_norm_affine=norm
    )
    result = json.loads(Path(paths["json"]).read_text())
    assert result["model"]["generator_norm_affine"] == norm
    assert len(result["masks"]) == 9 and all(
        m["change_from_init"] == pytest.approx(0.0, abs=1e-6) for m in result["masks"]
    )
    assert Path(paths["lrbm_masks_png"]).stat().st_size > 1000


def test_change_from_init_is_relative_to_the_initial_prior():
    prior = initial_mask(5)
    assert prior[2, 2, 2] == 1.0 and change_from_init(prior) == 0.0
    assert change_from_init(prior + 0.1 * prior.mean()) == pytest.approx(0.1)
    assert change_from_init(np.zeros_like(prior)) == pytest.approx(1.0)
