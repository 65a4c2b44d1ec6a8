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

import torch
import torch.nn.functional as F
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


class FFTDepthwiseConv3d(torch.autograd.Function):
    """FFT depthwise correlation; backward reuses the forward spectra (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, weight, bias, pads):
        spatial, kernel = tuple(x.shape[2:]), tuple(weight.shape[2:])
        out_size = tuple(n + 2 * p - k + 1 for n, k, p in zip(spatial, kernel, pads))
        fft_size = tuple(_fast_len(max(n + p, k, no)) for n, k, no, p in zip(spatial, kernel, out_size, pads))

        # g[(t - p) mod L] = w[t]: pad the kernel to L, then roll tap ``p`` to index 0.
        g = F.pad(weight[:, 0], [p for k, size in zip(reversed(kernel), reversed(fft_size)) for p in (0, size - k)])
        g_f = torch.fft.rfftn(torch.roll(g, tuple(-p for p in pads), _SPATIAL_DIMS), dim=_SPATIAL_DIMS)
        x_f = torch.fft.rfftn(x, s=fft_size, dim=_SPATIAL_DIMS)
        y = torch.fft.irfftn(x_f * g_f.conj(), s=fft_size, dim=_SPATIAL_DIMS)
        y = y[..., : out_size[0], : out_size[1], : out_size[2]]
        y = y.contiguous() if bias is None else y + bias.view(1, -1, 1, 1, 1)

        ctx.save_for_backward(x_f, g_f)
        ctx.geometry = (spatial, kernel, fft_size, pads)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        x_f, g_f = ctx.saved_tensors
        spatial, kernel, fft_size, pads = ctx.geometry
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        grad_x = grad_w = grad_b = None
        with torch.autocast(device_type=grad_out.device.type, enabled=False):
            if need_x or need_w:
                gy_f = torch.fft.rfftn(grad_out.to(x_f.real.dtype), s=fft_size, dim=_SPATIAL_DIMS)
            if need_x:
                grad_x = torch.fft.irfftn(gy_f * g_f, s=fft_size, dim=_SPATIAL_DIMS)
                grad_x = grad_x[..., : spatial[0], : spatial[1], : spatial[2]].contiguous()
            if need_w:
                grad_g = torch.fft.irfftn((x_f * gy_f.conj()).sum(0), s=fft_size, dim=_SPATIAL_DIMS)
                grad_w = torch.roll(grad_g, pads, _SPATIAL_DIMS)[..., : kernel[0], : kernel[1], : kernel[2]]
                grad_w = grad_w.unsqueeze(1).contiguous()
            if need_b:
                grad_b = grad_out.sum((0, 2, 3, 4))
        return grad_x, grad_w, grad_b, None
