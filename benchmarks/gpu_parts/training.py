"""Part 3, full-size training step: 96³, batch 2, AMP, for Rep3D (LRBM and vanilla), UX-Net (k=7), SwinUNETR.

The step is amos_ct's ``train.json`` recipe: its loss (DiceCE), AdamW with its learning rate and weight decay,
autocast with a gradient scaler (float16, as MONAI's ``amp=True``; bfloat16 without a scaler on the CPU dry run),
16 classes, and ``set_determinism(seed=0)`` as the bundle's ``initialize`` (cuDNN deterministic, no autotuning).
Median seconds per step after warm-up, peak CUDA memory, and the hours 60,000 steps would take beside the
paper's Table 7 (one A100, batch 2: 17.5 h Rep3D LRBM, 17.3 h vanilla).
"""

import statistics

import torch
from monai.bundle import ConfigParser
from monai.networks.nets import SwinUNETR
from monai.utils import set_determinism

from gpu_parts.common import AMOS_CT, OK, TINY_NET, gib, peak_memory, time_calls
from rep3d_networks import Rep3D, UXNet

STEPS, PAPER_HOURS = 60000, {"Rep3D lrbm": 17.5, "Rep3D vanilla": 17.3}
MODELS = {  # name -> (class, full-size arguments, dry-run arguments)
    "Rep3D lrbm": (Rep3D, dict(reparam="lrbm"), dict(TINY_NET, reparam="lrbm")),
    "Rep3D vanilla": (Rep3D, dict(reparam="vanilla"), dict(TINY_NET, reparam="vanilla")),
    "UXNet k=7": (UXNet, dict(kernel_size=7), {k: v for k, v in TINY_NET.items() if k != "kernel_size"}),
    # instance norm needs more than one voxel at the 1³ bottleneck of the dry run's 32³ input
    "SwinUNETR feature_size=48": (
        SwinUNETR,
        dict(feature_size=48),
        dict(feature_size=12, depths=(1, 1, 1, 1), norm_name="batch"),
    ),
}
FULL = {"edge": 96, "warmup": 3, "steps": 20}
DRY = {"edge": 32, "warmup": 1, "steps": 1}


def run(ctx) -> None:
    sizes = DRY if ctx.dry_run else FULL
    recipe = ConfigParser()
    recipe.read_config(str(AMOS_CT / "configs" / "train.json"))
    medians, classes = {}, recipe.get_parsed_content("num_classes")
    for name, (network, full, dry) in MODELS.items():
        build = lambda: network(1, classes, **(dry if ctx.dry_run else full))  # noqa: E731
        ctx.run_check(
            f"{name}, {sizes['edge']}³ batch 2, AMP", lambda: measure(ctx, sizes, recipe, name, build, medians)
        )
    if {"Rep3D lrbm", "Rep3D vanilla"} <= set(medians):
        overhead = medians["Rep3D lrbm"] / medians["Rep3D vanilla"] - 1
        ctx.record(
            "LRBM overhead vs vanilla (ratio of medians)", f"{100 * overhead:+.1f} % (paper: 17.5 h vs 17.3 h = +1.2 %)"
        )


def measure(ctx, sizes, recipe, name, build, medians):
    device, dtype, edge = ctx.device, ctx.amp_dtype, sizes["edge"]
    set_determinism(seed=0)  # before the build: every model starts from seeded weights, as in the bundle
    net = build().to(device).train()
    loss_fn = recipe.get_parsed_content("loss")
    lr, decay = (recipe.get_parsed_content(key) for key in ("learning_rate", "optimizer#weight_decay"))
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=decay)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    x = torch.rand(2, 1, edge, edge, edge, device=device)
    y = torch.randint(0, recipe.get_parsed_content("num_classes"), (2, 1, edge, edge, edge), device=device)
    losses = []

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype):
            loss = loss_fn(net(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.detach())

    with peak_memory(device) as peak:
        times = time_calls(step, device, sizes["warmup"], sizes["steps"])
    if not all(torch.isfinite(loss) for loss in losses):
        return f"losses {[round(float(v), 4) for v in losses]}", "failed: non-finite loss"
    median = medians[name] = statistics.median(times)
    paper = f"paper A100 {PAPER_HOURS[name]} h" if name in PAPER_HOURS else "no paper figure"
    result = (
        f"median {median:.3f} s/step over {len(times)} steps after {sizes['warmup']} warm-up (min {min(times):.3f}, "
        f"max {max(times):.3f}); peak {gib(peak['gib'])}; 60k steps ≈ {median * STEPS / 3600:.1f} h ({paper})"
    )
    return result, OK
