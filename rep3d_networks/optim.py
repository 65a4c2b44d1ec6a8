"""Optimizer parameter groups for the re-parameterized variants."""

from typing import Dict, List

from torch import nn

from rep3d_networks.blocks.lrbm import ReparamDepthwiseConv3d


def csla_param_groups(model: nn.Module, lr_large: float, lr_small: float) -> List[Dict]:
    """Parameter groups giving the CSLA small-kernel branches their own learning rate (paper Table 8).

    The paper's best AdamW setting is ``lr_large=2e-4, lr_small=3e-4`` (SGD: ``2e-4, 6e-4``). Every parameter
    other than the small branches (including the large kernels, norms and decoder) uses ``lr_large``.

    Returns:
        ``[{"params": [...], "lr": lr_large}, {"params": [...], "lr": lr_small}]``, ready for any
        ``torch.optim`` optimizer; other options (weight decay, betas) come from the optimizer's defaults.
    """
    small = [
        m.small_weight for m in model.modules() if isinstance(m, ReparamDepthwiseConv3d) and m.small_weight is not None
    ]
    if not small:
        raise ValueError("the model has no CSLA small-kernel branch; build it with reparam='csla'.")
    small_ids = {id(p) for p in small}
    rest = [p for p in model.parameters() if id(p) not in small_ids]
    return [{"params": rest, "lr": lr_large}, {"params": small, "lr": lr_small}]
