"""Moved to :mod:`rep3d_networks.blocks.reparam_state`; this module keeps the old import path working."""

import warnings

from rep3d_networks.blocks.reparam_state import (  # noqa: F401
    CHOICES,
    FORM_FIELDS,
    FORM_KEY,
    FORM_VERSION,
    GENERATOR_CHANNELS,
    GENERATOR_FIELDS,
    GENERATOR_NORM_AFFINE,
    REPARAM_MODES,
    decode_form,
    describe,
    encode_form,
    mismatches,
    module_form,
)

warnings.warn(
    "rep3d_networks.blocks.reparam_form moved to rep3d_networks.blocks.reparam_state.", DeprecationWarning, stacklevel=2
)
