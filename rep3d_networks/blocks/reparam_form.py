"""The ``reparam_state`` entry that says what a :class:`ReparamDepthwiseConv3d` state dict holds.

Every re-parameterized convolution writes one persistent ``int64`` buffer, ``<module>.reparam_state``: the format
version, whether the kernel is folded, and the configuration the kernel belongs to (``reparam``, kernel size, bias,
the CSLA branch size, the LRBM generator). Fields that do not apply to the module's ``reparam`` hold -1. Loading
compares it with the module's own and reports every difference by name, so a state dict can never be read in the
wrong form. State dicts of rep3d_networks 0.1 have no such entry;
:meth:`~rep3d_networks.blocks.ReparamDepthwiseConv3d._legacy_form` says how they are read.
"""

from typing import Dict, List

import torch

from rep3d_networks.blocks.receptive_mask import GENERATOR_CHANNELS, GENERATOR_NORM_AFFINE

FORM_KEY = "reparam_state"
FORM_VERSION = 1  # 0.1 state dicts have no reparam_state entry
REPARAM_MODES = ("lrbm", "fixed", "vanilla", "csla")  # order is part of the format: never reorder, only append
FORM_FIELDS = (
    "version",
    "folded",
    "reparam",
    "kernel_size",
    "bias",
    "small_kernel_size",
    "generator_channels",
    "generator_layers",
    "generator_kernel_size",
    "generator_norm_affine",
)
CHOICES = {"reparam": REPARAM_MODES, "generator_channels": GENERATOR_CHANNELS, "generator_norm_affine": GENERATOR_NORM_AFFINE}
GENERATOR_FIELDS = ("generator_channels", "generator_layers", "generator_kernel_size", "generator_norm_affine")


def module_form(config: Dict, folded: bool) -> Dict:
    """The form of a module with ``config`` (its constructor arguments): fields that do not apply are ``None``."""
    form = {"version": FORM_VERSION, "folded": bool(folded), **{k: config[k] for k in FORM_FIELDS[2:]}}
    form["bias"] = bool(form["bias"])
    if config["reparam"] != "csla":
        form["small_kernel_size"] = None
    if config["reparam"] != "lrbm":
        form.update(dict.fromkeys(GENERATOR_FIELDS))
    return form


def encode_form(form: Dict) -> torch.Tensor:
    """``form`` as the ``int64`` tensor stored in the state dict (choices by index, ``None`` as -1)."""
    values = []
    for field in FORM_FIELDS:
        value = form[field]
        values.append(-1 if value is None else CHOICES[field].index(value) if field in CHOICES else int(value))
    return torch.tensor(values, dtype=torch.int64)


def decode_form(value: torch.Tensor, where: str) -> Dict:
    """The form stored in a ``reparam_state`` entry; ``ValueError`` naming ``where`` if it cannot be read."""
    values = value.tolist() if isinstance(value, torch.Tensor) and value.dim() == 1 else None
    if not values or values[0] < 1:
        raise ValueError(f"{where}: unreadable {FORM_KEY} entry {value!r} (expected {len(FORM_FIELDS)} integers).")
    if values[0] > FORM_VERSION:
        raise ValueError(f"{where}: {FORM_KEY} format {values[0]} is newer than this rep3d_networks (format {FORM_VERSION}).")
    if len(values) != len(FORM_FIELDS):
        raise ValueError(f"{where}: {FORM_KEY} holds {len(values)} integers, format {FORM_VERSION} has {len(FORM_FIELDS)}.")
    form = {}
    for field, number in zip(FORM_FIELDS, values):
        if number == -1:
            form[field] = None
        elif field in CHOICES:
            if not 0 <= number < len(CHOICES[field]):
                raise ValueError(f"{where}: {FORM_KEY} {field} = {number} is not one of {CHOICES[field]}.")
            form[field] = CHOICES[field][number]
        else:
            form[field] = bool(number) if field in ("folded", "bias") else number
    return form


def describe(form: Dict) -> str:
    """``folded reparam='lrbm' (kernel_size=21, ...)``: the form in words, for error messages."""
    details = ", ".join(f"{k}={form[k]!r}" for k in FORM_FIELDS[3:] if form[k] is not None)
    return f"{'folded' if form['folded'] else 'training-form'} reparam={form['reparam']!r} ({details})"


def mismatches(expected: Dict, found: Dict) -> List[str]:
    """``"field: expected X, found Y"`` for every configuration field that differs (not ``version``/``folded``)."""
    return [f"{k}: expected {expected[k]!r}, found {found[k]!r}" for k in FORM_FIELDS[2:] if expected[k] != found[k]]

