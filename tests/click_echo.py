"""Deterministic stand-ins for a trained DeepEdit network, served by the app in the simulated-annotator tests.

They take the DeepEdit bundles' input (``number_intensity_ch`` image channels, then one guidance channel per label in
the order of ``label_names``, as MONAI's ``AddGuidanceSignalDeepEditd`` appends them) and give one logit per label
value, so that a model that obeys clicks perfectly, and one that ignores them, need no training.
"""

from typing import Dict

import torch

BACKGROUND_LOGIT = 0.5
"""Background wins where no label's guidance exceeds this: within about 1.2 sigma of a click (the Gaussian peaks at
1)."""


class ClickEcho(torch.nn.Module):
    """Echoes the clicks: the logit of each label is its guidance channel, background's is
    ``BACKGROUND_LOGIT`` plus the background guidance; so the label is the one clicked nearest, background elsewhere.

    Args:
        label_names: ``{name: value}`` of the bundle, background included, in its ``label_names`` order.
        number_intensity_ch: image channels before the guidance channels.
        listen: ``False`` ignores the guidance (a model deaf to clicks: all background); then the input may have
            no guidance channels at all (an automatic bundle).
    """

    def __init__(self, label_names: Dict[str, int], number_intensity_ch: int = 1, listen: bool = True) -> None:
        super().__init__()
        self.values = [int(value) for value in label_names.values()]
        self.background = int(label_names["background"])
        self.number_intensity_ch = number_intensity_ch
        self.listen = listen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(x.shape[0], len(self.values), *x.shape[2:], dtype=x.dtype, device=x.device)
        if self.listen:
            guidance = x[:, self.number_intensity_ch :]
            if guidance.shape[1] != len(self.values):
                raise ValueError(f"expected {len(self.values)} guidance channels, got {guidance.shape[1]}")
            logits[:, self.values] = guidance
        logits[:, self.background] += BACKGROUND_LOGIT
        return logits
