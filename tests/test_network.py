"""Rep3D / UX-Net networks, the LRBM mask and folding (issue #2)."""

import pytest
import torch
from monai.bundle import ConfigParser

from bundle_helpers import REPO_ROOT
from rep3d_networks import LRBM, Rep3D, UXNet, csla_param_groups, fold
from rep3d_networks.blocks import ReparamDepthwiseConv3d
from rep3d_networks.blocks.receptive_mask import tap_distance

LRBM_PARAMS = 66_128_792  # Rep3D(1, 16) with the default shared 2-layer LRBM; quoted in the README model table
TINY = dict(feature_size=8, hidden_size=32, kernel_size=21)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("reparam", ["fixed", "vanilla"])
def test_param_count_matches_published_rep3d(reparam):
    assert count(Rep3D(1, 16, reparam=reparam)) == 65_826_928


def test_param_count_matches_published_uxnet():
    assert count(UXNet(1, 16, kernel_size=7)) == 53_006_608


def test_param_count_lrbm():
    n = count(Rep3D(1, 16, reparam="lrbm"))
    assert 65_800_000 <= n <= 66_200_000
    assert n == LRBM_PARAMS


def test_mask_equals_prior_at_init_and_prior_is_sane():
    mask = LRBM(kernel_size=21, channels=4)
    with torch.no_grad():
        m, p = mask(), mask.prior()
    assert m.shape == (1, 1, 21, 21, 21) and p.shape == (1, 1, 21, 21, 21)
    torch.testing.assert_close(m, p, rtol=0, atol=0)
    assert torch.isfinite(m).all()
    assert p[0, 0, 10, 10, 10] == 1.0  # centre tap
    assert p[0, 0, 0, 0, 0] == pytest.approx(1.0 / (1.0 + tap_distance(21).max().item()))
    assert mask.prior.beta.item() == pytest.approx(1.0)


def test_depthwise_generator_gives_one_mask_per_channel():
    mask = LRBM(kernel_size=7, channels=5, generator_channels="depthwise")
    assert mask().shape == (5, 1, 7, 7, 7)
    with pytest.raises(ValueError, match="generator_channels"):
        LRBM(kernel_size=7, channels=5, generator_channels="per-pixel")


def test_prior_buffer_stored_once_and_not_checkpointed():
    conv = ReparamDepthwiseConv3d(16, 21, reparam="fixed")
    assert conv.mask.prior.shape == (1, 1, 21, 21, 21)
    assert not any("prior" in k or "distance" in k for k in conv.state_dict())
    assert count(conv) == 16 * 21**3


def _step(module, x, lr=1e-1):
    opt = torch.optim.SGD(module.parameters(), lr=lr)
    opt.zero_grad()
    module(x).pow(2).mean().backward()
    opt.step()


