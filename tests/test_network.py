"""Rep3D / UX-Net networks, the LRBM mask and folding (issues #2 and #12)."""

import copy
import io
import itertools
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
from bundle_helpers import REPO_ROOT
from monai.bundle import ConfigParser

from rep3d_networks import LRBM, GeneratorConfig, Rep3D, UXNet, csla_param_groups, fold, mark_folded
from rep3d_networks.blocks import GENERATOR_NORM_AFFINE, ReparamDepthwiseConv3d
from rep3d_networks.blocks.lrbm import tap_distance

TINY = dict(feature_size=8, hidden_size=32, kernel_size=21)
V0_1_FIXTURE = Path(__file__).parent / "data" / "v0_1_checkpoints.pt"  # written by tests/data/make_v0_1_checkpoints.py
README = REPO_ROOT / "README.md"

# (model, parameters for 1 -> 16 classes); each row is also a row of the README "Models" table
PARAMETER_COUNTS = [
    ("Rep3D(1, 16)", dict(), 65_832_456),
    ('Rep3D(1, 16, generator_norm_affine="tap")', dict(generator_norm_affine="tap"), 66_128_776),
    ('Rep3D(1, 16, generator_norm_affine="none")', dict(generator_norm_affine="none"), 65_832_424),
    ('Rep3D(1, 16, generator_channels="depthwise")', dict(generator_channels="depthwise"), 66_820_536),
    ('Rep3D(1, 16, reparam="fixed")', dict(reparam="fixed"), 65_826_928),
    ('Rep3D(1, 16, reparam="vanilla")', dict(reparam="vanilla"), 65_826_928),
    ('Rep3D(1, 16, reparam="csla")', dict(reparam="csla"), 65_865_808),
    ("Rep3D(1, 16, deploy=True)", dict(deploy=True), 65_826_928),
    ("UXNet(1, 16)", dict(net=UXNet), 53_006_608),
    ('UXNet(1, 16, reparam="lrbm")', dict(net=UXNet, reparam="lrbm"), 53_012_136),
]


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name,kwargs,expected", PARAMETER_COUNTS, ids=[row[0] for row in PARAMETER_COUNTS])
def test_parameter_counts_and_readme_models_table(name, kwargs, expected):
    kwargs = dict(kwargs)
    assert count(kwargs.pop("net", Rep3D)(1, 16, **kwargs)) == expected
    models = README.read_text().split("## Models", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in models.splitlines() if line.startswith(f"| `{name}`")]
    assert len(rows) == 1 and f"| {expected:,} |" in rows[0], (name, rows)


def test_lrbm_generator_parameters_per_block():
    """ρ + two bias-free 7³ convs + two norms (one gain and bias each, per channel for a depthwise generator)."""
    per_norm = {"channel": 2, "tap": 2 * 21**3, "none": 0}
    for norm, norm_params in per_norm.items():
        assert count(LRBM(21, 48, GeneratorConfig(norm_affine=norm))) == 1 + 2 * 7**3 + 2 * norm_params
    assert count(LRBM(21, 48, GeneratorConfig(channels="depthwise"))) == 1 + 2 * 48 * 7**3 + 2 * 2 * 48
    assert (
        count(LRBM(21, 48, GeneratorConfig(kernel_size=1))) == 1 + 2 * 2
    )  # 1³ convs left out: only the norms' affines
    with pytest.raises(ValueError, match="generator_norm_affine"):
        GeneratorConfig(norm_affine="pixel")
    with pytest.raises(ValueError, match="generator_norm_affine"):
        Rep3D(1, 2, generator_norm_affine="pixel", **TINY)


