"""Part 1, correctness: ``dwconv3d`` FFT vs cuDNN, a Rep3D training step FFT vs direct, ``fold()``, deploy load.

The reference for every comparison is ``method="direct"`` (cuDNN on CUDA, oneDNN on the CPU) with TF32 off.
Under autocast the input arrives in the autocast dtype (as from the convolution before it) and ``dwconv3d``
computes in float32 inside, so the tolerances are those of the input/output dtype.
"""

import io

import torch
from monai.losses import DiceCELoss

from bench_dwconv import _fwd_bwd, _rel
from gpu_parts.common import TINY_NET, exact_float32, within, worst
from rep3d_networks import Rep3D
from rep3d_networks.ops import dwconv3d

# (batch, channels, map edge, kernel): a Rep3D stage, a map smaller than the kernel (cropped), UX-Net's 7³
FULL = {"convs": [(2, 48, 24, 21), (2, 96, 6, 21), (2, 48, 24, 7)], "net": dict(feature_size=24), "input": 48}
DRY = {
    "convs": [(1, 4, 8, 7), (1, 4, 4, 7)],
    "net": dict(TINY_NET, kernel_size=5),
    "input": 32,
}
TOLERANCE = {torch.float32: 1e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}  # relative, per dtype of x


def run(ctx) -> None:
    sizes = DRY if ctx.dry_run else FULL
    for batch, channels, edge, kernel in sizes["convs"]:
        for dtype in (torch.float32, torch.float16, torch.bfloat16):
            name = "float32" if dtype is torch.float32 else f"autocast {str(dtype)[6:]}"
            ctx.run_check(
                f"dwconv3d fft vs direct, {batch}x{channels}x{edge}³, k={kernel}, {name}",
                lambda: conv_agreement(ctx.device, (batch, channels, edge, kernel), dtype),
            )
    ctx.run_check("Rep3D training step: conv_method fft vs direct", lambda: training_step_agreement(ctx.device, sizes))
    ctx.run_check(
        "fold() keeps eval outputs; deploy net loads training and folded checkpoints", lambda: fold_and_deploy(ctx.device, sizes)
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


def lrbm_rep3d(device, sizes, **kwargs) -> Rep3D:
    torch.manual_seed(0)
    return Rep3D(1, 3, **sizes["net"], **kwargs).to(device)


def training_step_agreement(device, sizes):
    """Same weights, same batch of two: the loss and every parameter's gradient agree across conv methods."""
    edge = sizes["input"]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, edge, edge, edge, generator=gen).to(device)
    y = torch.randint(0, 3, (2, 1, edge, edge, edge), generator=gen).to(device)
    loss_fn, results = DiceCELoss(to_onehot_y=True, softmax=True), {}
    fft = lrbm_rep3d(device, sizes, conv_method="fft")
    direct = lrbm_rep3d(device, sizes, conv_method="direct")
    direct.load_state_dict(fft.state_dict())
    with exact_float32():
        for name, net in (("fft", fft), ("direct", direct)):
            net.train()
            loss = loss_fn(net(x), y)
            loss.backward()
            results[name] = (loss.item(), {k: p.grad for k, p in net.named_parameters() if p.grad is not None})
    (loss_fft, grads_fft), (loss_direct, grads_direct) = results["fft"], results["direct"]
    if set(grads_fft) != set(grads_direct) or not grads_fft:
        return "parameters with gradients differ", "failed: gradient sets differ"
    names = sorted(grads_fft)
    overall = _rel(torch.cat([grads_fft[k].flatten() for k in names]), torch.cat([grads_direct[k].flatten() for k in names]))
    # a weight just before a normalization has a near-zero gradient (the norm cancels it): its own relative error is
    # rounding noise, so the per-parameter comparison leaves out gradients under 1e-4 of the largest one
    norms = {k: grads_direct[k].norm().item() for k in names}
    compared = [k for k in names if norms[k] >= 1e-4 * max(norms.values())]
    errors = {k: _rel(grads_fft[k], grads_direct[k]) for k in compared}
    worst_name = max(errors, key=errors.get)
    loss_error = abs(loss_fft - loss_direct) / abs(loss_direct)
    result = (
        f"loss {loss_fft:.6f} vs {loss_direct:.6f} (rel {loss_error:.1e}); all gradients rel {overall:.1e}; worst of "
        f"{len(compared)}/{len(names)} parameters rel {errors[worst_name]:.1e} ({worst_name})"
    )
    statuses = [within(loss_error, 1e-5, "loss rel err"), within(overall, 1e-4, "gradient rel err")]
    return result, worst(statuses + [within(errors[worst_name], 1e-3, f"{worst_name} gradient rel err")])


def fold_and_deploy(device, sizes):
    """After one SGD step (so the LRBM masks differ from their prior), eval outputs before and after ``fold()``
    and of ``Rep3D(deploy=True)`` loading the training or the folded checkpoint (saved and loaded to ``device``)."""
    edge = sizes["input"]
    net = lrbm_rep3d(device, sizes)
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
            deploy = lrbm_rep3d(device, sizes, deploy=True).eval()
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
