"""What a trained bundle labels each reference organ as: per organ, the share of its voxels given each label (not a
test).

Runs the bundle's ``configs/inference.json`` (as ``bench_precision.py`` does: preprocessing, sliding window, output
stage without ``SaveImaged``) on the cases of a datalist and counts, over all cases, reference label × predicted label.
An organ with Dice 0 can be missed (labelled background) or mistaken for another (e.g. left kidney labelled right
kidney); the table tells which::

    python benchmarks/bench_confusion.py --bundle real_ct_output/bundles/amos_ct \\
        --dataset_dir real_ct_output/data/amos22 --splits training
"""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_precision import case_arguments, class_names, label_stage, load_network, load_parser, reference_labels


def confusion(parser, network, cases, num_classes: int) -> np.ndarray:
    """``[reference, predicted]`` voxel counts over ``cases``."""
    preprocessing = parser.get_parsed_content("preprocessing")
    to_labels = label_stage(parser)
    inferer = parser.get_parsed_content("inferer", instantiate=True, lazy=False)
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    for case in cases:
        data = preprocessing({"image": case["image"]})
        with torch.no_grad():
            pred = inferer(data["image"][None], network)[0]
        labels = to_labels(data, pred)
        reference = reference_labels(case["label"], labels.shape)
        counts += np.bincount(reference.ravel() * num_classes + labels.ravel(), minlength=num_classes**2).reshape(
            num_classes, num_classes
        )
    return counts


def markdown(counts: np.ndarray, names, top: int = 3) -> str:
    lines = ["| reference organ | voxels | labelled as (share of its voxels) |", "|---|---:|---|"]
    for c in range(1, len(names)):
        total = counts[c].sum()
        if total:
            order = np.argsort(counts[c])[::-1][:top]
            shares = ", ".join(f"{names[i]} {counts[c, i] / total:.2f}" for i in order if counts[c, i])
            lines.append(f"| {names[c]} | {total:,} | {shares} |")
    return "\n".join(lines)


def main() -> None:
    parser = case_arguments(__doc__)
    args = parser.parse_args()

    from rep3d_networks.data.loading import load_datalist

    torch.set_num_threads(args.threads)
    bundle = args.bundle.resolve()
    config = load_parser(bundle, dict(args.overrides))
    datalist = args.datalist or bundle / "configs" / "datalist_fold0.json"
    cases = [
        case
        for split in args.splits.split(",")
        for case in load_datalist(str(datalist), split.strip(), str(args.dataset_dir))
    ]
    network = load_network(config, args.checkpoint or bundle / "models" / "model.pt")
    names = class_names(bundle)
    print(f"{len(cases)} case(s), splits {args.splits} of {datalist}\n")
    print(markdown(confusion(config, network, cases, len(names)), names))


if __name__ == "__main__":
    main()
