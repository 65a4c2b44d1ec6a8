"""Part 1, correctness: ``dwconv3d`` FFT vs cuDNN, a Rep3D training step's gradients (FFT and direct)
against float64, ``fold()``, deploy load.

The reference is ``method="direct"`` (cuDNN on CUDA, oneDNN on the CPU) with TF32 off; for the training step's
gradients it is the same network and batch in float64 (see ``training_step_agreement``).
Under autocast the input arrives in the autocast dtype (as from the convolution before it) and ``dwconv3d``
computes in float32 inside, so the tolerances are those of the input/output dtype.
"""

import io

import torch
from bench_dwconv import _fwd_bwd, _rel
from monai.losses import DiceCELoss

from gpu_parts.common import TINY_NET, exact_float32, within, worst
from rep3d_networks import Rep3D
from rep3d_networks.ops import dwconv3d

# (batch, channels, map edge, kernel): a Rep3D stage, a map smaller than the kernel (cropped), UX-Net's 7³
FULL = {
    "convs": [(2, 48, 24, 21), (2, 96, 6, 21), (2, 48, 24, 7)],
    "net": dict(feature_size=24),
    "grad_net": dict(feature_size=12, hidden_size=96, depths=[1, 1, 1, 1]),  # float64 cuDNN is slow: a small net
    "input": 48,
}
DRY = {
    "convs": [(1, 4, 8, 7), (1, 4, 4, 7)],
    "net": dict(TINY_NET, kernel_size=5),
    "grad_net": dict(TINY_NET, kernel_size=5),
    "input": 32,
}
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}  # relative, per dtype of x
K, FLOOR, FLOAT64_AGREEMENT = 4.0, 1e-5, 1e-10  # the training step's gradient bounds (training_step_agreement)


def run(ctx) -> None:
    sizes = DRY if ctx.dry_run else FULL
    for batch, channels, edge, kernel in sizes["convs"]:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            name = "float32" if dtype is torch.float32 else f"autocast {str(dtype)[6:]}"
            ctx.run_check(
                f"dwconv3d fft vs direct, {batch}x{channels}x{edge}³, k={kernel}, {name}",
                lambda: conv_agreement(ctx.device, (batch, channels, edge, kernel), dtype),
            )
    ctx.run_check(
        "Rep3D training step vs float64: conv_method fft and direct", lambda: training_step_agreement(ctx.device, sizes)
    )
    ctx.run_check(
        "fold() keeps eval outputs; deploy net loads training and folded checkpoints",
        lambda: fold_and_deploy(ctx.device, sizes),
    )


def conv_agreement(device, shape, dtype):
    """Output, ∂x and ∂w of ``method="fft"`` vs ``"direct"``; the output keeps the input's dtype."""
    batch, channels, edge, kernel = shape
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, channels, edge, edge, edge, generator=gen).to(device, dtype)
    w = (torch.randn(channels, 1, kernel, kernel, kernel, generator=gen) / kernel**1.5).to(device)
    grad_out = torch.randn(x.shape, generator=gen).to(device, dtype)
    with exact_float32(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not torch.float32):
        ref = _fwd_bwd(lambda a, b: dwconv3d(a, b, method="direct"), x, w, grad_out)
        got = _fwd_bwd(lambda a, b: dwconv3d(a, b, method="fft"), x, w, grad_out)
    errors = [_rel(g, r) for g, r in zip(got, ref)]
    statuses = [within(e, TOLERANCE[dtype], f"rel err {what}") for e, what in zip(errors, ("out", "∂x", "∂w"))]
    if got[0].dtype != dtype:
        statuses.append(f"failed: output dtype {got[0].dtype}, input {dtype}")
    return f"rel err out / ∂x / ∂w: {' / '.join(f'{e:.1e}' for e in errors)}", worst(statuses)


def lrbm_rep3d(device, net_sizes, **kwargs) -> Rep3D:
    torch.manual_seed(0)
    return Rep3D(1, 3, **net_sizes, **kwargs).to(device)