def test_lrbm_gradient_identity():
    torch.manual_seed(0)
    conv = ReparamDepthwiseConv3d(3, 9, reparam="lrbm", conv_method="direct")
    x = torch.randn(2, 3, 10, 11, 12)
    _step(conv, x)  # move the generator's last gain off zero so M != P
    mask = conv.mask().detach()
    assert not torch.allclose(mask, conv.mask.prior().detach())
    w_eff = conv.effective_weight()
    w_eff.retain_grad()
    out = torch.nn.functional.conv3d(x, w_eff, padding=4, groups=3)
    conv.weight.grad = None
    out.pow(2).sum().backward()
    torch.testing.assert_close(conv.weight.grad, mask * w_eff.grad, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("generator_channels", ["shared", "depthwise"])
def test_beta_and_every_generator_parameter_learn(generator_channels):
    torch.manual_seed(0)
    conv = ReparamDepthwiseConv3d(3, 9, reparam="lrbm", generator_channels=generator_channels)
    x = torch.randn(1, 3, 12, 12, 12)
    before = {k: v.clone() for k, v in conv.mask.state_dict().items()}
    _step(conv, x)
    conv.zero_grad()
    conv(x).pow(2).mean().backward()
    for name, p in conv.mask.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert conv.mask.prior.rho.grad.abs() > 0
    changed = [k for k, v in conv.mask.state_dict().items() if not torch.equal(v, before[k])]
    assert "prior.rho" in changed


def test_two_forwards_without_step_are_identical_and_weight_untouched():
    torch.manual_seed(0)
    net = Rep3D(1, 3, **TINY).train()
    x = torch.randn(1, 1, 32, 32, 32)
    w0 = net.encoder.stages[0][0].conv.weight.detach().clone()
    with torch.no_grad():
        net.eval()
        y1, y2 = net(x), net(x)
    torch.testing.assert_close(y1, y2, rtol=0, atol=0)
    assert torch.equal(net.encoder.stages[0][0].conv.weight, w0)


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("gen_kernel", [1, 3, 5, 7])
def test_generator_ablation_settings(layers, gen_kernel):
    conv = ReparamDepthwiseConv3d(2, 7, reparam="lrbm", generator_layers=layers, generator_kernel_size=gen_kernel)
    convs = [m for m in conv.mask.generator.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == layers and all(c.kernel_size == (gen_kernel,) * 3 for c in convs)
    torch.testing.assert_close(conv.mask(), conv.mask.prior(), rtol=0, atol=0)


def _trained_tiny(model, steps=2):
    """A couple of training steps so BN statistics and the LRBM generator are non-trivial."""
    torch.manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(1, model.encoder.downsamples[0][0].in_channels, 32, 32, 32)).pow(2).mean().backward()
        opt.step()
    return model.eval()


VARIANTS = [
    (Rep3D, dict(reparam="lrbm", **TINY)),
    (Rep3D, dict(reparam="lrbm", generator_channels="depthwise", **TINY)),
    (Rep3D, dict(reparam="fixed", **TINY)),
    (Rep3D, dict(reparam="vanilla", **TINY)),
    (Rep3D, dict(reparam="csla", **TINY)),
    (UXNet, dict(reparam="vanilla", feature_size=8, hidden_size=32)),
    (UXNet, dict(reparam="lrbm", feature_size=8, hidden_size=32)),
]


@pytest.mark.parametrize("cls,kwargs", VARIANTS, ids=[f"{c.__name__}-{k['reparam']}-{k.get('generator_channels', '')}" for c, k in VARIANTS])
def test_fold_preserves_eval_outputs_and_loads_into_deploy_net(cls, kwargs):
    torch.manual_seed(0)
    model = _trained_tiny(cls(2, 3, **kwargs))
    x = torch.randn(1, 2, 32, 32, 32)
    with torch.no_grad():
        y = model(x)
        folded = fold(model)
        y_folded = folded(x)
    assert folded is model
    assert (y_folded - y).abs().max() <= 1e-5 * y.abs().max()
    assert not any("mask" in name or "small_weight" in name for name in folded.state_dict())
    assert all(m.folded for m in folded.modules() if isinstance(m, ReparamDepthwiseConv3d))
    deploy = cls(2, 3, deploy=True, **kwargs).eval()
    deploy.load_state_dict(folded.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), y_folded, rtol=0, atol=0)


def test_deploy_net_folds_a_training_checkpoint_while_loading():
    torch.manual_seed(0)
    kwargs = dict(reparam="lrbm", **TINY)
    model = _trained_tiny(Rep3D(1, 3, **kwargs))
    checkpoint = {k: v.clone() for k, v in model.state_dict().items()}  # unfolded, as training saves it
    deploy = Rep3D(1, 3, deploy=True, **kwargs).eval()
    deploy.load_state_dict(checkpoint, strict=True)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        y = model(x)
        torch.testing.assert_close(deploy(x), y, rtol=1e-5, atol=1e-5 * y.abs().max().item())
    assert not any("mask" in k for k in deploy.state_dict())
    with pytest.raises(RuntimeError, match="size mismatch|Missing|Unexpected"):
        Rep3D(1, 3, deploy=True, **dict(kwargs, generator_layers=3)).load_state_dict(checkpoint, strict=True)