@pytest.mark.parametrize("norm", GENERATOR_NORM_AFFINE)
def test_mask_equals_prior_at_init_and_prior_is_sane(norm):
    mask = LRBM(kernel_size=21, channels=4, generator_config=GeneratorConfig(norm_affine=norm))
    with torch.no_grad():
        m, p = mask(), mask.prior()
    assert m.shape == (1, 1, 21, 21, 21) and p.shape == (1, 1, 21, 21, 21)
    torch.testing.assert_close(m, p, rtol=0, atol=0)
    assert torch.isfinite(m).all()
    assert p[0, 0, 10, 10, 10] == 1.0  # centre tap
    assert p[0, 0, 0, 0, 0] == pytest.approx(1.0 / (1.0 + tap_distance(21).max().item()))
    assert mask.prior.beta.item() == pytest.approx(1.0)
    convs = [m for m in mask.generator.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(c.bias is None for c in convs)  # a bias before a norm over the same taps cannot learn


def test_depthwise_generator_gives_one_mask_per_channel():
    mask = LRBM(kernel_size=7, channels=5, generator_config=GeneratorConfig(channels="depthwise"))
    assert mask().shape == (5, 1, 7, 7, 7)
    with pytest.raises(ValueError, match="generator_channels"):
        GeneratorConfig(channels="per-pixel")


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


ALL_GENERATOR_SETTINGS = [  # GeneratorConfig arguments
    dict(layers=layers, kernel_size=kernel, channels=channels, norm_affine=norm)
    for layers, kernel, channels, norm in itertools.product(
        (1, 2, 3), (1, 3, 5, 7), ("shared", "depthwise"), GENERATOR_NORM_AFFINE
    )
]


def has_no_learnable_parameter(setting: dict) -> bool:
    """A 1³ generator conv (left out) with a norm without affine: refused by ``GeneratorConfig``."""
    return setting["norm_affine"] == "none" and setting["kernel_size"] == 1


GENERATOR_SETTINGS = [s for s in ALL_GENERATOR_SETTINGS if not has_no_learnable_parameter(s)]
REFUSED_GENERATOR_SETTINGS = [s for s in ALL_GENERATOR_SETTINGS if has_no_learnable_parameter(s)]


def gradients(module: torch.nn.Module, x: torch.Tensor) -> dict:
    module.zero_grad()
    module(x).pow(2).mean().backward()
    return {name: p.grad.detach().double().clone() for name, p in module.named_parameters()}


@pytest.mark.parametrize("setting", GENERATOR_SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_every_generator_parameter_gets_a_gradient_far_above_round_off(setting, one_thread):
    """After one step, each parameter's float32 gradient must equal its float64 gradient to 1e-3 relative: a
    parameter that cannot learn (e.g. a conv bias that the following norm cancels) has an exactly zero gradient,
    so its float32 "gradient" is round-off, 10⁸ times its float64 value (measured with 0.1's generator)."""
    torch.manual_seed(0)
    conv = ReparamDepthwiseConv3d(2, 7, reparam="lrbm", generator_config=GeneratorConfig(**setting))
    x = torch.randn(1, 2, 8, 8, 8)
    _step(conv, x)  # moves the zero-initialised gain (or last conv) off zero
    grads32 = gradients(conv, x)
    grads64 = gradients(copy.deepcopy(conv).double(), x.double())
    assert grads32.keys() == {n for n, _ in conv.named_parameters()} and "mask.prior.rho" in grads32
    for name, grad in grads64.items():
        assert grad.norm() > 0 and (grads32[name] - grad).norm() <= 1e-3 * grad.norm(), name


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


@pytest.mark.parametrize("setting", REFUSED_GENERATOR_SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_generator_without_a_learnable_parameter_is_refused(setting):
    with pytest.raises(ValueError, match="without a learnable parameter"):
        GeneratorConfig(**setting)
    with pytest.raises(ValueError, match="without a learnable parameter"):  # Rep3D's flat options build the config
        Rep3D(1, 2, **{f"generator_{k}": v for k, v in setting.items()}, **TINY)


@pytest.mark.parametrize("setting", GENERATOR_SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
def test_generator_ablation_settings(setting):
    """The generator has ``layers`` convs of the asked size (none for 1³) and starts at the prior."""
    conv = ReparamDepthwiseConv3d(2, 7, reparam="lrbm", generator_config=GeneratorConfig(**setting))
    layers, kernel = setting["layers"], setting["kernel_size"]
    convs = [m for m in conv.mask.generator.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(convs) == (0 if kernel == 1 else layers) and all(c.kernel_size == (kernel,) * 3 for c in convs)
    mask = conv.mask()  # one per channel with generator_channels="depthwise"
    torch.testing.assert_close(mask, conv.mask.prior().expand_as(mask), rtol=0, atol=0)


def _trained_tiny(model, steps=2, shape=(32, 32, 32)):
    """A couple of training steps so BN statistics and the LRBM generator are non-trivial."""
    torch.manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(1, model.encoder.downsamples[0][0].in_channels, *shape)).pow(2).mean().backward()
        opt.step()
    return model.eval()


def saved_and_loaded(state_dict: dict) -> dict:
    """``state_dict`` through ``torch.save`` / ``torch.load(weights_only=True)``, as bundles load checkpoints."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def assert_close_relative(actual: torch.Tensor, expected: torch.Tensor, tolerance: float = 1e-5) -> None:
    assert (actual - expected).abs().max() <= tolerance * expected.abs().max()


SMALL = dict(feature_size=4, hidden_size=8, kernel_size=7)  # the smallest nets whose folding is not trivial
SMALL_SHAPE = (16, 16, 32)  # the bottleneck (1/16) keeps two voxels for its InstanceNorm
VARIANTS = [
    (Rep3D, dict(reparam="lrbm", **SMALL)),
    (Rep3D, dict(reparam="lrbm", generator_channels="depthwise", **SMALL)),
    (Rep3D, dict(reparam="lrbm", generator_norm_affine="tap", **SMALL)),
    (Rep3D, dict(reparam="lrbm", generator_norm_affine="none", **SMALL)),
    (Rep3D, dict(reparam="fixed", **SMALL)),
    (Rep3D, dict(reparam="vanilla", **SMALL)),
    (Rep3D, dict(reparam="csla", **SMALL)),
    (UXNet, dict(reparam="vanilla", **SMALL)),
    (UXNet, dict(reparam="lrbm", **SMALL)),
]
VARIANT_IDS = ["-".join([c.__name__] + [str(v) for k, v in kw.items() if k not in SMALL]) for c, kw in VARIANTS]


@pytest.mark.parametrize("cls,kwargs", VARIANTS, ids=VARIANT_IDS)
def test_every_variant_folds_on_load_and_refuses_mismatched_state_dicts(cls, kwargs, one_thread):
    """Training form → its state dict → ``deploy=True`` gives the training form's eval output, and so does
    ``fold()`` → save → load into ``deploy=True``; loads into the wrong form or configuration raise, naming both."""
    torch.manual_seed(0)
    model = _trained_tiny(cls(2, 3, **kwargs), shape=SMALL_SHAPE)
    x = torch.randn(1, 2, *SMALL_SHAPE)
    training = saved_and_loaded(model.state_dict())
    deploy = cls(2, 3, deploy=True, **kwargs).eval()
    deploy.load_state_dict(training, strict=True)
    with torch.no_grad():
        y = model(x)
        assert_close_relative(deploy(x), y)
        folded = fold(model)
        y_folded = folded(x)
    assert folded is model
    assert_close_relative(y_folded, y)
    assert not any("mask" in name or "small_weight" in name for name in folded.state_dict())
    assert all(m.folded for m in folded.modules() if isinstance(m, ReparamDepthwiseConv3d))
    deploy_from_folded = cls(2, 3, deploy=True, **kwargs).eval()
    deploy_from_folded.load_state_dict(saved_and_loaded(folded.state_dict()), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(deploy_from_folded(x), y_folded, rtol=0, atol=0)

    folded_state = saved_and_loaded(folded.state_dict())
    with pytest.raises(RuntimeError, match=r"stages\.0\.0\.conv: the state dict holds a folded kernel .* deploy=True"):
        cls(2, 3, **kwargs).load_state_dict(folded_state)  # a folded kernel into the training form: P or M twice
    other = "vanilla" if kwargs["reparam"] != "vanilla" else "fixed"
    for state in (training, folded_state):
        with pytest.raises(RuntimeError, match=f"reparam: expected '{other}', found '{kwargs['reparam']}'"):
            cls(2, 3, deploy=True, **dict(kwargs, reparam=other)).load_state_dict(state)
        with pytest.raises(RuntimeError, match="kernel_size: expected 5, found 7"):
            cls(2, 3, deploy=True, **dict(kwargs, kernel_size=5)).load_state_dict(state)


def test_generator_mismatch_is_named():
    torch.manual_seed(0)
    checkpoint = Rep3D(1, 3, reparam="lrbm", **TINY).state_dict()
    for option, value, found in [("generator_layers", 3, 2), ("generator_norm_affine", "tap", "'channel'")]:
        for deploy in (False, True):
            with pytest.raises(RuntimeError, match=f"{option}: expected {value!r}, found {found}"):
                Rep3D(1, 3, deploy=deploy, **dict(TINY, **{option: value})).load_state_dict(checkpoint)


def v0_1_fixture():
    return torch.load(V0_1_FIXTURE, weights_only=True)


@pytest.mark.parametrize("name", ["lrbm", "lrbm_depthwise", "fixed", "csla", "uxnet_lrbm", "lrbm_folded"])
def test_state_dicts_written_by_v0_1_still_load(name):
    """State dicts that rep3d_networks 0.1 wrote (tests/data/make_v0_1_checkpoints.py, commit b492680) give their
    0.1 eval outputs in the training form and with ``deploy=True``; 0.1 LRBM generators are the ``"tap"`` form."""
    fixture = v0_1_fixture()
    variant = fixture["variants"][name]
    cls = {"Rep3D": Rep3D, "UXNet": UXNet}[variant["class"]]
    kwargs = dict(variant["kwargs"])
    if kwargs["reparam"] == "lrbm":
        with (
            pytest.raises(RuntimeError, match="generator_norm_affine: expected 'channel', found 'tap'")
            if name != "lrbm_folded"
            else nullcontext()
        ):
            cls(**kwargs, deploy=name == "lrbm_folded").load_state_dict(variant["state_dict"])
        kwargs["generator_norm_affine"] = "tap"
    stride = fixture["expected_stride"]
    for deploy in sorted({name == "lrbm_folded", True}):
        model = cls(**kwargs, deploy=deploy).eval()
        with pytest.warns(UserWarning, match="read as the training form") if name == "fixed" else nullcontext():
            model.load_state_dict(variant["state_dict"], strict=True)
        with torch.no_grad():
            y = model(fixture["input"])[..., :: stride[0], :: stride[1], :: stride[2]]
        assert_close_relative(y, variant["expected"])
        assert all(m.folded == deploy for m in model.modules() if isinstance(m, ReparamDepthwiseConv3d))
    if name == "lrbm_folded":
        with pytest.raises(RuntimeError, match="holds a folded kernel"):
            cls(**kwargs).load_state_dict(variant["state_dict"])


def test_v0_1_fixed_state_dict_saved_after_fold_loads_when_marked():
    variant = v0_1_fixture()["variants"]["fixed"]
    kwargs = variant["kwargs"]
    training = Rep3D(**kwargs).eval()
    with pytest.warns(UserWarning, match="mark_folded"):
        training.load_state_dict(variant["state_dict"])
    folded_v0_1 = {k: v for k, v in fold(training).state_dict().items() if not k.endswith("reparam_state")}
    deploy = Rep3D(**kwargs, deploy=True).eval()
    deploy.load_state_dict(mark_folded(folded_v0_1, deploy), strict=True)
    x = v0_1_fixture()["input"]
    with torch.no_grad():
        torch.testing.assert_close(deploy(x), training(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="already has reparam_state"):
        mark_folded(deploy.state_dict(), deploy)
    with pytest.raises(ValueError, match="say by their keys"):
        mark_folded(folded_v0_1, Rep3D(**dict(kwargs, reparam="lrbm")))


def test_state_dict_says_whether_it_is_folded():
    model = Rep3D(1, 2, **dict(TINY, kernel_size=5))
    states = [v for k, v in model.state_dict().items() if k.endswith(".reparam_state")]
    assert len(states) == 8 and all(v.dtype == torch.int64 and v[1] == 0 for v in states)
    assert all(v[1] == 1 for k, v in model.fold().state_dict().items() if k.endswith(".reparam_state"))
    state = model.state_dict()
    state["encoder.stages.0.0.conv.reparam_state"] = torch.tensor([9, 1, 0, 5, 0, -1, 0, 2, 7, 0])
    with pytest.raises(RuntimeError, match="format 9 is newer"):
        Rep3D(1, 2, deploy=True, **dict(TINY, kernel_size=5)).load_state_dict(state)


def test_folded_model_is_scriptable():
    torch.manual_seed(0)
    model = _trained_tiny(Rep3D(1, 3, **TINY)).fold()
    scripted = torch.jit.script(model)
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        y, y_script = model(x), scripted(x)
    assert (y_script - y).abs().max() <= 1e-5 * y.abs().max()


def test_folded_model_answers_with_the_weights_it_holds_now():
    """A folded model caches its kernels' FFTs (``KernelSpectrumCache``); weights loaded into it afterwards are the
    ones used (the checkpoint a server reloads after a training)."""
    torch.manual_seed(0)
    first, second = (Rep3D(1, 2, deploy=True, conv_method="fft", **TINY).eval() for _ in range(2))
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        before, expected = first(x), second(x)
        first.load_state_dict(second.state_dict())
        after = first(x)
    assert not torch.allclose(before, expected)
    torch.testing.assert_close(after, expected, rtol=0, atol=0)


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


@pytest.mark.parametrize("net_class,kwargs", [(Rep3D, dict(kernel_size=7)), (UXNet, dict())], ids=["Rep3D", "UXNet"])
def test_bfloat16_cpu_training_gradients_at_a_two_voxel_deep_bottleneck(net_class, kwargs, one_thread):
    """A 32³ patch has a 2³ bottleneck, where oneDNN's bfloat16 3³ convolution backward gives wrong weight gradients
    (often ~1e35; issue 25). Under bfloat16 autocast the bottleneck block's gradients stay finite and near the float64
    ones: measured relative error 0.19–0.23 (bfloat16 elsewhere in the network), 0.8 to inf without the float32
    guard."""
    for seed in range(3):
        torch.manual_seed(seed)
        net = net_class(1, 3, feature_size=4, depths=(1, 1, 1, 1), hidden_size=32, **kwargs)
        reference = copy.deepcopy(net).double()
        x, target = torch.rand(1, 1, 32, 32, 32), torch.randint(0, 3, (1, 32, 32, 32))
        torch.nn.functional.cross_entropy(reference(x.double()), target).backward()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = net(x)
        torch.nn.functional.cross_entropy(logits.float(), target).backward()
        grads = dict(net.named_parameters())
        for name, expected in reference.named_parameters():
            assert torch.isfinite(grads[name].grad).all(), (seed, name)
        for name, expected in reference.decoder.encoders[4].named_parameters():
            if expected.dim() == 5:
                got = grads[f"decoder.encoders.4.{name}"].grad.double()
                assert (got - expected.grad).norm() <= 0.5 * expected.grad.norm(), (seed, name)


def test_only_a_two_voxel_deep_decoder_block_leaves_bfloat16_autocast_and_only_for_training():
    """The guard's reach: the 2³ bottleneck block runs in float32 while gradients are recorded; the 4³ block above it,
    and the bottleneck under ``no_grad`` (inference, whose forward is right), stay in bfloat16."""
    net = Rep3D(1, 3, feature_size=4, depths=(1, 1, 1, 1), hidden_size=32, kernel_size=3)
    ran_in = {}
    for index in (3, 4):
        conv = net.decoder.encoders[index].layer.conv1.conv
        conv.register_forward_hook(lambda module, inputs, output, index=index: ran_in.__setitem__(index, output.dtype))
    expected = {True: {3: torch.bfloat16, 4: torch.float32}, False: {3: torch.bfloat16, 4: torch.bfloat16}}
    for grad_enabled, dtypes in expected.items():
        with torch.set_grad_enabled(grad_enabled), torch.autocast("cpu", dtype=torch.bfloat16):
            net(torch.rand(1, 1, 32, 32, 32))
        assert ran_in == dtypes, grad_enabled