def training_step_agreement(device, sizes):
    """One training step's loss and gradients, float32 fft and float32 direct, each against a float64 reference.

    Comparing the two float32 paths with each other measures two roundings, not a bug: rounding in the forward pass
    is amplified through normalizations and the softmax, so even the library convolution (``"direct"``: cuDNN /
    oneDNN) is far from the exact gradient (on the H200, 9.2e-4 overall and 1.2e-2 at its worst parameter, fft 6.5e-4
    and 5.7e-3). So the reference is the same network and batch in float64, where the fft and direct paths must
    agree to ``FLOAT64_AGREEMENT`` (only float64 rounding is left: 1.5e-15 there). Each float32 path must then be
    within ``K`` times the float32 direct path's own error plus ``FLOOR``: the fft path may be no less accurate than
    the library in the same precision, up to the scatter between two sound roundings (``K`` = 4); ``FLOOR`` (1e-5,
    about 100 float32 roundoffs) keeps the bound meaningful when the direct path is nearly exact (a tiny CPU
    network). A wrong gradient (an index, a flip, a missing term) is off by O(1), orders of magnitude above it.
    Errors: the norm of the difference of all gradients over the reference's, and the worst parameter among those
    whose gradient norm is at least 1e-4 of the largest (a weight just before a normalization has a near-zero
    gradient, whose own relative error is noise).
    """
    edge = sizes["input"]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, edge, edge, edge, generator=gen).to(device)
    y = torch.randint(0, 3, (2, 1, edge, edge, edge), generator=gen).to(device)
    state = lrbm_rep3d(device, sizes["grad_net"]).state_dict()
    runs = {}
    with exact_float32():
        for dtype in (torch.float64, torch.float32):
            for method in ("direct", "fft"):
                net = lrbm_rep3d(device, sizes["grad_net"], conv_method=method)
                net.load_state_dict(state)
                runs[method, dtype] = step(net.to(dtype).train(), x.to(dtype), y)
    loss_ref, reference = runs["direct", torch.float64]
    if any(set(grads) != set(reference) for _, grads in runs.values()) or not reference:
        return "parameters with gradients differ", "failed: gradient sets differ"
    norms = {k: g.norm().item() for k, g in reference.items()}
    compared = [k for k in reference if norms[k] >= 1e-4 * max(norms.values())]
    errors = {key: gradient_errors(grads, reference, compared) for key, (_, grads) in runs.items()}
    float64 = errors["fft", torch.float64][0]
    statuses = [within(float64, FLOAT64_AGREEMENT, "float64 fft vs direct gradient rel err")]
    cells = [f"float64 fft vs direct {float64:.1e}"]
    (direct_all, direct_worst, _) = errors["direct", torch.float32]
    for method in ("direct", "fft"):
        overall, worst_error, worst_name = errors[method, torch.float32]
        loss_error = abs(runs[method, torch.float32][0] - loss_ref) / abs(loss_ref)
        cells.append(
            f"float32 {method}: loss {loss_error:.1e}, all {overall:.1e}, worst {worst_error:.1e} ({worst_name})"
        )
        statuses += [
            within(loss_error, 1e-5, f"float32 {method} loss rel err"),
            within(overall, K * direct_all + FLOOR, f"float32 {method} gradient rel err"),
            within(worst_error, K * direct_worst + FLOOR, f"float32 {method} {worst_name} gradient rel err"),
        ]
    bound = f"bound {K:.0f} × direct + {FLOOR:.0e}; {len(compared)}/{len(reference)} parameters compared"
    return f"rel err vs float64 direct: {'; '.join(cells)}; {bound}", worst(statuses)


def step(net, x, y):
    """Loss and the gradient (float64 copy) of every parameter after one DiceCE backward pass."""
    loss = DiceCELoss(to_onehot_y=True, softmax=True)(net(x), y)
    loss.backward()
    return loss.item(), {k: p.grad.double() for k, p in net.named_parameters() if p.grad is not None}


def gradient_errors(grads, reference, compared):
    """(all gradients' rel err, the worst compared parameter's rel err, its name) against ``reference``."""
    names = sorted(reference)
    overall = _rel(torch.cat([grads[k].flatten() for k in names]), torch.cat([reference[k].flatten() for k in names]))
    each = {k: _rel(grads[k], reference[k]) for k in compared}
    name = max(each, key=each.get)
    return overall, each[name], name


def fold_and_deploy(device, sizes):
    """After one SGD step (so the LRBM masks differ from their prior), eval outputs before and after ``fold()``
    and of ``Rep3D(deploy=True)`` loading the training or the folded checkpoint (saved and loaded to ``device``)."""
    edge = sizes["input"]
    net = lrbm_rep3d(device, sizes["net"])
    x = torch.randn(1, 1, edge, edge, edge, generator=torch.Generator().manual_seed(2)).to(device)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net(x).pow(2).mean().backward()
    optimizer.step()
    training_checkpoint = round_trip(net.state_dict(), device)
    errors = {}
    with exact_float32(), torch.no_grad():
        net.eval()
        reference = net(x)
        scale = reference.abs().max().item()
        folded = net.fold()(x)
        errors["fold"] = (folded - reference).abs().max().item() / scale
        checkpoints = {"deploy<-training": training_checkpoint, "deploy<-folded": round_trip(net.state_dict(), device)}
        for name, checkpoint in checkpoints.items():
            deploy = lrbm_rep3d(device, sizes["net"], deploy=True).eval()
            deploy.load_state_dict(checkpoint, strict=True)
            errors[name] = (deploy(x) - reference).abs().max().item() / scale
    statuses = [within(errors[name], 1e-5, f"{name} max err") for name in errors]
    result = "max |Δ| / max |y|: " + ", ".join(f"{name} {error:.1e}" for name, error in errors.items())
    return result, worst(statuses)


def round_trip(state_dict, device):
    """``torch.save`` / ``torch.load(map_location=device)`` of a state dict, as a checkpoint file would go."""
    buffer = io.BytesIO()
    torch.save({k: v.cpu() for k, v in state_dict.items()}, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location=device)