def test_folded_model_is_scriptable():
    torch.manual_seed(0)
    model = _trained_tiny(Rep3D(1, 3, **TINY)).fold()
    scripted = torch.jit.script(model)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        y, y_script = model(x), scripted(x)
    assert (y_script - y).abs().max() <= 1e-5 * y.abs().max()


def test_fold_method_and_idempotence():
    """``fold()`` returns the model; a second ``fold()`` changes no weight and no output."""
    torch.manual_seed(0)
    model = _trained_tiny(Rep3D(1, 2, reparam="lrbm", **TINY))  # M != P: folding again would change the kernels
    n_before = count(model)
    x = torch.randn(1, 1, 32, 32, 32)
    assert model.fold() is model and count(model) < n_before
    once = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        y_once = model(x)
        assert model.fold() is model
        torch.testing.assert_close(model(x), y_once, rtol=0, atol=0)
    twice = model.state_dict()
    assert twice.keys() == once.keys() and all(torch.equal(twice[k], once[k]) for k in once)


@pytest.mark.parametrize("shape", [(33, 32, 32), (32, 32, 24), (31, 31, 31)])
def test_bad_spatial_size_raises_clear_error(shape):
    model = Rep3D(1, 2, **TINY)
    with pytest.raises(ValueError, match="divisible by 16") as err:
        model(torch.zeros(1, 1, *shape))
    assert str(list(shape)) in str(err.value)


def test_bad_reparam_and_kernel_raise():
    with pytest.raises(ValueError, match="reparam"):
        Rep3D(1, 2, reparam="lora", **dict(TINY, kernel_size=21))
    with pytest.raises(ValueError, match="odd"):
        Rep3D(1, 2, **dict(TINY, kernel_size=20))


def test_csla_param_groups_give_separate_learning_rates():
    model = Rep3D(1, 2, reparam="csla", **TINY)
    groups = csla_param_groups(model, lr_large=2e-4, lr_small=3e-4)
    opt = torch.optim.AdamW(groups, weight_decay=0.08)
    assert [g["lr"] for g in opt.param_groups] == [2e-4, 3e-4]
    n_small = sum(p.numel() for p in groups[1]["params"])
    assert n_small == 27 * 8 * sum((1, 2, 4, 8)) * 2 // 1
    assert sum(p.numel() for g in groups for p in g["params"]) == count(model)
    with pytest.raises(ValueError, match="csla"):
        csla_param_groups(Rep3D(1, 2, reparam="vanilla", **TINY), 1e-4, 3e-4)


@pytest.mark.parametrize("config,folded", [("train.json", False), ("inference.json", True)])
def test_network_builds_from_bundle_config(config, folded):
    """``network_def`` of a bundle's config (narrowed to a CPU-sized width) builds its Rep3D: 16 AMOS classes,
    LRBM masks for training, folded kernels for inference."""
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundles" / "amos_ct" / "configs" / config))
    parser.update({f"network_def#{key}": value for key, value in TINY.items()})
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, Rep3D)
    convs = [m for m in net.modules() if isinstance(m, ReparamDepthwiseConv3d)]
    assert convs and all(c.folded is folded and (c.mask is None) is folded for c in convs)
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 16, 32, 32, 32)


def test_fft_and_direct_conv_give_same_loss_and_gradients():
    """Every block runs through dwconv3d: the FFT path must not change training."""
    results = []
    for method in ("direct", "fft"):
        torch.manual_seed(0)
        model = Rep3D(1, 2, conv_method=method, **TINY).train()
        x = torch.randn(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
        loss = model(x).pow(2).mean()
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-4, atol=0)
    global_scale = max(g.abs().max() for g in grads_a.values())
    for name, grad in grads_a.items():  # float32 round-off: relative per tensor, plus a floor for near-zero gradients
        assert (grads_b[name] - grad).abs().max() <= 1e-3 * grad.abs().max() + 1e-5 * global_scale, name
