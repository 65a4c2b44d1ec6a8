"""Tests for :func:`rep3d_networks.ops.dwconv3d` (tiny shapes; the whole file runs in seconds on CPU)."""

import random

import pytest
import torch
import torch.nn.functional as F

from rep3d_networks.ops import _choose_method, _fast_len, dwconv3d

TOL = 1e-4  # max |a - b| / max |b|, float32


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny ops: on a shared 2-core machine, thread hand-offs cost more than the maths."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def _run(fn, x, w, b, grad_out):
    """Output and (x, w, b) gradients of fn(x, w, b) for the loss sum(out * grad_out)."""
    x, w, b = (t.detach().clone().requires_grad_(True) for t in (x, w, b))
    out = fn(x, w, b)
    out.backward(grad_out)
    return out.detach(), x.grad, w.grad, b.grad


def _sweep_cases(n_cases=40, seed=0):
    rng = random.Random(seed)
    cases = []
    for i in range(n_cases):
        k = rng.choice([1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21])
        kernel = (k, k, k) if i % 4 else tuple(rng.choice([1, 3, 5, 7, 9]) for _ in range(3))  # some anisotropic
        spatial = tuple(rng.randint(1, 11) for _ in range(3))  # odd/even/anisotropic, often smaller than k
        if i % 3 == 0:  # explicit padding, at least large enough for a non-empty output
            padding = tuple(max(rng.randint(0, kk // 2 + 2), (kk - n + 1) // 2) for kk, n in zip(kernel, spatial))
        else:
            padding = None
        cases.append((i, rng.randint(1, 2), rng.randint(1, 3), spatial, kernel, padding))
    return cases


@pytest.mark.parametrize("seed,batch,channels,spatial,kernel,padding", _sweep_cases())
def test_matches_native_conv3d(seed, batch, channels, spatial, kernel, padding):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, *spatial, generator=gen)
    w = torch.randn(channels, 1, *kernel, generator=gen)
    b = torch.randn(channels, generator=gen)
    native_pad = tuple(k // 2 for k in kernel) if padding is None else padding
    native = lambda x, w, b: F.conv3d(x, w, b, padding=native_pad, groups=channels)  # noqa: E731
    grad_out = torch.randn(native(x, w, b).shape, generator=gen)
    ref = _run(native, x, w, b, grad_out)
    for method in ("direct", "fft", "auto"):
        got = _run(lambda x, w, b: dwconv3d(x, w, b, padding=padding, method=method), x, w, b, grad_out)
        assert got[0].shape == ref[0].shape and got[2].shape == w.shape
        for name, g, r in zip(("out", "grad_x", "grad_w", "grad_b"), got, ref):
            assert _rel_err(g, r) < TOL, f"{method} {name}: rel err {_rel_err(g, r):.2e}"


@pytest.mark.parametrize(
    "spatial,kernel,padding",
    [((4, 3, 5), (3, 3, 3), None), ((2, 3, 2), (7, 5, 7), None), ((3, 4, 2), (3, 5, 3), (2, 1, 3))],
)
def test_fft_gradcheck_float64(spatial, kernel, padding):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 2, *spatial, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn(2, 1, *kernel, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, generator=gen, requires_grad=True)
    fn = lambda x, w, b: dwconv3d(x, w, b, padding=padding, method="fft")  # noqa: E731
    assert fn(x, w, b).dtype == torch.float64
    assert torch.autograd.gradcheck(fn, (x, w, b), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", ["direct", "fft", "auto"])
def test_cropped_taps_get_zero_grad(method):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(1, 2, 3, 4, 3, generator=gen)
    w = torch.randn(2, 1, 21, 21, 21, generator=gen, requires_grad=True)
    out = dwconv3d(x, w, method=method)
    ref = F.conv3d(x, w.detach(), padding=10, groups=2)
    assert out.shape == ref.shape and _rel_err(out.detach(), ref) < TOL
    out.backward(torch.randn(out.shape, generator=gen))
    assert w.grad.shape == w.shape
    # Taps reachable from a map of size n under "same" padding: centre +- (n - 1).
    live = torch.zeros_like(w, dtype=torch.bool)
    live[:, :, 8:13, 7:14, 8:13] = True
    assert torch.all(w.grad[~live] == 0)
    assert w.grad[live].abs().min() > 0


def test_autocast_cpu_bfloat16():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 3, 6, 7, 5, generator=gen)
    w = torch.randn(3, 1, 5, 5, 5, generator=gen)
    b = torch.randn(3, generator=gen)
    ref = dwconv3d(x, w, b, method="fft")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out32 = dwconv3d(x, w, b, method="fft")
        xb = x.to(torch.bfloat16).requires_grad_(True)
        wr = w.clone().requires_grad_(True)
        out16 = dwconv3d(xb, wr, b, method="fft")
    assert out32.dtype == torch.float32 and _rel_err(out32, ref) < TOL
    assert out16.dtype == torch.bfloat16 and _rel_err(out16.float(), ref) < 3e-2
    out16.float().sum().backward()
    assert xb.grad.dtype == torch.bfloat16 and wr.grad.dtype == torch.float32


def test_no_grad_and_bias_only_grad():
    x, w = torch.randn(1, 2, 5, 5, 5), torch.randn(2, 1, 3, 3, 3)
    b = torch.zeros(2, requires_grad=True)
    with torch.no_grad():
        out = dwconv3d(x, w, b, method="fft")
    assert not out.requires_grad
    dwconv3d(x, w, b, method="fft").sum().backward()
    assert torch.equal(b.grad, torch.full((2,), 125.0))


@pytest.mark.parametrize(
    "x_shape,w_shape,kwargs,match",
    [
        ((1, 2, 5, 5), (2, 1, 3, 3, 3), {}, "5D"),
        ((1, 2, 5, 5, 5), (2, 2, 3, 3, 3), {}, r"\[C, 1, kD, kH, kW\]"),
        ((1, 2, 5, 5, 5), (3, 1, 3, 3, 3), {}, "C=2"),
        ((1, 2, 5, 5, 5), (2, 1, 3, 3), {}, "weight must have shape"),
        ((1, 2, 5, 5, 5), (2, 1, 4, 4, 4), {}, "odd"),
        ((1, 2, 5, 5, 5), (2, 1, 3, 3, 3), {"method": "winograd"}, "method"),
        ((1, 2, 5, 5, 5), (2, 1, 3, 3, 3), {"padding": -1}, "non-negative"),
        ((1, 2, 5, 5, 5), (2, 1, 3, 3, 3), {"padding": (1, 1)}, "padding"),
        ((1, 2, 2, 5, 5), (2, 1, 5, 3, 3), {"padding": 0}, "empty output"),
    ],
)
def test_bad_inputs_raise(x_shape, w_shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        dwconv3d(torch.randn(x_shape), torch.randn(w_shape), **kwargs)


def test_bad_bias_raises():
    with pytest.raises(ValueError, match="bias"):
        dwconv3d(torch.randn(1, 2, 5, 5, 5), torch.randn(2, 1, 3, 3, 3), torch.randn(3))


def test_auto_choice():
    assert _choose_method((1, 48, 48, 48, 48), (21, 21, 21), "cpu", True) == "fft"
    assert _choose_method((1, 48, 48, 48, 48), (21, 21, 21), "cpu", False) == "fft"
    assert _choose_method((1, 384, 6, 6, 6), (11, 11, 11), "cpu", False) == "direct"
    assert _choose_method((1, 8, 32, 32, 32), (3, 3, 3), "cpu", True) == "direct"
    assert _choose_method((1, 8, 32, 32, 32), (7, 7, 7), "mps", True) == "fft"
    assert _choose_method((1, 8, 32, 32, 32), (7, 7, 7), "mps", False) == "direct"


def test_fast_len():
    assert [_fast_len(n) for n in (1, 11, 13, 22, 34, 58, 97)] == [1, 12, 16, 24, 35, 64, 98]


H200_DIRECT_OVER_FFT = [  # (channels, n, cropped k, with grad, cuDNN time / fft time) from the H200 check, 2026-12-04
    (384, 6, 11, False, 0.71),
    (192, 12, 21, False, 6.24),
    (96, 24, 21, False, 25.24),
    (48, 48, 21, False, 42.94),
    (384, 6, 7, False, 0.33),
    (192, 12, 7, False, 0.58),
    (96, 24, 7, False, 1.66),
    (48, 48, 7, False, 2.27),
    (384, 6, 11, True, 2.17),
    (192, 12, 21, True, 19.57),
    (96, 24, 21, True, 67.97),
    (48, 48, 21, True, 126.61),
    (384, 6, 7, True, 0.84),
    (192, 12, 7, True, 1.05),
    (96, 24, 7, True, 2.88),
    (48, 48, 7, True, 5.84),
]


@pytest.mark.parametrize("channels, n, k, needs_grad, direct_over_fft", H200_DIRECT_OVER_FFT)
def test_cuda_auto_picks_the_faster_method_measured_on_an_h200(channels, n, k, needs_grad, direct_over_fft):
    """On CUDA ``auto`` picks what the H200 measured faster at each of Rep3D's stage sizes (CPU test of the rule)."""
    faster = "fft" if direct_over_fft > 1 else "direct"
    assert _choose_method((2, channels, n, n, n), (k, k, k), "cuda", needs_grad) == faster


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fft_matches_direct():
    x = torch.randn(2, 4, 9, 10, 11, device="cuda")
    w = torch.randn(4, 1, 7, 7, 7, device="cuda")
    b = torch.randn(4, device="cuda")
    grad_out = torch.randn(2, 4, 9, 10, 11, device="cuda")
    ref = _run(lambda x, w, b: dwconv3d(x, w, b, method="direct"), x, w, b, grad_out)
    got = _run(lambda x, w, b: dwconv3d(x, w, b, method="fft"), x, w, b, grad_out)
    for g, r in zip(got, ref):
        assert _rel_err(g, r) < 1e-3  # cuDNN may use TF32


def test_kernel_spectrum_cache_reuses_and_follows_the_kernel():
    """The cached kernel transform gives the uncached result, is reused while the kernel is the same tensor with the
    same contents, and is recomputed after an in-place change (as ``load_state_dict`` makes) or for another size."""
    from rep3d_networks.ops.fft import KernelSpectrumCache

    gen = torch.Generator().manual_seed(3)
    x, w = torch.randn(1, 3, 9, 8, 7, generator=gen), torch.randn(3, 1, 7, 7, 7, generator=gen)
    cache = KernelSpectrumCache()
    first = dwconv3d(x, w, method="fft", kernel_spectra=cache)
    spectrum = cache._spectrum
    assert _rel_err(first, F.conv3d(x, w, padding=3, groups=3)) < TOL
    assert torch.equal(dwconv3d(x, w, method="fft", kernel_spectra=cache), first) and cache._spectrum is spectrum
    with torch.no_grad():
        w.mul_(-2)
    changed = dwconv3d(x, w, method="fft", kernel_spectra=cache)
    assert cache._spectrum is not spectrum and _rel_err(changed, -2 * first) < TOL
    other = x[..., :5]
    assert (
        _rel_err(dwconv3d(other, w, method="fft", kernel_spectra=cache), F.conv3d(other, w, padding=3, groups=3)) < TOL
    )
