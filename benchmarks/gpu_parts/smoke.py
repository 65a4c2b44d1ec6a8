"""Part 5, bundle and app smoke: amos_ct ``train.json`` on phantom data (AMP on CUDA), ``inference.json`` with the
weights it wrote, the MONAI Label app answering an infer request through monailabel's client, and ``torchrun``
(one process, nccl on CUDA / gloo on the CPU) with ``multi_gpu_train.json``.

The bundle configs switch AMP on exactly when CUDA is available, so the CPU dry run trains without AMP. The app check
imports MONAI Label only when it runs: where monailabel is missing (the lent GPU machine, see
``benchmarks/gpu_wheels.txt``) that check alone fails.
Full size on CUDA (48-wide Rep3D, 96³ crops); the dry run uses the tests' tiny networks and patches.
"""

import json
import shutil
import time
from pathlib import Path

from bundle_helpers import (
    SMALLEST_NETWORK,
    TINY_INFER,
    TINY_TRAIN,
    check_label_matches_image,
    copy_bundle,
    make_dataset,
    num_classes,
    prepare_bundle,
    run_bundle,
    torchrun_bundle,
)
from conftest import shared_data_dir
from monai.handlers import from_engine

from gpu_parts.common import OK, REPO_ROOT, first_line

FULL = {
    "train": dict(max_iterations=20, val_interval=20),
    "infer": {},
    "torchrun": dict(max_iterations=4, val_interval=4),
}
DRY = {  # the tests' tiny bundle runs with their smallest network
    "train": {**TINY_TRAIN, **SMALLEST_NETWORK},
    "infer": {**TINY_INFER, **SMALLEST_NETWORK},
    "torchrun": {**TINY_TRAIN, **SMALLEST_NETWORK},
}
TORCHRUN_S = 240


def run(ctx) -> None:
    sizes = DRY if ctx.dry_run else FULL
    bundle = copy_bundle("amos_ct", ctx.work_dir / "bundles")
    data_dir = make_dataset("amos_ct", "phantom", ctx.work_dir / "data")
    datalist = prepare_bundle(bundle, data_dir)
    ctx.run_check("amos_ct train.json on phantom data", lambda: train(ctx, sizes, bundle, data_dir))
    ctx.run_check(
        "amos_ct inference.json with the trained weights", lambda: infer(ctx, sizes, bundle, data_dir, datalist)
    )
    ctx.run_check(f"MONAI Label app infer on {ctx.device.type} through MONAILabelClient", lambda: app_infer(ctx))
    ctx.run_check("torchrun, 1 process, multi_gpu_train.json", lambda: torchrun(ctx, sizes, bundle, data_dir))


def train(ctx, sizes, bundle, data_dir):
    start = time.perf_counter()
    workflow = run_bundle(bundle, ["train.json"], dataset_dir=str(data_dir), **sizes["train"])
    trainer = workflow.parser.get_parsed_content("train#trainer")
    loss = from_engine(["loss"], first=True)(trainer.state.output)
    result = (
        f"{trainer.state.iteration} iterations in {time.perf_counter() - start:.1f} s "
        "(whole run, validation included), "
        f"amp={trainer.amp}, last loss {float(loss):.4f}"
    )
    if not (bundle / "models" / "model.pt").is_file():
        return result, "failed: no models/model.pt written"
    iterations = workflow.parser.get_parsed_content("max_iterations")
    if trainer.state.iteration != iterations or trainer.amp != (ctx.device.type == "cuda"):
        return result, "failed: wrong iteration count or AMP setting"
    return result, OK if float(loss) == float(loss) else "failed: loss is NaN"


