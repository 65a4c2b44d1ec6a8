"""Sliding-window inference at a precision: ``float32``, ``bfloat16`` autocast, or ``auto`` (fastest on the hardware).

* ``float32``: no autocast (the reference).
* ``bfloat16``: ``torch.autocast(device, dtype=torch.bfloat16)`` around the network, on any device.
* ``auto``: on CUDA the float16 autocast that MONAI's ``amp=True`` used before; on a CPU with native bfloat16
  (AVX512-BF16 or AMX, see :func:`cpu_has_bf16`) bfloat16 autocast; float32 elsewhere.

On a CPU a wide enough network also runs channels-last (:func:`rep3d_networks.nets.layout.channels_last_inference`:
the same maths, faster convolutions; ``cpu_channels_last``: ``"auto"``, ``True`` or ``False``). ``"auto"`` turns it on
when the network's first 3D convolution has at least :data:`CHANNELS_LAST_MIN_WIDTH` output channels: measured here
(bfloat16, one thread), Rep3D of width 8 took 1.3-1.4x its NCDHW time channels-last, width 16 0.8x, the paper's
width 48 0.5-0.65x. GPUs keep NCDHW (unmeasured there).

Only the network's forward runs under autocast; its output is cast back to float32, so the sliding-window blending,
the softmax and the label output are computed as in float32. The large-kernel convolution
(:func:`rep3d_networks.ops.dwconv3d`) leaves autocast and computes in float32 whatever the precision.

Why this is hand-written: MONAI 1.5's evaluators enter ``torch.autocast("cuda")`` only (``amp``), so nothing runs in
bfloat16 on a CPU, and MONAI Label's infer tasks call the bundle's inferer without any autocast.
"""

import contextlib
import logging
from typing import Any, Callable, Optional, Union

import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from rep3d_networks.nets.layout import channels_last_inference

__all__ = ["PRECISIONS", "PrecisionSlidingWindowInferer", "autocast_dtype", "check_precision", "cpu_has_bf16"]

PRECISIONS = ("auto", "float32", "bfloat16")
CHANNELS_LAST_MIN_WIDTH = 16
logger = logging.getLogger(__name__)


def check_precision(precision: Any) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`.

    Raises:
        ValueError: anything else, naming the accepted values.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    return precision


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: x86 with AVX512-BF16 or AMX (as torch's CPU checks report).

    ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is not used: it is also true on AVX-512 CPUs without bfloat16
    instructions, where oneDNN emulates it. Other architectures (e.g. ARM with BF16) are unmeasured and get float32.
    """
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(check()) for check in checks if check is not None)


def autocast_dtype(precision: str, device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype of ``precision`` on a ``device_type`` (``"cpu"``, ``"cuda"``) device; None: float32."""
    check_precision(precision)
    if precision == "bfloat16":
        return torch.bfloat16
    if precision == "auto" and device_type == "cuda":
        return torch.float16
    if precision == "auto" and device_type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


def _to_float32(output: Any) -> Any:
    """Tensors of a network output (a tensor, or a tuple / list / dict of them) as float32."""
    if isinstance(output, torch.Tensor):
        return output.float() if output.is_floating_point() else output
    if isinstance(output, dict):
        return {key: _to_float32(value) for key, value in output.items()}
    if isinstance(output, (list, tuple)):
        return type(output)(_to_float32(value) for value in output)
    return output


def autocast_network(network: Callable, device_type: str, dtype: torch.dtype) -> Callable:
    """``network`` called under ``torch.autocast(device_type, dtype)``, its output cast to float32.

    A call whose inputs are finite but whose output is not is computed again without autocast, with a warning:
    served in bfloat16 channels-last on a CPU, the DeepEdit DynUNet of the click study answered about one request in
    25 with non-finite logits (an all-background label; never in float32), an intermittent fault that no single
    layer reproduced (docs/interactive.md). The check costs one pass over the logits of a window batch.
    """

    def forward(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=device_type, dtype=dtype):
            output = _to_float32(network(*args, **kwargs))
        if not _finite(output) and _finite(args):  # inputs checked only when the output is not finite
            logger.warning(f"non-finite output under {dtype} autocast from finite inputs: computed again in float32")
            output = _to_float32(network(*args, **kwargs))
        return output

    return forward


def _finite(value: Any) -> bool:
    """Whether every floating-point tensor in ``value`` (a tensor, or a tuple / list / dict of them) is finite."""
    if isinstance(value, torch.Tensor):
        return not value.is_floating_point() or bool(torch.isfinite(value).all())
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True


class PrecisionSlidingWindowInferer(SlidingWindowInferer):
    """MONAI's :class:`~monai.inferers.SlidingWindowInferer` with the network run at an inference ``precision``.

    Args:
        precision: ``"auto"``, ``"float32"`` or ``"bfloat16"`` (module docstring).
        cpu_channels_last: run an ``nn.Module`` network channels-last on a CPU: ``"auto"`` (if wide enough),
            ``True`` or ``False`` (module docstring).
        args, kwargs: those of :class:`~monai.inferers.SlidingWindowInferer`.

    Raises:
        ValueError: an unknown ``precision`` (at construction, before any data is read).
    """

    def __init__(
        self, *args: Any, precision: str = "auto", cpu_channels_last: Union[str, bool] = "auto", **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.precision = check_precision(precision)
        # a bundle command line gives "true" / "false" as text
        value = {"true": True, "false": False}.get(str(cpu_channels_last).lower(), cpu_channels_last)
        if value not in ("auto", True, False):
            raise ValueError(f"cpu_channels_last must be 'auto', true or false; got {cpu_channels_last!r}")
        self.cpu_channels_last = value

    def __call__(self, inputs: torch.Tensor, network: Callable, *args: Any, **kwargs: Any) -> Any:
        device_type = torch.device(self.sw_device or inputs.device).type
        dtype = autocast_dtype(self.precision, device_type)
        logger.info(
            f"precision {self.precision} on {device_type}: {'float32' if dtype is None else f'{dtype} autocast'}"
        )
        layout = contextlib.nullcontext()
        if device_type == "cpu" and isinstance(network, nn.Module) and self._channels_last(network):
            layout = channels_last_inference(network)
        with layout:
            if dtype is not None:
                network = autocast_network(network, device_type, dtype)
            return super().__call__(inputs, network, *args, **kwargs)

    def _channels_last(self, network: nn.Module) -> bool:
        if self.cpu_channels_last != "auto":
            return self.cpu_channels_last
        first = next((m for m in network.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))), None)
        return first is not None and first.out_channels >= CHANNELS_LAST_MIN_WIDTH
