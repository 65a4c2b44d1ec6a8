"""``rep3d_networks.deepedit.interaction``: DeepEdit training iterations on permuted organ labels (issue #26).

:func:`permute_organs` on a small item (case table), then :class:`PermutedLabelInteraction` in the DeepEdit bundle's
own ``train.json`` with the override ``python -m rep3d_networks.click_models --label_permutation`` writes: the
network trains on a label whose organs are renumbered consistently and on clicks that sit on their new organs.
"""

import json

import numpy as np
import pytest
import torch
from bundle_helpers import TINY_TRAIN, bundle_workflow, copy_bundle, make_dataset
from ignite.engine import Events

from rep3d_networks import click_models
from rep3d_networks.data.cli import prepare
from rep3d_networks.deepedit import permute_organs

NAMES = {"spleen": 1, "liver": 6, "background": 0}  # background last, as in the bundles' label_names


def small_item() -> dict:
    label = torch.zeros(1, 4, 4, 4)
    label[:, :2] = 6
    label[:, 2] = 1
    clicks = {"spleen": [[0, 2, 1, 1]], "liver": [[0, 0, 1, 1], [0, 1, 3, 3]], "background": [[0, 3, 3, 3]]}
    return {"label": label, "guidance": {k: json.dumps(v) for k, v in clicks.items()}, "label_names": dict(NAMES)}


PERMUTATIONS = [  # order -> (voxel counts per value after it, clicks per name after it)
    ({1: 6, 6: 1}, ({0: 16, 1: 32, 6: 16}, {"spleen": [[0, 0, 1, 1], [0, 1, 3, 3]], "liver": [[0, 2, 1, 1]]})),
    ({1: 1, 6: 6}, ({0: 16, 1: 16, 6: 32}, {"spleen": [[0, 2, 1, 1]], "liver": [[0, 0, 1, 1], [0, 1, 3, 3]]})),
]


@pytest.mark.parametrize("order, expected", PERMUTATIONS)
def test_permute_organs_moves_voxels_and_clicks_together(order, expected):
    counts, clicks = expected
    permuted = permute_organs(small_item(), order)
    values, numbers = np.unique(permuted["label"].numpy(), return_counts=True)
    assert dict(zip(values.astype(int).tolist(), numbers.tolist())) == counts
    assert list(permuted["guidance"]) == list(NAMES)  # the channel order AddGuidanceSignalDeepEditd follows
    assert {k: json.loads(v) for k, v in permuted["guidance"].items()} == {**clicks, "background": [[0, 3, 3, 3]]}
    for name, points in permuted["guidance"].items():  # every click on a voxel of its (new) organ
        assert all(permuted["label"][(0, *p[-3:])] == NAMES[name] for p in json.loads(points))


@pytest.mark.parametrize("order", [{1: 6, 6: 6}, {1: 2, 6: 1}, {1: 6}])
def test_permute_organs_refuses_what_is_not_a_permutation(order):
    with pytest.raises(ValueError, match="must permute the organ values"):
        permute_organs(small_item(), order)


@pytest.mark.parametrize("probability, permuted", [(1.0, True), (0.0, False)])
def test_bundle_training_iteration_on_permuted_labels(probability, permuted, tmp_path):
    """One iteration of the DeepEdit bundle's training with ``--label_permutation``'s override: the label the network
    trains on is the loaded one with its organs renumbered one to one (not renumbered at probability 0), and every
    click, and its click channel's peak, lies on its own organ of that label."""
    data_dir = make_dataset("amos_ct", "phantom", tmp_path / "data")
    bundle = copy_bundle("amos_ct_deepedit", tmp_path)
    prepare("amos_ct", str(data_dir), str(bundle / "configs"))  # the DeepEdit bundle reads the AMOS datalist
    options = {"click_probability": None, "max_interactions": 2, "guidance_sigma": 1.5}
    overrides, lines = click_models.click_overrides(bundle, {**options, "label_permutation": probability})
    assert any("PermutedLabelInteraction" in line for line in lines) == permuted  # 0.0: the bundle's own loop
    train = {**TINY_TRAIN, "max_iterations": 1, "val_interval": 10, "num_samples": 1}
    workflow = bundle_workflow(
        bundle,
        ["train.json"],
        dataset_dir=str(data_dir),
        initialize=["$monai.utils.set_determinism(seed=0)"],
        **train,
        **overrides,
    )
    trainer, iterations, inputs = workflow.parser.get_parsed_content("train#trainer"), [], []

    def started(engine):
        inputs.clear()  # every input the network sees in this iteration: the first is the first click round's
        iterations.append({"loaded": engine.state.batch["label"][0, 0].clone()})

    def completed(engine):
        (item,) = engine.state.batch  # the trainer decollates its batch after the iteration
        iterations[-1].update(item=item, first=inputs[0][0] if inputs else None)

    trainer.add_event_handler(Events.ITERATION_STARTED, started)
    trainer.add_event_handler(Events.ITERATION_COMPLETED, completed)
    trainer.network.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach().clone()))
    workflow.run()
    workflow.finalize()

    names, renumbered = workflow.parser["label_names"], []
    assert iterations
    for record in iterations:
        loaded, item = record["loaded"], record["item"]
        label = item["label"][0]
        order = {}
        for value in torch.unique(loaded).int().tolist():
            new_values = torch.unique(label[loaded == value]).int().tolist()
            assert len(new_values) == 1, (value, new_values)  # one organ stays one organ
            order[value] = new_values[0]
        assert order[0] == 0 and len(set(order.values())) == len(order)  # one to one, background kept
        renumbered.append(any(old != new for old, new in order.items()))
        for name in names:  # the clicks the network trained with (the last simulated round's)
            points = [p[-3:] for p in json.loads(item["guidance"][name]) if min(p) >= 0]
            assert all(int(label[tuple(p)]) == names[name] for p in points), (name, points)
        first, seeded = record["first"], 0  # the seeds of every organ, moved with the organs and drawn again
        for channel, name in enumerate(names, start=1):  # the guidance channels follow label_names' order
            if first is not None and first[channel].max() > 0:
                peak = np.unravel_index(int(torch.argmax(first[channel])), tuple(first.shape[1:]))
                assert int(label[peak]) == names[name], (name, peak)
                seeded += 1
        assert seeded >= 3 or not permuted  # a permuted iteration always simulates clicks: organs and background
    assert all(renumbered) if permuted else not any(renumbered)
