"""The FFT path of :func:`rep3d_networks.ops.dwconv3d`: depthwise 3D correlation with a hand-written backward.

Maths (per channel ``c`` and per spatial axis; the three axes are independent):
    The op is the cross-correlation of ``F.conv3d``::

        y[o] = b + sum_t w[t] * x[o + t - p],     o in [0, n_out),  n_out = n + 2p - k + 1

    with ``x`` zero outside ``[0, n)`` and ``p`` the zero padding on each side.
    Zero-pad ``x`` to a fast FFT length ``L >= max(n + p, k, n_out)`` and place the kernel
    circularly as ``g[(t - p) mod L] = w[t]``.  Then with ``X = rfft(x)``,
    ``G = rfft(g)`` (over the three spatial axes)::

        y      = irfft(X * conj(G))[:n_out]                         (circular correlation)
        dL/dx  = irfft(GY * G)[:n]                                  (circular convolution)
        dL/dg  = irfft(sum_batch X * conj(GY)),  dL/dw[t] = dL/dg[(t - p) mod L]
        dL/db  = sum of grad_out over batch and space

    where ``GY = rfft(grad_out zero-padded to L)``.  The bound on ``L`` guarantees that no
    circular wrap-around ever reaches a non-zero sample, so the circular formulas are the
    exact linear ones (and their adjoints).  Forward saves ``X`` and ``G``, so backward costs
    one forward FFT (``GY``) plus two inverse FFTs, i.e. about the same as the forward.
    ``L`` is the smallest integer ``>=`` the bound whose prime factors are in {2, 3, 5, 7}, or
    the next power of two if that is at most 1.26x larger (see ``_fast_len``).  Any padding
    ``p >= 0`` works (the bound grows with ``p``), so "fft" never needs to fall back to direct.
"""

from __future__ import annotations

import itertools

import torch
from torch.autograd.function import once_differentiable

_SPATIAL_DIMS = (-3, -2, -1)


def _fast_len(n: int) -> int:
    """FFT length ``>= n``: the smallest with prime factors in {2, 3, 5, 7}, or the next power of two
    when that has at most twice the volume in 3D (``p <= 1.26 m``): power-of-two transforms ran about
    twice as fast per sample in MKL here (e.g. 8 x 64^3: 11 ms vs 8 x 60^3: 15 ms)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            break
        m += 1
    pow2 = 1 << (n - 1).bit_length()
    return pow2 if pow2**3 <= 2 * m**3 else m


def _tap_blocks(kernel, pads, fft_size):
    """Pairs of slices ``(taps, positions)``: kernel taps ``t`` and their places ``(t - p) mod L`` in the padded
    kernel, in up to 8 rectangular blocks (per axis, taps ``t >= p`` go to ``[0, k - p)``, taps ``t < p`` to
    ``[L - p, L)``)."""
    per_axis = []
    for k, p, size in zip(kernel, pads, fft_size):
        runs = [(slice(min(p, k), k), slice(0, max(k - p, 0)))]
        if p > 0:
            runs.append((slice(0, min(p, k)), slice(size - p, size - p + min(p, k))))
        per_axis.append(runs)
    for (s0, d0), (s1, d1), (s2, d2) in itertools.product(*per_axis):
        yield (s0, s1, s2), (d0, d1, d2)


def kernel_spectrum(weight: torch.Tensor, pads, fft_size) -> torch.Tensor:
    """``G = rfft(g)`` of the kernel placed as ``g[(t - p) mod L] = w[t]`` (module docstring)."""
    # written block by block: torch.roll of the padded kernel copied it through an index gather (~1 s per paper-size
    # forward on a CPU)
    g = weight.new_zeros((weight.shape[0], *fft_size))
    for src, dst in _tap_blocks(tuple(weight.shape[2:]), pads, fft_size):
        g[(slice(None), *dst)] = weight[(slice(None), 0, *src)]
    return torch.fft.rfftn(g, dim=_SPATIAL_DIMS)


class KernelSpectrumCache:
    """:func:`kernel_spectrum` of the last kernel it computed, returned again while that kernel is unchanged.

    For a kernel that stays the same from call to call (a folded network's weight): per 96³ window of the paper-size
    Rep3D the kernel transforms cost as much as the input transforms of the FFT layers. The cache holds the kernel
    tensor it computed from, so no other tensor can take its memory: same data pointer, version counter (bumped by
    every in-place change, e.g. ``load_state_dict``), shape, strides and geometry mean the same kernel.
    """

    def __init__(self) -> None:
        self._kernel = self._key = self._spectrum = None

    def __call__(self, weight: torch.Tensor, pads, fft_size) -> torch.Tensor:
        key = (weight.data_ptr(), weight._version, weight.shape, weight.stride(), weight.dtype, pads, fft_size)
        if self._kernel is None or key != self._key:
            self._spectrum = kernel_spectrum(weight.detach(), pads, fft_size)
            self._kernel, self._key = weight, key
        return self._spectrum


def _is_channels_last(x: torch.Tensor) -> bool:
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last_3d)


class FFTDepthwiseConv3d(torch.autograd.Function):
    """FFT depthwise correlation; backward reuses the forward spectra (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, pads, spectra=None):
        spatial, kernel = tuple(x.shape[2:]), tuple(weight.shape[2:])
        out_size = tuple(n + 2 * p - k + 1 for n, k, p in zip(spatial, kernel, pads))
        fft_size = tuple(_fast_len(max(n + p, k, no)) for n, k, no, p in zip(spatial, kernel, out_size, pads))

        g_f = kernel_spectrum(weight, pads, fft_size) if spectra is None else spectra(weight, pads, fft_size)
        # the transform of a channels-last tensor is ~2x slower than a copy to NCDHW and the NCDHW transform
        x_f = torch.fft.rfftn(x.contiguous(), s=fft_size, dim=_SPATIAL_DIMS)
        y = torch.fft.irfftn(x_f * g_f.conj(), s=fft_size, dim=_SPATIAL_DIMS)
        # the output keeps the input's memory format (as F.conv3d does); one copy either way
        memory_format = torch.channels_last_3d if _is_channels_last(x) else torch.contiguous_format
        y = y[..., : out_size[0], : out_size[1], : out_size[2]].contiguous(memory_format=memory_format)
        if bias is not None:
            y += bias.view(1, -1, 1, 1, 1)

        ctx.save_for_backward(x_f, g_f)
        ctx.geometry = (spatial, kernel, fft_size, pads)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x_f, g_f = ctx.saved_tensors
        spatial, kernel, fft_size, pads = ctx.geometry
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        grad_x = grad_w = grad_b = None
        with torch.autocast(device_type=grad_out.device.type, enabled=False):
            if need_x or need_w:
                gy_f = torch.fft.rfftn(grad_out.to(x_f.real.dtype), s=fft_size, dim=_SPATIAL_DIMS)
            if need_x:
                grad_x = torch.fft.irfftn(gy_f * g_f, s=fft_size, dim=_SPATIAL_DIMS)
                grad_x = grad_x[..., : spatial[0], : spatial[1], : spatial[2]].contiguous()
            if need_w:
                grad_g = torch.fft.irfftn((x_f * gy_f.conj()).sum(0), s=fft_size, dim=_SPATIAL_DIMS)
                grad_w = grad_g.new_empty((grad_g.shape[0], 1, *kernel))
                for src, dst in _tap_blocks(kernel, pads, fft_size):
                    grad_w[(slice(None), 0, *src)] = grad_g[(slice(None), *dst)]
            if need_b:
                grad_b = grad_out.sum((0, 2, 3, 4))
        return grad_x, grad_w, grad_b, None, None