def infer(ctx, sizes, bundle, data_dir, datalist):
    """The datalist's test images, one label each, on the image's grid."""
    images = [str(data_dir / case["image"]) for case in json.loads(datalist.read_text())["test"]]
    output_dir = ctx.work_dir / "predictions"
    start = time.perf_counter()
    overrides = dict(sizes["infer"], dataset_dir=str(data_dir), datalist=images, output_dir=str(output_dir))
    run_bundle(bundle, ["inference.json"], **overrides)
    seconds = time.perf_counter() - start
    written = {path.name: path for path in output_dir.rglob("*_seg.nii.gz")}
    if not images or len(written) != len(images):
        return f"{len(written)} labels for {len(images)} test images", "failed: one label per test image expected"
    for image in images:
        check_label_matches_image(
            written[Path(image).name.replace(".nii.gz", "_seg.nii.gz")], Path(image), num_classes(bundle)
        )
    return f"{len(images)} test images, each label on its image's grid, in {seconds:.1f} s", OK


def app_infer(ctx):
    """The app on one bundle with random weights (full size on CUDA, tiny on the CPU) and the shared sample CT."""
    try:
        from monailabel.client import MONAILabelClient
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            f"{error}: MONAI Label is not installed here (see benchmarks/gpu_wheels.txt)"
        ) from error
    from app_helpers import CT, SERVER_START_S, Server, check_label, copy_app, make_tiny_bundle, save_random_weights

    root = ctx.work_dir / "app_run"
    bundles = root / "bundles"
    if ctx.dry_run:
        bundle = make_tiny_bundle("amos_ct", bundles, with_weights=True)
    else:
        bundle = copy_bundle("amos_ct", bundles)
        save_random_weights(bundle, seed=0)
    studies = root / "studies"
    studies.mkdir(parents=True)
    shutil.copy(shared_data_dir() / CT, studies / "ct_sm.nii.gz")
    conf = {"models": "amos_ct", "bundles_dir": str(bundles), "device": ctx.device.type}
    start = time.perf_counter()
    server = Server(copy_app(REPO_ROOT, root / "app"), studies, conf, root)
    try:
        server.wait_until_up(min(SERVER_START_S, max(10.0, ctx.deadline - time.time())))
        started = time.perf_counter() - start
        client = MONAILabelClient(server.url, tmpdir=str(root / "client"))
        device = client.info()["models"]["amos_ct"]["config"]["device"][0]
        seconds = []
        for _ in range(2):
            begin = time.perf_counter()
            label_file, _ = client.infer("amos_ct", "ct_sm", {})
            seconds.append(time.perf_counter() - begin)
            check_label(label_file, studies / "ct_sm.nii.gz", num_classes(bundle))
    except Exception as error:
        print(server.log_tail(), flush=True)
        lines = [line for line in server.log_text().splitlines() if line.strip()]
        raise RuntimeError(f"{first_line(str(error))} (server log ends: {lines[-1] if lines else 'empty'})") from error
    finally:
        server.stop()
    result = (
        f"server up in {started:.1f} s; model device {device}; "
        f"infer {seconds[0]:.1f} s (first: loads, folds), {seconds[1]:.1f} s (warm)"
    )
    return result, OK if device == ctx.device.type else f"failed: model device {device}"


def torchrun(ctx, sizes, bundle, data_dir):
    overrides = dict(sizes["torchrun"], dataset_dir=str(data_dir), ckpt_dir=str(ctx.work_dir / "torchrun_models"))
    start = time.perf_counter()
    result = torchrun_bundle(bundle, 1, overrides, timeout_s=min(TORCHRUN_S, max(10.0, ctx.deadline - time.time())))
    seconds = time.perf_counter() - start
    completed = result.stdout.count("SupervisedTrainer - INFO - Engine run complete")
    backend = "nccl" if ctx.device.type == "cuda" else "gloo"
    summary = f"backend {backend}; exit {result.returncode}; trainer completed {completed}x in {seconds:.1f} s"
    if result.returncode != 0 or completed != 1:
        print(result.stdout[-3000:], result.stderr[-5000:], sep="\n", flush=True)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return summary, f"failed: {first_line(lines[-1]) if lines else 'no output on stderr'}"
    return summary, OK
