"""The ``reparam_state`` entry that says what a :class:`~rep3d_networks.blocks.lrbm.ReparamDepthwiseConv3d` state
dict holds, and the check that reads it while loading.

Every re-parameterized convolution writes one persistent ``int64`` buffer, ``<module>.reparam_state``: the format
version, whether the kernel is folded, and the configuration the kernel belongs to (``reparam``, kernel size, bias,
the CSLA branch size, the LRBM generator). Fields that do not apply to the module's ``reparam`` hold -1.

:func:`check_loaded_state` (the convolution's load pre-hook) compares the entry with the module's own and reports
every difference by name, so a state dict can never be read in the wrong form; a folded module folds a training
state dict while loading. State dicts of rep3d_networks 0.1 have no entry: :func:`v0_1_form` reads their form from
their keys and shapes.
"""

import re
import warnings
from dataclasses import asdict
from typing import Dict, List, Optional

import torch
from torch import nn

FORM_KEY = "reparam_state"
FORM_VERSION = 1  # 0.1 state dicts have no reparam_state entry
# The order of each choice tuple is part of the format (stored by index): never reorder, only append.
REPARAM_MODES = ("lrbm", "fixed", "vanilla", "csla")
GENERATOR_CHANNELS = ("shared", "depthwise")
GENERATOR_NORM_AFFINE = ("channel", "tap", "none")
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
CHOICES = {
    "reparam": REPARAM_MODES,
    "generator_channels": GENERATOR_CHANNELS,
    "generator_norm_affine": GENERATOR_NORM_AFFINE,
}
GENERATOR_FIELDS = ("generator_channels", "generator_layers", "generator_kernel_size", "generator_norm_affine")
OWN_KEYS = ("weight", "bias", "small_weight", FORM_KEY)  # a convolution's own entries, besides its mask.*
V0_1_FIXED_WARNING = (
    "a rep3d_networks 0.1 state dict (no reparam_state entries) of reparam='fixed' kernels is read as the training "
    "form, the form 0.1 training saved: its keys cannot tell. For one saved after fold(), load "
    "rep3d_networks.mark_folded(state_dict, model) instead."
)


def module_form(config: Dict, folded: bool) -> Dict:
    """The form of a convolution built with ``config`` (its constructor arguments, the generator options either as
    a ``generator_config`` or as flat ``generator_*`` entries): fields that do not apply are ``None``."""
    generator_config = config.get("generator_config")
    options = {f"generator_{k}": v for k, v in asdict(generator_config).items()} if generator_config else {}
    config = {**config, **options}
    form = {"version": FORM_VERSION, "folded": bool(folded), **{k: config.get(k) for k in FORM_FIELDS[2:]}}
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
        raise ValueError(
            f"{where}: {FORM_KEY} format {values[0]} is newer than this rep3d_networks (format {FORM_VERSION})."
        )
    if len(values) != len(FORM_FIELDS):
        raise ValueError(
            f"{where}: {FORM_KEY} holds {len(values)} integers, format {FORM_VERSION} has {len(FORM_FIELDS)}."
        )
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


def check_loaded_state(
    module: nn.Module, state_dict, prefix: str, local_metadata, strict: bool, missing_keys, unexpected_keys, error_msgs
) -> None:
    """Load pre-hook of a re-parameterized convolution: checks its ``reparam_state`` entry against ``module`` and,
    when ``module`` is folded, folds a training-form state dict in place. A state dict it refuses is reported in
    ``error_msgs`` (``load_state_dict`` raises ``RuntimeError``) and its entries are swapped for the module's own."""
    where = prefix[:-1] or type(module).__name__
    try:
        if prefix + FORM_KEY in state_dict:
            found = decode_form(state_dict[prefix + FORM_KEY], prefix + FORM_KEY)
        else:
            found = v0_1_form(module, state_dict, prefix)
            state_dict[prefix + FORM_KEY] = encode_form(found)
    except ValueError as error:
        return _refuse(module, state_dict, prefix, error_msgs, str(error))
    expected = module.form()
    problems = mismatches(expected, found)
    if problems:
        message = f"{where}: the state dict holds a {describe(found)} kernel, this module is {describe(expected)}: "
        return _refuse(module, state_dict, prefix, error_msgs, message + "; ".join(problems))
    if found["folded"] and not module.folded:
        return _refuse(
            module,
            state_dict,
            prefix,
            error_msgs,
            f"{where}: the state dict holds a folded kernel (W_eff baked in, no mask or small branch) but this module "
            "is the training form: build the network with deploy=True to load it.",
        )
    if module.folded and not found["folded"]:
        if not _fold_while_loading(module, state_dict, prefix, strict, where, error_msgs):
            _refuse(module, state_dict, prefix, error_msgs, None)


