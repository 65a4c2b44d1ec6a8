"""Tests for :mod:`rep3d_networks.nets.layout` (channels-last inference on a CPU) and the layout-preserving
large-kernel convolution it relies on."""

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from rep3d_networks import Rep3D
from rep3d_networks.inferers import PrecisionSlidingWindowInferer
from rep3d_networks.nets.layout import (
    OneChannelScale,
    PointwiseLinear,
    channels_last_inference,
    instance_norm_as_group_norm,
)
from rep3d_networks.ops import dwconv3d

CL = torch.channels_last_3d
TOL = 1e-5  # max |a - b| / max |b|, float32


def _rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def _channels_last(tensor):
    return tensor.is_contiguous(memory_format=CL) and not tensor.is_contiguous()


def _small_rep3d(**kwargs):
    torch.manual_seed(0)
    kwargs = dict(dict(feature_size=8, depths=[1, 1, 1, 1], kernel_size=7, hidden_size=32), **kwargs)
    return Rep3D(1, 3, **kwargs)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
def test_group_norm_computes_the_instance_norm(affine, training, memory_format):
    torch.manual_seed(0)
    norm = nn.InstanceNorm3d(6, affine=affine, eps=1e-3).train(training)
    if affine:
        nn.init.normal_(norm.weight), nn.init.normal_(norm.bias)
    x = (torch.randn(2, 6, 5, 6, 7) * 3 + 1).contiguous(memory_format=memory_format)
    group_norm = instance_norm_as_group_norm(norm)
    assert group_norm.training == training
    if affine:  # the same Parameter objects: an optimizer or a checkpoint sees no difference
        assert group_norm.weight is norm.weight and group_norm.bias is norm.bias
    assert _rel_err(group_norm(x), norm(x.contiguous())) < TOL


def test_instance_norm_with_running_stats_is_refused():
    with pytest.raises(ValueError, match="running statistics"):
        instance_norm_as_group_norm(nn.InstanceNorm3d(4, track_running_stats=True))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("autocast", [False, True])
def test_one_channel_scale_computes_the_pointwise_convolution(bias, autocast):
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 6, 1, bias=bias)
    x = torch.randn(2, 1, 5, 6, 7)
    assert OneChannelScale.computes(conv)
    assert not any(OneChannelScale.computes(c) for c in (nn.Conv3d(2, 6, 1), nn.Conv3d(1, 6, 3), nn.Conv3d(1, 6, 1, 2)))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        reference, out = conv(x), OneChannelScale(conv)(x)
    assert out.dtype == reference.dtype == (torch.bfloat16 if autocast else torch.float32)
    assert _channels_last(out)
    assert _rel_err(out.float(), reference.float()) < (1e-2 if autocast else TOL)


POINTWISE_CASES = [
    # (threads, batch, autocast, computed as a product): PyTorch's reference-kernel case is the only product
    (1, 2, False, True),
    (2, 2, False, False),
    (1, 16, False, False),
    (1, 2, True, False),
]


@pytest.mark.parametrize("threads, batch, autocast, product", POINTWISE_CASES)
def test_pointwise_linear_computes_the_pointwise_convolution(threads, batch, autocast, product, monkeypatch):
    """Computed as a product over the channels exactly where PyTorch would take its reference kernel (float32, one
    thread, batch < 16), otherwise by the convolution; the convolution's output either way, channels-last."""
    torch.manual_seed(0)
    conv = nn.Conv3d(6, 4, 1)
    assert PointwiseLinear.computes(conv)
    others = (nn.Conv3d(1, 4, 1), nn.Conv3d(6, 4, 3), nn.Conv3d(6, 4, 1, 2), nn.Conv3d(6, 4, 1, groups=2))
    assert not any(PointwiseLinear.computes(c) for c in others)
    products = []
    x = torch.randn(batch, 6, 5, 6, 7).contiguous(memory_format=CL)
    real_linear = nn.functional.linear
    monkeypatch.setattr(nn.functional, "linear", lambda *a, **k: products.append(1) or real_linear(*a, **k))
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        reference, out = conv(x), PointwiseLinear(conv)(x)
    assert bool(products) == product
    assert out.dtype == reference.dtype == (torch.bfloat16 if autocast else torch.float32)
    assert _channels_last(out)
    assert _rel_err(out.float(), reference.float()) < (1e-2 if autocast else TOL)


@pytest.mark.parametrize("method", ["direct", "fft"])
@pytest.mark.parametrize("padding", [None, (0, 2, 9)])
def test_dwconv_keeps_the_input_memory_format(method, padding):
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 5, 9, 10, 11), torch.randn(5, 1, 7, 5, 7), torch.randn(5)
    reference = dwconv3d(x, w, b, padding=padding, method=method)
    out = dwconv3d(x.contiguous(memory_format=CL), w, b, padding=padding, method=method)
    assert out.is_contiguous(memory_format=CL) and not out.is_contiguous()
    assert _rel_err(out, reference) < TOL
    assert reference.is_contiguous()


