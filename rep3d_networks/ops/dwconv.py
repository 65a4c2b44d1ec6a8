"""Fast depthwise 3D convolution for very large kernels (e.g. 21x21x21): :func:`dwconv3d` and its method choice.

Why this is hand-written:
    Rep3D uses depthwise ``k x k x k`` kernels with ``k`` up to 21.  PyTorch's native
    ``F.conv3d(groups=C)`` computes these by direct summation; its forward is tolerable, but
    its backward on CPU is dreadful (8 channels x 48^3, k=21: forward 0.11 s, backward 16 s).
    cuDNN's depthwise 3D backward for large kernels is also slow.  No library we know
    provides a fast large-kernel depthwise 3D convolution with a fast backward, so
    :func:`dwconv3d` implements one with FFTs (:mod:`rep3d_networks.ops.fft`), plus a few safe shape tricks.

Kernel cropping:
    When the map is small compared to the kernel (e.g. 6^3 under 21^3 with "same" padding),
    taps that can never overlap the input are sliced off before any method runs (per axis,
    at most ``2 * n - 1`` taps survive for "same" padding) and the padding is adjusted.  The
    result is unchanged; the dropped taps get an exactly-zero gradient because the crop is a
    slice that autograd scatters back into the full kernel shape.

Precision:
    All methods compute in float32 (float64 if an operand is float64) with autocast disabled,
    and return the dtype of ``x``.

Method choice ("auto"):
    Measured on this machine (AMD EPYC, 2 cores shared with other jobs, load ~5, torch 2.14.1,
    MKL FFT, 1 torch thread because 2 threads on busy cores add ~30 ms stalls per op; float32,
    batch 1, 8 channels, "same" padding, kernel cropped as above) with
    ``python benchmarks/bench_dwconv.py --crossover --threads 1``.  Cells are the time ratio
    direct / fft (> 1: fft faster; min of 5-7 runs; "-" = cropped to ``2n - 1``, "F" = direct
    not timed because fft had already won by > 2x at two smaller ``k``)::

        forward only   k=3    5     7     9     11    13    15    17    21
        n=6           0.51  0.50  0.45  0.40  0.46   -     -     -     -
        n=8           0.44  0.46  0.44  0.54  0.42  0.52  0.57   -     -
        n=12          0.29  0.32  0.46  0.63  0.45  0.87  0.73  1.92  0.90 (a)
        n=16          0.18  0.31  0.46  0.89  1.00  2.65  1.95  3.62  3.81
        n=24          0.13  0.09  0.49  0.65  2.68  4.65   F     F     F
        n=32          0.05  0.15  0.28  1.26  0.73 (b) 1.52 3.97 5.71  F
        n=48          0.05  0.16  0.33  0.89  1.13  2.68  4.10   F     F

        fwd + bwd      k=3    5     7     9     11    21
        n=6           1.13  0.82  1.95  2.84  2.86   -
        n=8           0.69  1.39  2.45  4.25   F     -
        n=12          0.80  1.40  4.32  15.6   F     F
        n=16          1.49  3.72  8.88   F     F     F
        n=24          1.33  3.19  5.22   F     F     F
        n=32          1.10  3.93  9.78   F     F     F
        n=48          1.58  6.50  8.13   F     F     F

    (a) other runs: 2.02 and 0.32; at the real stage width (192ch x 12^3) fft was 1.3x faster
    with 1 thread and 1.25x with 2.  (b) other runs: 1.23 and 1.07.  Sub-millisecond cells
    (n <= 8) are dominated by per-call overhead and noise.  Absolute scale: 8ch x 48^3, k=21,
    fwd+bwd: direct ~16 s, fft ~0.13-0.36 s.

    Resulting rule on CPU, with ``n`` and ``k`` the geometric-mean map and (cropped) kernel
    sizes: with grad, fft if ``k >= 5`` (``k >= 7`` when ``n < 8``), else direct; forward only,
    direct if ``n < 12``, else fft if ``k >= 17`` (``n < 16``), ``k >= 13`` (``n < 24``) or
    ``k >= 11`` (``n >= 24``).  Both methods scale linearly in batch x channels, so these
    crossovers do not depend much on them (fft amortises the kernel transform over the batch).

    Re-measured for channels-last inference (issue 29; 2026-12-06, Intel Xeon with AVX512-BF16/AMX, 2 threads,
    forward only, 192 channels as Rep3D's 12³ stage, ``--crossover --crossover_n 8 12 16 --crossover_k 11 13 15 17
    21 --crossover_channels 192``): n=12 k=17 1.06, k=21 1.08 (a tie: direct is not faster here); n=16 k=17 2.52,
    k=21 2.24; n=8 0.38-0.83. The rule stands. A channels-last input costs fft a copy to NCDHW (its transform of a
    channels-last tensor was ~2x slower) and both methods return the input's memory format.

    CUDA, measured on an NVIDIA H200 (torch 2.11.0+cu130, cuDNN 9.19; ``benchmarks/gpu_check.sh`` part
    dwconv_speed, 2026-12-04, ``../shared/gpu/2026-12-04/gpu_check_report.md``; float32, batch 2, the channel
    count of Rep3D's stage at that size, "same" padding; ratio direct (cuDNN) / fft, > 1: fft faster; at n=6 the
    21-kernel is cropped to 11)::

        forward only   k=7    k=21          fwd + bwd      k=7    k=21
        n=6           0.33   0.71 (11)      n=6           0.84   2.17 (11)
        n=12          0.58   6.24           n=12          1.05   19.6
        n=24          1.66   25.2           n=24          2.88   68.0
        n=48          2.27   42.9           n=48          5.84    127

    Under fp16 autocast the ratios are alike (fft computes in float32 either way). Resulting rule on CUDA: with
    grad, fft if ``k >= 7`` (``k >= 9`` when ``n < 12``); forward only, direct if ``n < 12``, else fft if
    ``k >= 11`` (``n < 24``) or ``k >= 7`` (``n >= 24``). Cells between the measured kernels are interpolated
    with direct's cost growing as ``k^3`` and fft's flat. Other accelerators (unmeasured) keep the conservative
    rule: fft only with grad and ``k >= 7``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from rep3d_networks.ops.fft import FFTDepthwiseConv3d, KernelSpectrumCache

__all__ = ["dwconv3d"]

_METHODS = ("auto", "direct", "fft")


def dwconv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: int | Sequence[int] | str | None = None,
    method: str = "auto",
    kernel_spectra: KernelSpectrumCache | None = None,
) -> torch.Tensor:
    """Depthwise 3D cross-correlation, same result as ``F.conv3d(x, weight, bias, padding=padding, groups=C)``.

    Args:
        x: input ``[B, C, D, H, W]``.
        weight: kernel ``[C, 1, kD, kH, kW]`` with odd ``kD, kH, kW`` (anisotropic allowed).
        bias: optional ``[C]``.
        padding: zero padding per side. ``None`` or ``"same"``: ``k // 2`` per axis (output has the
            input's spatial size); ``"valid"``: 0; an int or a 3-tuple of ints ``>= 0``.
        method: ``"direct"`` (``F.conv3d``), ``"fft"`` (FFT with hand-written backward) or
            ``"auto"`` (picks the faster one from shape, kernel, device and whether grad is needed).
        kernel_spectra: for a kernel that rarely changes (a folded network's), a cache of its FFT (the "fft" method).

    Returns:
        ``[B, C, D', H', W']`` in the dtype of ``x`` (computed in float32, or float64).

    Raises:
        ValueError: on malformed shapes, even kernel sizes, bad padding or an unknown method.
    """
    pads = _check_args(x, weight, bias, padding, method)
    weight, pads = _crop_kernel(weight, tuple(x.shape[2:]), pads)
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)
    if method == "auto":
        method = _choose_method(tuple(x.shape), tuple(weight.shape[2:]), x.device.type, needs_grad)

    dtype = torch.promote_types(torch.promote_types(x.dtype, weight.dtype), torch.float32)
    with torch.autocast(device_type=x.device.type, enabled=False):
        xc, wc = x.to(dtype), weight.to(dtype)
        bc = None if bias is None else bias.to(dtype)
        if method == "direct":
            out = _direct(xc, wc, bc, pads)
        else:
            out = FFTDepthwiseConv3d.apply(xc, wc, bc, pads, kernel_spectra)
    return out.to(x.dtype)


def _check_args(x, weight, bias, padding, method) -> tuple[int, int, int]:
    """Validate the arguments; return the padding per spatial axis."""
    if method not in _METHODS:
        raise ValueError(f"dwconv3d: method must be one of {_METHODS}, got {method!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 5:
        raise ValueError(f"dwconv3d: x must be a 5D tensor [B, C, D, H, W], got shape {tuple(getattr(x, 'shape', ()))}")
    if not (x.is_floating_point() and weight.is_floating_point()):
        raise ValueError(f"dwconv3d: x and weight must be floating point, got {x.dtype} and {weight.dtype}")
    channels = x.shape[1]
    if weight.dim() != 5 or weight.shape[0] != channels or weight.shape[1] != 1:
        raise ValueError(
            f"dwconv3d: weight must have shape [C, 1, kD, kH, kW] with C={channels} (depthwise), "
            f"got {tuple(weight.shape)}"
        )
    kernel = tuple(weight.shape[2:])
    if any(k % 2 == 0 for k in kernel):
        raise ValueError(f"dwconv3d: kernel sizes must be odd, got kernel {kernel}")
    if bias is not None and tuple(bias.shape) != (channels,):
        raise ValueError(f"dwconv3d: bias must have shape [{channels}], got {tuple(bias.shape)}")
    if x.device != weight.device or (bias is not None and bias.device != x.device):
        raise ValueError("dwconv3d: x, weight and bias must be on the same device")

    if padding is None or padding == "same":
        pad = tuple(k // 2 for k in kernel)
    elif padding == "valid":
        pad = (0, 0, 0)
    elif isinstance(padding, int) and not isinstance(padding, bool):
        pad = (padding,) * 3
    elif isinstance(padding, Sequence) and not isinstance(padding, str) and len(padding) == 3:
        pad = tuple(padding)
    else:
        raise ValueError(f"dwconv3d: padding must be None, 'same', 'valid', an int or 3 ints, got {padding!r}")
    if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pad):
        raise ValueError(f"dwconv3d: padding must be non-negative ints, got {padding!r}")
    for n, k, p in zip(x.shape[2:], kernel, pad):
        if n + 2 * p - k + 1 < 1:
            raise ValueError(
                f"dwconv3d: empty output: spatial size {tuple(x.shape[2:])} with padding {pad} "
                f"is smaller than kernel {kernel}"
            )
    return pad


def _crop_kernel(weight, spatial, pads):
    """Slice off taps that never overlap the input; adjust padding so the result is unchanged.

    Tap ``t`` meets input sample ``o + t - p`` for outputs ``o in [0, n_out)``; it can reach
    ``[0, n)`` only if ``k - n - p <= t <= p + n - 1``, i.e. ``c = max(0, k - n - p)`` taps are
    dead at each end (symmetric, so the padding stays symmetric: ``p - c``).
    """
    cut = [max(0, k - n - p) for n, k, p in zip(spatial, weight.shape[2:], pads)]
    if not any(cut):
        return weight, pads
    slices = [slice(c, k - c) for c, k in zip(cut, weight.shape[2:])]
    return weight[(slice(None), slice(None), *slices)], tuple(p - c for p, c in zip(pads, cut))


def _direct(x, weight, bias, pads):
    return F.conv3d(x, weight, bias, padding=pads, groups=x.shape[1])


def _choose_method(x_shape, kernel, device_type: str, needs_grad: bool) -> str:
    """Pick "direct" or "fft" for one call (kernel already cropped). Crossovers: module docstring.

    Anisotropic shapes are compared by volume, i.e. by the geometric mean of their sizes.
    """
    n3, k3 = math.prod(x_shape[2:]), math.prod(kernel)
    if device_type == "cuda":
        if needs_grad:
            return "fft" if k3 >= (9**3 if n3 < 12**3 else 7**3) else "direct"
        if n3 < 12**3:
            return "direct"
        return "fft" if k3 >= (11**3 if n3 < 24**3 else 7**3) else "direct"
    if device_type != "cpu":  # unmeasured: see module docstring
        return "fft" if needs_grad and min(kernel) >= 7 else "direct"
    if needs_grad:
        return "fft" if k3 >= (5**3 if n3 >= 8**3 else 7**3) else "direct"
    if n3 < 12**3:
        return "direct"
    return "fft" if k3 >= (17**3 if n3 < 16**3 else 13**3 if n3 < 24**3 else 11**3) else "direct"
