"""DeepEdit training iterations in which only the clicks tell which organ is which (:class:`PermutedLabelInteraction`).

MONAI's DeepEdit training (``monai.apps.deepedit.interaction.Interaction``) seeds every organ of the patch with a
click and then clicks on the network's errors. A network that can name each organ from its appearance alone, as it
soon can on a few training images, meets few errors and gains nothing from its click channels: trained on one
person's CT it learned that person by heart and a click on an organ it misses elsewhere changes nothing
(``docs/interactive.md``). In a permuted iteration the organs' label values are swapped at random, in the label and
in the clicks alike, so the appearance names the wrong organ and only the click channels name the right one: the
loss rewards labelling the object under a click with the click's label. MONAI has no such option, hence this class.
"""

import copy
from typing import Dict, Hashable, Mapping

import numpy as np
import torch
from monai.apps.deepedit.interaction import Interaction
from monai.apps.deepedit.transforms import AddGuidanceSignalDeepEditd
from monai.data import decollate_batch, list_data_collate


def permute_organs(data: Mapping[Hashable, object], order: Mapping[int, int]) -> Dict[Hashable, object]:
    """Relabels the organs of one DeepEdit training item: voxels of label value ``v`` become ``order[v]`` and the clicks
    of the organ named for ``v`` become the clicks of the organ named for ``order[v]``.

    Args:
        data: one item as DeepEdit's training transforms leave it: ``label`` (values of ``label_names``),
            ``guidance`` (label name -> clicks) and ``label_names`` (name -> value, background ``0``).
        order: old label value -> new label value, a permutation of the organ values (background stays ``0``).

    Raises:
        ValueError: ``order`` is not a permutation of the organ values of ``label_names``.
    """
    d = dict(data)
    values = {name: int(value) for name, value in d["label_names"].items()}
    organs = sorted(v for v in values.values() if v != 0)
    if sorted(order) != organs or sorted(int(v) for v in order.values()) != organs:
        raise ValueError(f"order must permute the organ values {organs}, got {dict(order)}")
    name_of = {value: name for name, value in values.items()}
    label = d["label"]
    relabelled = label.clone() if isinstance(label, torch.Tensor) else np.copy(label)
    for old, new in order.items():
        relabelled[label == old] = new
    d["label"] = relabelled
    clicks = {name_of[int(order[value])]: d["guidance"].get(name, "[]") for name, value in values.items() if value}
    d["guidance"] = {name: clicks.get(name, d["guidance"].get(name, "[]")) for name in values}  # label_names' order
    return d


class PermutedLabelInteraction:
    """MONAI's DeepEdit ``Interaction`` with a share of training iterations on permuted organ labels (module docstring).

    With probability ``probability`` an iteration draws a random permutation of the organ values, applies it to each
    item's label and clicks (:func:`permute_organs`), redraws the click channels with MONAI's
    ``AddGuidanceSignalDeepEditd`` and runs ``interaction`` in click mode (its simulated clicks then correct errors
    against the permuted label); every other iteration is ``interaction``'s own (clicks with its
    ``deepgrow_probability``, otherwise the automatic mode).

    Args:
        interaction: the bundle's training ``Interaction``.
        probability: share of iterations on permuted labels, in ``[0, 1]``.
        number_intensity_ch: image channels before the click channels (the bundle's ``number_intensity_ch``).
        sigma: Gaussian sigma of a click in voxels (the bundle's ``guidance_sigma``).
    """

    def __init__(self, interaction: Interaction, probability: float, number_intensity_ch: int, sigma: float) -> None:
        if not 0.0 <= float(probability) <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability}")
        self.interaction = interaction
        self.clicking = copy.copy(interaction)
        self.clicking.deepgrow_probability = 1.0
        self.probability = float(probability)
        self.signal = AddGuidanceSignalDeepEditd(
            keys="image", guidance="guidance", number_intensity_ch=number_intensity_ch, sigma=sigma
        )

    def __call__(self, engine, batchdata: Dict[str, object]) -> Dict:
        if np.random.random() >= self.probability:
            return self.interaction(engine, batchdata)
        items = []
        for item in decollate_batch(batchdata, detach=True):
            organs = sorted(int(v) for v in item["label_names"].values() if int(v) != 0)
            order = dict(zip(organs, (int(v) for v in np.random.permutation(organs))))
            items.append(self.signal(permute_organs(item, order)))
        return self.clicking(engine, list_data_collate(items))
