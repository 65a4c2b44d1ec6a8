"""Writes ``tests/data/v0_1_checkpoints.pt``: small state dicts as rep3d_networks 0.1 wrote them, for the
backward-compatibility tests of ``tests/test_network.py``.

It was run once, at commit b492680 (the last commit before state dicts carried a ``reparam_state`` entry), with::

    PYTHONPATH=. python tests/data/make_v0_1_checkpoints.py

Running it with later code writes the new format, which is not what the fixture is for, so it refuses to run when
the network already writes ``reparam_state`` entries. The file holds, for each variant, the model arguments, the
state dict (training form; ``lrbm_folded`` is ``fold()``'s output, the only way 0.1 made a folded state dict),
one input and the eval output of the training-form network on every 2nd, 2nd, 4th voxel (the ground truth a loaded
network must reproduce). All variants share one decoder, stored once.
"""

import subprocess
from pathlib import Path

import torch

from rep3d_networks import Rep3D, UXNet, fold

TINY = dict(in_channels=1, out_channels=2, feature_size=2, hidden_size=4, depths=(1, 1, 1), kernel_size=5)
VARIANTS = {
    "lrbm": (Rep3D, dict(TINY, reparam="lrbm")),
    "lrbm_depthwise": (
        Rep3D,
        dict(TINY, reparam="lrbm", generator_channels="depthwise", generator_layers=3, generator_kernel_size=3),
    ),
    "fixed": (Rep3D, dict(TINY, reparam="fixed")),
    "csla": (Rep3D, dict(TINY, reparam="csla")),
    "uxnet_lrbm": (UXNet, dict(TINY, reparam="lrbm", kernel_size=3)),
    "lrbm_folded": (Rep3D, dict(TINY, reparam="lrbm")),
}
EXPECTED_STRIDE = (2, 2, 4)  # the expected output is stored on every 2nd, 2nd, 4th voxel (a small file)
OUTPUT = Path(__file__).with_name("v0_1_checkpoints.pt")


@torch.no_grad()
def moved_off_init(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter and BatchNorm statistic perturbed (the generator's zero gain too, so that ``M != P``)."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.parameters():
        scale = 0.3 * (parameter.abs().mean() + 0.05)
        parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.uniform_(-0.2, 0.2, generator=generator)
            module.running_var.uniform_(0.5, 1.5, generator=generator)
    return model.eval()


def main() -> None:
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    x = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    fixture = {"commit": commit, "input": x, "expected_stride": EXPECTED_STRIDE, "variants": {}}
    decoder = None
    for seed, (name, (cls, kwargs)) in enumerate(VARIANTS.items()):
        torch.manual_seed(seed)
        model = moved_off_init(cls(**kwargs), seed)
        if decoder is None:
            decoder = model.decoder.state_dict()
        model.decoder.load_state_dict(decoder)
        if any(k.endswith("reparam_state") for k in model.state_dict()):
            raise SystemExit("this code already writes reparam_state entries: run this script at commit b492680")
        with torch.no_grad():
            expected = model(x)[..., :: EXPECTED_STRIDE[0], :: EXPECTED_STRIDE[1], :: EXPECTED_STRIDE[2]].clone()
        if name == "lrbm_folded":
            fold(model)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        # one decoder for all variants, stored once (torch.save writes a shared tensor once): keeps the file small
        state.update({"decoder." + k: v for k, v in decoder.items()})
        fixture["variants"][name] = {"class": cls.__name__, "kwargs": kwargs, "state_dict": state, "expected": expected}
    torch.save(fixture, OUTPUT)
    print(f"{OUTPUT}: {OUTPUT.stat().st_size} bytes, commit {commit}")


if __name__ == "__main__":
    main()