@pytest.mark.parametrize("deploy", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_channels_last_forward_matches_ncdhw(deploy, threads, monkeypatch):
    """The whole network channels-last (decoder instance norms as group norms, ``1³`` convolutions as products on
    one thread, weights channels-last) gives the NCDHW output; inside, the activations really are channels-last."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    net = _small_rep3d(deploy=deploy).eval()
    x = torch.randn(1, 1, 32, 32, 32)
    layouts = []
    net.decoder.last_block.register_forward_hook(lambda m, i, o: layouts.append(o.is_contiguous(memory_format=CL)))
    with torch.no_grad():
        reference = net(x)
        with channels_last_inference(net):
            norms = [type(m) for m in net.modules() if isinstance(m, (nn.InstanceNorm3d, nn.GroupNorm))]
            pointwise = [m for m in net.modules() if isinstance(m, PointwiseLinear)]
            out = net(x)
    assert layouts == [False, True]
    assert set(norms) == {nn.GroupNorm}
    assert pointwise  # the decoder's residual projections and the output layer
    assert _rel_err(out, reference) < TOL


def test_everything_is_restored_on_exit():
    """After the block the network is the one that went in: same modules, same Parameter objects in NCDHW, same
    state-dict keys (checkpoints from before and after load either way); also when the forward raises."""
    net = _small_rep3d(reparam="lrbm").train()
    modules = {name: type(m) for name, m in net.named_modules()}
    params = dict(net.named_parameters())
    keys = list(net.state_dict())
    with pytest.raises(ValueError, match="divisible"):
        with channels_last_inference(net):
            assert list(net.state_dict()) == keys
            assert net.decoder.up_blocks[0].conv_block.conv1.conv.weight.is_contiguous(memory_format=CL)
            net(torch.zeros(1, 1, 20, 20, 20))
    assert {name: type(m) for name, m in net.named_modules()} == modules
    assert all(params[name] is p and p.is_contiguous() for name, p in net.named_parameters())
    assert list(net.state_dict()) == keys
    net.load_state_dict(_small_rep3d(reparam="lrbm").state_dict())


def test_inferer_runs_channels_last_on_a_cpu_and_matches_ncdhw():
    """``PrecisionSlidingWindowInferer`` (the bundles' and the app's inferer) runs the network channels-last on a
    CPU when asked (here "true", as a bundle command line gives it); float32 output within 1e-5 of NCDHW, which
    ``cpu_channels_last=False`` keeps exactly."""
    net = _small_rep3d(deploy=True).eval()
    x = torch.randn(1, 1, 40, 32, 36)
    seen = []
    weight = net.decoder.up_blocks[0].conv_block.conv1.conv.weight
    net.encoder.register_forward_pre_hook(lambda m, i: seen.append(_channels_last(weight)))
    settings = dict(roi_size=[32, 32, 32], sw_batch_size=2, overlap=0.25)
    with torch.no_grad():
        plain = SlidingWindowInferer(**settings)(x, net)
        ncdhw = PrecisionSlidingWindowInferer(precision="float32", cpu_channels_last=False, **settings)(x, net)
        assert not any(seen)
        channels_last = PrecisionSlidingWindowInferer(precision="float32", cpu_channels_last="true", **settings)(x, net)
    assert seen and all(seen[-2:])
    torch.testing.assert_close(ncdhw, plain, rtol=0, atol=0)
    assert _rel_err(channels_last, plain) < TOL
    assert all(p.is_contiguous() for p in net.parameters())


@pytest.mark.parametrize("width, expected", [(8, False), (16, True)])
def test_inferer_auto_layout_follows_the_network_width(width, expected):
    """``cpu_channels_last="auto"`` (the default): channels-last only for networks whose first convolution is at least
    16 wide (narrower ones measured slower channels-last); a bad value is refused at construction."""
    net = _small_rep3d(feature_size=width, deploy=True).eval()
    weight = net.decoder.up_blocks[0].conv_block.conv1.conv.weight
    seen = []
    net.encoder.register_forward_pre_hook(lambda m, i: seen.append(_channels_last(weight)))
    with torch.no_grad():
        PrecisionSlidingWindowInferer(roi_size=[32, 32, 32], precision="float32")(torch.randn(1, 1, 32, 32, 32), net)
    assert seen == [expected]
    with pytest.raises(ValueError, match="cpu_channels_last"):
        PrecisionSlidingWindowInferer(roi_size=[32, 32, 32], cpu_channels_last="sometimes")
