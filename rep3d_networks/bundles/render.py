"""Writes (or checks) every bundle's rendered files: configs, ``metadata.json``, the model card's class table."""

import json
import re
from pathlib import Path
from typing import Dict, List

from rep3d_networks.bundles import deepedit, recipe
from rep3d_networks.bundles.metadata import MARKER, class_table, metadata
from rep3d_networks.bundles.specs import BundleSpec, all_bundle_specs

LOGGING_CONF = """[loggers]
keys=root

[handlers]
keys=consoleHandler

[formatters]
keys=fullFormatter

[logger_root]
level=INFO
handlers=consoleHandler

[handler_consoleHandler]
class=StreamHandler
level=INFO
formatter=fullFormatter
args=(sys.stdout,)

[formatter_fullFormatter]
format=%(asctime)s - %(name)s - %(levelname)s - %(message)s
"""
TABLE = re.compile(
    re.escape(MARKER.format("class table")) + ".*?" + re.escape(MARKER.format("end of class table")), re.S
)


def as_json(config: recipe.Config) -> str:
    return json.dumps(config, indent=4) + "\n"


def configs(spec: BundleSpec) -> Dict[str, recipe.Config]:
    """``{file name: content}`` of ``configs/`` (without the datalists, which ``prepare`` writes)."""
    data = spec.data
    if spec.deepedit:
        return {
            "train.json": deepedit.train(recipe.train(data), data),
            "inference.json": deepedit.inference(recipe.inference(data), data),
        }
    return {
        "train.json": recipe.train(data),
        "evaluate.json": recipe.evaluate(),
        "inference.json": recipe.inference(data),
        "inference_ensemble.json": recipe.inference_ensemble(),
        "multi_gpu_train.json": recipe.multi_gpu_train(),
        "multi_gpu_evaluate.json": recipe.multi_gpu_evaluate(),
    }


def model_card(spec: BundleSpec, current: str) -> str:
    """``current`` (the hand-written ``docs/README.md``) with its class table rendered.

    Raises:
        ValueError: the model card has no class-table markers.
    """
    if not TABLE.search(current):
        raise ValueError(
            f"bundles/{spec.name}/docs/README.md: no class table between the lines {MARKER.format('class table')!r} "
            f"and {MARKER.format('end of class table')!r}"
        )
    return TABLE.sub(lambda _: class_table(spec), current)


def rendered_files(spec: BundleSpec, bundle: Path) -> Dict[str, str]:
    """``{path relative to the bundle: text}`` of every rendered file of ``spec`` (``bundle`` holds its model card)."""
    files = {f"configs/{name}": as_json(content) for name, content in configs(spec).items()}
    files["configs/metadata.json"] = as_json(metadata(spec))
    files["configs/logging.conf"] = LOGGING_CONF
    readme = bundle / "docs" / "README.md"
    files["docs/README.md"] = model_card(spec, readme.read_text())
    return files


def render(bundles_dir: str = "bundles", check: bool = False) -> List[str]:
    """Renders the seven bundles into ``bundles_dir``, or with ``check`` only compares.

    Returns:
        The files (relative to ``bundles_dir``) that differed from their rendering (and were rewritten unless
        ``check``).

    Raises:
        FileNotFoundError: ``bundles_dir`` lacks a bundle's model card.
    """
    root = Path(bundles_dir)
    changed = []
    for spec in all_bundle_specs().values():
        bundle = root / spec.name
        if not (bundle / "docs" / "README.md").is_file():
            raise FileNotFoundError(f"{bundle}/docs/README.md not found: is {bundles_dir} the bundles folder?")
        for name, text in rendered_files(spec, bundle).items():
            path = bundle / name
            if not path.is_file() or path.read_text() != text:
                changed.append(f"{spec.name}/{name}")
                if not check:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(text)
    return changed
