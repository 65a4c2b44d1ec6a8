"""Large-kernel depthwise 3D convolution: :func:`dwconv3d` and its method choice (``dwconv``), the FFT path
(``fft``)."""

from rep3d_networks.ops.dwconv import _choose_method, dwconv3d
from rep3d_networks.ops.fft import _fast_len

__all__ = ["dwconv3d", "_choose_method", "_fast_len"]  # the last two for benchmarks and tests