def _refuse(module: nn.Module, state_dict, prefix: str, error_msgs: List[str], message: Optional[str]) -> None:
    """Reports ``message`` and swaps the module's entries for its own state, so that its submodules (loaded after
    it) add no size-mismatch noise to the one error that says what is wrong."""
    if message:
        error_msgs.append(message)
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]
    state_dict.update({prefix + name: value for name, value in module.state_dict().items()})


def _fold_while_loading(
    module: nn.Module, state_dict, prefix: str, strict: bool, where: str, error_msgs: List[str]
) -> bool:
    """Replaces the module's training-form entries of ``state_dict`` by their folded form (through a twin)."""
    own_key = re.compile(r"(mask\.|(%s)$)" % "|".join(OWN_KEYS))
    own = [k for k in state_dict if k.startswith(prefix) and own_key.match(k[len(prefix) :])]
    twin = type(module)(**module.training_form)
    try:
        twin.load_state_dict({k[len(prefix) :]: state_dict.pop(k) for k in own}, strict=strict)
    except RuntimeError as error:
        error_msgs.append(f"{where}: folding the training-form state dict while loading failed: {error}")
        return False
    twin.fold()
    state_dict.update({prefix + name: value for name, value in twin.state_dict().items()})
    return True


def v0_1_form(module: nn.Module, state_dict: Dict[str, torch.Tensor], prefix: str) -> Dict:
    """The form of a rep3d_networks 0.1 state dict (no ``reparam_state`` entry) for ``module``, read from its keys
    and shapes.

    * ``lrbm`` and ``csla``: folded when it lacks the training keys (``mask.*``, ``small_weight``).
    * ``vanilla``: both forms hold the same tensors; read in the module's form.
    * ``fixed``: the keys cannot tell; read as the training form (what 0.1 training saved: only ``fold()``
      followed by a manual save made a folded one), with a warning; :func:`rep3d_networks.mark_folded` marks a
      folded one.
    * An ``lrbm`` training form had per-tap LayerNorm affines (``generator_norm_affine="tap"``) and generator
      conv biases; the biases, which the following LayerNorm cancels exactly, are dropped from ``state_dict``.
      Its ``1³`` generator convs (``generator_kernel_size=1``) have no counterpart today: ``ValueError``.
    * A partial state dict without entries (e.g. weights copied between variants with ``strict=False``; PyTorch
      does not tell modules whether a load is strict) is read by these rules too: add the target's own
      ``reparam_state`` entries to it, as :func:`rep3d_networks.analysis.model_loading.paired_fresh_model` does.
    """
    where = prefix[:-1] or type(module).__name__
    keys = [k[len(prefix) :] for k in state_dict if k.startswith(prefix)]
    found = dict(module.form())
    if "weight" in keys:
        found["kernel_size"] = state_dict[prefix + "weight"].shape[-1]
    found["bias"] = "bias" in keys
    folded = module.folded
    if any(k.startswith("mask.generator.") for k in keys):
        generator = _v0_1_generator(state_dict, prefix + "mask.generator.layers.")
        found.update(reparam="lrbm", generator_norm_affine="tap", **generator)
        folded = False
        if found["generator_kernel_size"] == 1:
            raise ValueError(
                f"{where}: a rep3d_networks 0.1 LRBM with generator_kernel_size=1 cannot be loaded: its 1³ generator "
                "convs (which the LayerNorm after each made ineffective) have no counterpart in this version."
            )
        for layer in range(generator.get("generator_layers", 0)):
            # cancelled by the LayerNorm after it
            state_dict.pop(f"{prefix}mask.generator.layers.{3 * layer}.bias", None)
    elif "small_weight" in keys:
        found.update(reparam="csla", small_kernel_size=state_dict[prefix + "small_weight"].shape[-1])
        folded = False
    elif module.reparam in ("lrbm", "csla"):
        folded = True
    elif module.reparam == "fixed":
        warnings.warn(V0_1_FIXED_WARNING, stacklevel=6)  # points at load_state_dict, as before the pre-hook
        folded = False
    return module_form(found, folded)


def _v0_1_generator(state_dict: Dict[str, torch.Tensor], layers: str) -> Dict:
    """Generator options of a 0.1 LRBM, from its conv weights ``layers.0``, ``layers.3``, ... (``[G, 1, k, k, k]``)."""
    convs: List[torch.Tensor] = []
    while state_dict.get(f"{layers}{3 * len(convs)}.weight", torch.empty(0)).dim() == 5:
        convs.append(state_dict[f"{layers}{3 * len(convs)}.weight"])
    if not convs:
        return {}
    return dict(
        generator_channels="shared" if convs[0].shape[0] == 1 else "depthwise",
        generator_layers=len(convs),
        generator_kernel_size=convs[0].shape[-1],
    )
