"""Building the Rep3D model to analyse: hyper-parameters from a config and/or the command line, weights from a
checkpoint."""

import json
from pathlib import Path
from typing import Dict, Optional

import torch
from monai.bundle import ConfigParser

from rep3d_networks.blocks.reparam_state import FORM_KEY, decode_form
from rep3d_networks.fold import mark_folded
from rep3d_networks.nets import Rep3D

PAPER_MODEL = dict(
    in_channels=1,
    out_channels=16,
    feature_size=48,
    depths=(2, 2, 2, 2),
    kernel_size=21,
    hidden_size=768,
    reparam="lrbm",
)
CONFIG_KEYS_TO_DROP = ("_target_", "_requires_", "_disabled_", "_desc_", "_mode_")
TRAINING_ONLY_KEYS = ("mask.", "small_weight")


def model_kwargs(config: Optional[str] = None, **overrides) -> Dict:
    """Rep3D keyword arguments: the paper's model, updated by ``config``, then by the non-None ``overrides``.

    Args:
        config: a bundle config (JSON/YAML with a ``network_def`` entry, references such as ``@num_classes``
            are resolved by MONAI's ``ConfigParser``) or a JSON file holding Rep3D keyword arguments
            (as written by the ``convergence`` command, ``model_config.json``).
        overrides: Rep3D keyword arguments from the command line; ``None`` values are ignored.

    Raises:
        FileNotFoundError: if ``config`` does not exist.
    """
    kwargs = dict(PAPER_MODEL)
    if config is not None:
        kwargs.update(read_model_config(Path(config)))
    kwargs.update({k: v for k, v in overrides.items() if v is not None})
    kwargs["depths"] = tuple(kwargs["depths"])
    return kwargs


def read_model_config(path: Path) -> Dict:
    """Rep3D keyword arguments from a bundle config's ``network_def`` or from a plain keyword JSON file."""
    if not path.is_file():
        raise FileNotFoundError(f"model config {path} does not exist")
    parser = ConfigParser()
    parser.read_config(str(path))
    if "network_def" not in parser.get():
        return dict(json.loads(path.read_text()))
    component = parser.get_parsed_content("network_def", instantiate=False)
    network_def = component.get_config() if hasattr(component, "get_config") else dict(component)
    return {k: v for k, v in network_def.items() if k not in CONFIG_KEYS_TO_DROP}


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """A model state dict from a checkpoint file; unwraps
    ``{"model": ...}``/``{"network": ...}``/``{"state_dict": ...}``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "network", "state_dict"):
        if isinstance(state, dict) and set(state) == {key} and isinstance(state[key], dict):
            return state[key]
    return state


def is_folded(state_dict: Dict[str, torch.Tensor], reparam: str) -> Optional[bool]:
    """Whether a state dict is folded: from its ``reparam_state`` entries, else (0.1 state dicts) when its keys tell
    (LRBM and CSLA keep extra training keys); None for 0.1 fixed/vanilla."""
    forms = [decode_form(v, k) for k, v in state_dict.items() if k.split(".")[-1] == FORM_KEY]
    if forms:
        return all(form["folded"] for form in forms)
    if reparam not in ("lrbm", "csla"):
        return None
    return not any(any(part in k for part in TRAINING_ONLY_KEYS) for k in state_dict)


def paired_fresh_model(kwargs: Dict, seed: int) -> Rep3D:
    """A freshly initialised Rep3D whose weights shared with the vanilla variant equal that variant's init for ``seed``.

    All parameters that the variants have in common (large kernels, norms, stem, decoder) are copied from a
    vanilla Rep3D built with ``seed``; only the variant's own parameters (LRBM generator and β, CSLA small
    branch) keep their own seeded init. So models of different ``reparam`` with one seed form a paired comparison.
    """
    torch.manual_seed(seed)
    model = Rep3D(**kwargs)
    if kwargs.get("reparam", "lrbm") != "vanilla":
        torch.manual_seed(seed)
        vanilla = Rep3D(**dict(kwargs, reparam="vanilla")).state_dict()
        forms = {
            k: v for k, v in model.state_dict().items() if k.endswith(FORM_KEY)
        }  # the weights, in the model's form
        reference = {**{k: v for k, v in vanilla.items() if not k.endswith(FORM_KEY)}, **forms}
        incompatible = model.load_state_dict(reference, strict=False)
        if incompatible.unexpected_keys:
            raise RuntimeError(
                f"{kwargs['reparam']} lacks parameters of the vanilla model: {incompatible.unexpected_keys[:3]}"
            )
    return model


def build_model(kwargs: Dict, checkpoint: Optional[str] = None, folded: bool = False, seed: int = 0) -> Rep3D:
    """Rep3D from ``kwargs``, freshly initialised with ``seed`` (:func:`paired_fresh_model`) or loaded (strictly) from
    ``checkpoint``.

    Training checkpoints (unfolded, as bundle training saves them) load into the training form, so the LRBM
    masks can be inspected. A folded checkpoint loads into the folded form, detected from its ``reparam_state``
    entries; for 0.1 checkpoints (without them) of ``fixed`` it must be said with ``folded=True`` (its two forms have
    the same keys), and the checkpoint is then marked with :func:`rep3d_networks.mark_folded`.
    """
    if checkpoint is None:
        return paired_fresh_model(kwargs, seed)
    state_dict = read_state_dict(checkpoint)
    detected = is_folded(state_dict, kwargs["reparam"])
    model = Rep3D(**kwargs, deploy=bool(folded if detected is None else detected))
    if detected is None and folded:
        state_dict = mark_folded(state_dict, model)
    model.load_state_dict(state_dict, strict=True)
    return model
