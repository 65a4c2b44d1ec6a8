"""Depthwise large-kernel convolution whose kernel is re-parameterized during training and folded for inference."""

import math
import re
import warnings
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from rep3d_networks.blocks.receptive_mask import LRBM, ReceptivePrior, check_generator_options
from rep3d_networks.blocks.reparam_form import (
    FORM_KEY,
    REPARAM_MODES,
    decode_form,
    describe,
    encode_form,
    mismatches,
    module_form,
)
from rep3d_networks.ops import dwconv3d

OWN_KEYS = ("weight", "bias", "small_weight", FORM_KEY)
V0_1_FIXED_WARNING = (
    "a rep3d_networks 0.1 state dict (no reparam_state entries) of reparam='fixed' kernels is read as the training "
    "form, the form 0.1 training saved: its keys cannot tell. For one saved after fold(), load "
    "rep3d_networks.mark_folded(state_dict, model) instead."
)


class ReparamDepthwiseConv3d(nn.Module):
    """Depthwise ``K³`` convolution with a training-time re-parameterized kernel.

    ``reparam`` selects how the effective kernel is formed from the stored one:

    * ``"lrbm"``: ``W_eff = W ⊙ (P + fθ(P))`` (Rep3D, eq. 14–16).
    * ``"fixed"``: ``W_eff = W ⊙ P`` with ``β = 1`` (the "Fixed Prior" ablation; nothing extra is learnable).
    * ``"vanilla"``: ``W_eff = W`` (plain large kernel).
    * ``"csla"``: a parallel small ``k³`` depthwise branch, RepLKNet style (eq. 1). The two branches are summed
      *before* the convolution (``W_eff = W + pad(W_s)``), which gives the same output and the same gradients
      for ``W`` and ``W_s`` as two parallel convolutions at the cost of one; train it with
      :func:`rep3d_networks.optim.csla_param_groups` to give each branch its own learning rate (Table 8).

    The mask is applied inside ``forward``; the stored ``weight`` is never overwritten, so two forwards without
    an optimizer step give identical outputs. :meth:`fold` bakes ``W_eff`` into ``weight`` and drops the mask
    and the small branch, leaving a plain depthwise convolution (``folded = True``).

    The state dict says what it holds: a ``reparam_state`` entry (:mod:`~rep3d_networks.blocks.reparam_form`) with
    the folded flag and the configuration. A folded module (``deploy=True`` or folded in place) loads a folded state
    dict as is and folds a training one while loading, so one training checkpoint serves training, inference and
    export. Anything else raises (``RuntimeError`` from ``load_state_dict``, naming what was expected and found): a
    folded state dict into the training form, another ``reparam``, kernel size or generator. State dicts of
    rep3d_networks 0.1 (no entry) are read by :meth:`_legacy_form`.

    Args:
        channels: number of channels ``C`` (depthwise: one ``K³`` filter per channel).
        kernel_size: odd kernel size ``K``.
        reparam: ``"lrbm"``, ``"fixed"``, ``"vanilla"`` or ``"csla"``.
        bias: add a learnable bias.
        small_kernel_size: kernel size of the ``csla`` parallel branch.
        generator_channels: LRBM option, ``"shared"`` or ``"depthwise"``.
        generator_layers: LRBM generator depth.
        generator_kernel_size: LRBM generator convolution size.
        generator_norm_affine: LRBM generator norm affine, ``"channel"``, ``"tap"`` or ``"none"``.
        conv_method: method passed to :func:`rep3d_networks.ops.dwconv3d` (``"auto"``, ``"fft"``, ``"direct"``).
        deploy: build the folded form directly (plain kernel, no mask or small branch).
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        reparam: str = "lrbm",
        bias: bool = False,
        small_kernel_size: int = 3,
        generator_channels: str = "shared",
        generator_layers: int = 2,
        generator_kernel_size: int = 7,
        generator_norm_affine: str = "channel",
        conv_method: str = "auto",
        deploy: bool = False,
    ) -> None:
        super().__init__()
        if reparam not in REPARAM_MODES:
            raise ValueError(f"reparam must be one of {REPARAM_MODES}, got {reparam!r}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
        self.channels = channels
        self.kernel_size = kernel_size
        self.reparam = reparam
        self.conv_method = conv_method
        self.folded = deploy
        # what a training-form twin needs, to fold an unfolded state dict while loading (see _load_from_state_dict)
        self.training_form = dict(
            channels=channels,
            kernel_size=kernel_size,
            reparam=reparam,
            bias=bias,
            small_kernel_size=small_kernel_size,
            generator_channels=generator_channels,
            generator_layers=generator_layers,
            generator_kernel_size=generator_kernel_size,
            generator_norm_affine=generator_norm_affine,
        )
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.mask: Optional[nn.Module] = None
        self.small_weight: Optional[nn.Parameter] = None
        if reparam == "lrbm":
            check_generator_options(generator_channels, generator_layers, generator_kernel_size, generator_norm_affine)
        if reparam == "lrbm" and not deploy:
            self.mask = LRBM(kernel_size, channels, generator_channels, generator_layers, generator_kernel_size, generator_norm_affine)
        elif reparam == "fixed" and not deploy:
            self.mask = ReceptivePrior(kernel_size, learnable=False)
        elif reparam == "csla":
            if small_kernel_size < 1 or small_kernel_size % 2 == 0 or small_kernel_size > kernel_size:
                raise ValueError(f"small_kernel_size must be odd and <= kernel_size, got {small_kernel_size}.")
            if not deploy:
                self.small_weight = nn.Parameter(torch.empty(channels, 1, small_kernel_size, small_kernel_size, small_kernel_size))
        self.register_buffer(FORM_KEY, encode_form(self.form()))
        self.reset_parameters()

    def form(self) -> Dict:
        """What this module's state dict holds: the folded flag and the configuration (see ``reparam_form``)."""
        return module_form(self.training_form, self.folded)

    def reset_parameters(self) -> None:
        """``nn.Conv3d``'s default initialisation for every branch."""
        for weight in (self.weight, self.small_weight):
            if weight is not None:
                nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.kernel_size**3)
            nn.init.uniform_(self.bias, -bound, bound)

    def effective_weight(self) -> torch.Tensor:
        """The kernel actually convolved, ``[C, 1, K, K, K]``."""
        weight = self.weight
        if self.mask is not None:
            weight = weight * self.mask()
        if self.small_weight is not None:
            pad = (self.kernel_size - self.small_weight.shape[-1]) // 2
            weight = weight + F.pad(self.small_weight, [pad] * 6)
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.effective_weight()
        if torch.jit.is_scripting() or torch.jit.is_tracing():  # exporters see a plain depthwise conv
            return F.conv3d(x, weight, self.bias, padding=self.kernel_size // 2, groups=self.channels)
        return dwconv3d(x, weight, self.bias, method=self.conv_method)

    @torch.no_grad()
    def fold(self) -> None:
        """Bakes the effective kernel into ``weight`` and removes the mask and the small branch (in place)."""
        if self.folded:
            return
        self.weight = nn.Parameter(self.effective_weight().detach().clone())
        self.mask = None
        self.small_weight = None
        self.folded = True
        self.reparam_state.copy_(encode_form(self.form()))

    def _legacy_form(self, state_dict: Dict[str, torch.Tensor], prefix: str) -> Dict:
        """The form of a rep3d_networks 0.1 state dict (no ``reparam_state`` entry), read from its keys and shapes.

        * ``lrbm`` and ``csla``: folded when it lacks the training keys (``mask.*``, ``small_weight``).
        * ``vanilla``: both forms hold the same tensors; read in this module's form.
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
        where = prefix[:-1] or type(self).__name__
        keys = [k[len(prefix) :] for k in state_dict if k.startswith(prefix)]
        found = dict(self.training_form)
        if "weight" in keys:
            found["kernel_size"] = state_dict[prefix + "weight"].shape[-1]
        found["bias"] = "bias" in keys
        folded = self.folded
        if any(k.startswith("mask.generator.") for k in keys):
            found.update(reparam="lrbm", generator_norm_affine="tap", **self._v0_1_generator(state_dict, prefix + "mask.generator.layers."))
            folded = False
            if found["generator_kernel_size"] == 1:
                raise ValueError(
                    f"{where}: a rep3d_networks 0.1 LRBM with generator_kernel_size=1 cannot be loaded: its 1³ generator "
                    "convs (which the LayerNorm after each made ineffective) have no counterpart in this version."
                )
            for layer in range(found["generator_layers"]):
                state_dict.pop(f"{prefix}mask.generator.layers.{3 * layer}.bias", None)  # cancelled by the LayerNorm after it
        elif "small_weight" in keys:
            found.update(reparam="csla", small_kernel_size=state_dict[prefix + "small_weight"].shape[-1])
            folded = False
        elif self.reparam in ("lrbm", "csla"):
            folded = True
        elif self.reparam == "fixed":
            warnings.warn(V0_1_FIXED_WARNING, stacklevel=4)
            folded = False
        return module_form(found, folded)

    @staticmethod
    def _v0_1_generator(state_dict: Dict[str, torch.Tensor], layers: str) -> Dict:
        """Generator options of a 0.1 LRBM, from its conv weights ``layers.0``, ``layers.3``, ... (``[G, 1, k, k, k]``)."""
        convs: List[torch.Tensor] = []
        while f"{layers}{3 * len(convs)}.weight" in state_dict and state_dict[f"{layers}{3 * len(convs)}.weight"].dim() == 5:
            convs.append(state_dict[f"{layers}{3 * len(convs)}.weight"])
        if not convs:
            return {}
        return dict(
            generator_channels="shared" if convs[0].shape[0] == 1 else "depthwise",
            generator_layers=len(convs),
            generator_kernel_size=convs[0].shape[-1],
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        """Checks the ``reparam_state`` entry against this module, and folds a training state dict when folded."""
        where = prefix[:-1] or type(self).__name__
        try:
            if prefix + FORM_KEY in state_dict:
                found = decode_form(state_dict[prefix + FORM_KEY], prefix + FORM_KEY)
            else:
                found = self._legacy_form(state_dict, prefix)
                state_dict[prefix + FORM_KEY] = encode_form(found)
        except ValueError as error:
            return self._refuse(state_dict, prefix, error_msgs, str(error))
        expected = self.form()
        problems = mismatches(expected, found)
        if problems:
            message = f"{where}: the state dict holds a {describe(found)} kernel, this module is {describe(expected)}: "
            return self._refuse(state_dict, prefix, error_msgs, message + "; ".join(problems))
        if found["folded"] and not self.folded:
            return self._refuse(
                state_dict,
                prefix,
                error_msgs,
                f"{where}: the state dict holds a folded kernel (W_eff baked in, no mask or small branch) but this module "
                "is the training form: build the network with deploy=True to load it.",
            )
        if self.folded and not found["folded"] and not self._fold_while_loading(state_dict, prefix, strict, where, error_msgs):
            return self._refuse(state_dict, prefix, error_msgs, None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def _refuse(self, state_dict, prefix: str, error_msgs: List[str], message: Optional[str]) -> None:
        """Reports ``message`` and swaps this module's entries for its own state, so that its submodules (loaded
        after it) add no size-mismatch noise to the one error that says what is wrong."""
        if message:
            error_msgs.append(message)
        for key in [k for k in state_dict if k.startswith(prefix)]:
            del state_dict[key]
        state_dict.update({prefix + name: value for name, value in self.state_dict().items()})

    def _fold_while_loading(self, state_dict, prefix: str, strict: bool, where: str, error_msgs: List[str]) -> bool:
        """Replaces this module's training-form entries of ``state_dict`` by their folded form (through a twin)."""
        own = [k for k in state_dict if k.startswith(prefix) and re.match(r"(mask\.|(%s)$)" % "|".join(OWN_KEYS), k[len(prefix) :])]
        twin = ReparamDepthwiseConv3d(**self.training_form)
        try:
            twin.load_state_dict({k[len(prefix) :]: state_dict.pop(k) for k in own}, strict=strict)
        except RuntimeError as error:
            error_msgs.append(f"{where}: folding the training-form state dict while loading failed: {error}")
            return False
        twin.fold()
        state_dict.update({prefix + name: value for name, value in twin.state_dict().items()})
        return True

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, reparam={self.reparam!r}, folded={self.folded}, "
            f"bias={self.bias is not None}"
        )
