"""Depthwise large-kernel convolution whose kernel is re-parameterized during training and folded for inference."""

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from rep3d_networks.blocks.receptive_mask import LRBM, ReceptivePrior
from rep3d_networks.ops import dwconv3d

REPARAM_MODES = ("lrbm", "fixed", "vanilla", "csla")


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

    A folded module (built with ``deploy=True`` or folded in place) loads both kinds of state dict strictly: a
    folded one as is, and a training (unfolded) one of the same ``reparam``, which it folds while loading. So one
    training checkpoint serves training, inference with the folded network and TorchScript export.

    Args:
        channels: number of channels ``C`` (depthwise: one ``K³`` filter per channel).
        kernel_size: odd kernel size ``K``.
        reparam: ``"lrbm"``, ``"fixed"``, ``"vanilla"`` or ``"csla"``.
        bias: add a learnable bias.
        small_kernel_size: kernel size of the ``csla`` parallel branch.
        generator_channels: LRBM option, ``"shared"`` or ``"depthwise"``.
        generator_layers: LRBM generator depth.
        generator_kernel_size: LRBM generator convolution size.
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
        )
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(channels)) if bias else None
        self.mask: Optional[nn.Module] = None
        self.small_weight: Optional[nn.Parameter] = None
        if deploy:
            pass
        elif reparam == "lrbm":
            self.mask = LRBM(kernel_size, channels, generator_channels, generator_layers, generator_kernel_size)
        elif reparam == "fixed":
            self.mask = ReceptivePrior(kernel_size, learnable=False)
        elif reparam == "csla":
            if small_kernel_size < 1 or small_kernel_size % 2 == 0 or small_kernel_size > kernel_size:
                raise ValueError(f"small_kernel_size must be odd and <= kernel_size, got {small_kernel_size}.")
            self.small_weight = nn.Parameter(torch.empty(channels, 1, small_kernel_size, small_kernel_size, small_kernel_size))
        self.reset_parameters()

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

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        """Folds a training-form (unfolded) state dict on the fly when this module is folded."""
        training_keys = [k for k in state_dict if k.startswith(prefix + "mask.") or k == prefix + "small_weight"]
        if self.folded and training_keys:
            twin = ReparamDepthwiseConv3d(**self.training_form)
            own = [
                k
                for k in state_dict
                if k.startswith(prefix)
                and (k[len(prefix) :] in ("weight", "bias", "small_weight") or k[len(prefix) :].startswith("mask."))
            ]
            twin.load_state_dict({k[len(prefix) :]: state_dict.pop(k) for k in own}, strict=strict)
            twin.fold()
            for name, value in twin.state_dict().items():
                state_dict[prefix + name] = value
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (
            f"{self.channels}, kernel_size={self.kernel_size}, reparam={self.reparam!r}, folded={self.folded}, "
            f"bias={self.bias is not None}"
        )
