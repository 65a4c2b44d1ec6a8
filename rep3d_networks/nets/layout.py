"""Channels-last inference on a CPU: :func:`channels_last_inference`.

oneDNN's 3³ convolutions, which are most of a Rep3D forward (the UNETR decoder), run ~1.5x faster on a CPU with
activations in ``torch.channels_last_3d`` than in NCDHW (issue 29). Two things stand in the way of running a whole
network that way, and this module removes them for the duration of an inference:

* ``nn.InstanceNorm3d`` (the decoder's norm) has no channels-last CPU kernel: each one copies its input to NCDHW and
  back. ``nn.GroupNorm(C, C)`` computes the same normalisation (one group per channel: mean and biased variance over
  the spatial axes, then ``eps``, then the optional per-channel affine) and has a channels-last kernel; it takes the
  instance norm's own parameters, so nothing is copied and checkpoints are untouched.
* the weights are NCDHW: oneDNN picks its output layout from the input and the weight, so the weights are converted
  in place (``param.data``; the ``Parameter`` objects, and so an optimizer's references to them, stay the same).
  A ``1³`` convolution of a one-channel input (the residual path of the decoder's first block, on the raw image) has
  a weight that is NCDHW and channels-last at once, and oneDNN computes it slowly (0.24 s at 48 × 96³) into NCDHW;
  it is computed as what it is, a per-channel scaling of the input written channels-last (:class:`OneChannelScale`,
  0.06 s). Other ``1³`` convolutions (the decoder's residual projections, the output layer) are
  :class:`PointwiseLinear`: in float32 on one thread PyTorch sends a ``1³`` kernel to its reference (THNN) kernel,
  which copies the input and writes NCDHW (2.1 s for 96 -> 48 channels at 96³, against 0.3 s as a matrix product over
  the channels of the channels-last input). A forward hook on every other convolution hands its output on
  channels-last where oneDNN did not (a no-op where it did).

Everything is put back on exit, so a network that is validated during training trains exactly as before.
The large-kernel depthwise convolution (:func:`rep3d_networks.ops.dwconv3d`) returns the memory format of its input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["OneChannelScale", "PointwiseLinear", "channels_last_inference", "instance_norm_as_group_norm"]


def instance_norm_as_group_norm(norm: nn.InstanceNorm3d) -> nn.GroupNorm:
    """A ``GroupNorm(C, C)`` that computes what ``norm`` computes, sharing its affine parameters.

    Raises:
        ValueError: ``norm`` keeps running statistics (its eval output uses them; a group norm cannot).
    """
    if norm.track_running_stats:
        raise ValueError(f"{norm} tracks running statistics; GroupNorm cannot compute its eval output")
    group_norm = nn.GroupNorm(norm.num_features, norm.num_features, eps=norm.eps, affine=False)
    if norm.affine:
        group_norm.affine = True
        group_norm.weight, group_norm.bias = norm.weight, norm.bias
    return group_norm.train(norm.training)


class _PointwiseConv(nn.Module):
    """A ``Conv3d`` with a ``1³`` kernel, stride 1, no padding and one group, computed another way; its parameters are
    used, not copied (the same state-dict keys). Subclasses say which input channel counts they compute."""

    def __init__(self, conv: nn.Conv3d) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias

    @staticmethod
    def takes(in_channels: int) -> bool:
        raise NotImplementedError

    @classmethod
    def computes(cls, module: nn.Module) -> bool:
        """Whether ``module`` is a convolution this class computes."""
        return (
            type(module) is nn.Conv3d
            and cls.takes(module.in_channels)
            and module.kernel_size == (1, 1, 1)
            and module.stride == (1, 1, 1)
            and module.padding == (0, 0, 0)
            and module.groups == 1
        )


class OneChannelScale(_PointwiseConv):
    """A ``Conv3d`` from one input channel with a ``1³`` kernel, computed as ``x * weight + bias`` per output channel,
    written channels-last, in the autocast dtype where autocast is on (as the convolution would be).

    Args:
        conv: the convolution.
    """

    @staticmethod
    def takes(in_channels: int) -> bool:
        return in_channels == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        weight = self.weight.reshape(1, -1, 1, 1, 1).to(dtype)
        out = torch.empty(
            (x.shape[0], weight.shape[1], *x.shape[2:]),
            dtype=dtype,
            device=x.device,
            memory_format=torch.channels_last_3d,
        )
        torch.mul(x.to(dtype), weight, out=out)
        if self.bias is not None:
            out += self.bias.reshape(1, -1, 1, 1, 1).to(dtype)
        return out


class PointwiseLinear(_PointwiseConv):
    """A ``Conv3d`` with a ``1³`` kernel (stride 1, no padding, one group), computed where PyTorch would run it slowly
    as a matrix product over the channels of a channels-last input, written channels-last.

    PyTorch's CPU convolution (``use_mkldnn`` in ATen's ``Convolution.cpp``) gives a ``1³`` kernel of a float32 input
    with a batch under 16 on one thread to its reference (THNN) kernel ("THNN is faster when single-threaded"): on 3D
    inputs it is not (measured: 0.15x-0.18x of its time as a product, module docstring); it also copies the input and
    writes NCDHW. That case is computed by ``F.linear`` on the channels-last input viewed as ``[N, D, H, W, C]`` (no
    copy); every other case (several threads, a large batch, autocast) keeps the convolution.

    Args:
        conv: the convolution.
    """

    @staticmethod
    def takes(in_channels: int) -> bool:
        return in_channels > 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        reference_kernel = (
            device_type == "cpu"
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled(device_type)
            and x.shape[0] < 16
            and torch.get_num_threads() == 1
        )
        if reference_kernel:
            out = nn.functional.linear(x.movedim(1, -1), self.weight.flatten(1), self.bias).movedim(-1, 1)
        else:
            out = nn.functional.conv3d(x, self.weight, self.bias)
        return out.contiguous(memory_format=torch.channels_last_3d)


@contextlib.contextmanager
def channels_last_inference(network: nn.Module) -> Iterator[nn.Module]:
    """Within the block, ``network`` runs channels-last: instance norms (without running statistics) are replaced by
    :func:`instance_norm_as_group_norm`, ``1³`` convolutions by :class:`OneChannelScale` (one input channel) or
    :class:`PointwiseLinear` (several), and 5D
    parameters and buffers are ``channels_last_3d``; on exit the modules and the NCDHW layout are restored.

    Convolution outputs are handed on channels-last by forward hooks, removed on exit (module docstring).
    """
    swapped = []
    for parent in list(network.modules()):
        for name, child in parent.named_children():
            replacement = None
            if isinstance(child, nn.InstanceNorm3d) and not child.track_running_stats:
                replacement = instance_norm_as_group_norm(child)
            elif OneChannelScale.computes(child):
                replacement = OneChannelScale(child)
            elif PointwiseLinear.computes(child):
                replacement = PointwiseLinear(child)
            if replacement is not None:
                setattr(parent, name, replacement)
                swapped.append((parent, name, child))
    converted = []
    for tensor in _tensors_5d(network):
        # .to(), not .contiguous(): a [C, 1, k, k, k] weight is "contiguous" in both formats, and only the
        # channels-last strides make oneDNN answer channels-last
        channels_last = tensor.data.to(memory_format=torch.channels_last_3d)
        if channels_last.stride() != tensor.stride():
            tensor.data = channels_last
            converted.append(tensor)
    hooks = [
        module.register_forward_hook(_output_channels_last)
        for module in network.modules()
        if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d))
    ]
    try:
        yield network
    finally:
        for hook in hooks:
            hook.remove()
        for tensor in converted:
            tensor.data = tensor.data.to(memory_format=torch.contiguous_format)
        for parent, name, child in swapped:
            setattr(parent, name, child)


def _tensors_5d(network: nn.Module) -> list[torch.Tensor]:
    return [t for t in [*network.parameters(), *network.buffers()] if t.dim() == 5]


def _output_channels_last(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
    return output.contiguous(memory_format=torch.channels_last_3d)
