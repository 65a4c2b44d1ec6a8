"""The seven MONAI bundles of ``bundles/`` rendered from one recipe and one spec per dataset.

* :mod:`~rep3d_networks.bundles.recipe`: train, evaluate, inference, ensemble and multi-GPU configs;
* :mod:`~rep3d_networks.bundles.deepedit`: the click-guided (DeepEdit) overlay of the recipe;
* :mod:`~rep3d_networks.bundles.specs`: what each bundle is (dataset facts from :mod:`rep3d_networks.data.specs`);
* :mod:`~rep3d_networks.bundles.metadata`: ``metadata.json`` and the model card's class table;
* :func:`render`: ``python -m rep3d_networks.bundles render [--check]``.

The rendered files are committed (the model zoo and MONAI Label read them as they are); a test fails when one
differs from its rendering.
"""

from rep3d_networks.bundles.render import render, rendered_files
from rep3d_networks.bundles.specs import BundleSpec, all_bundle_specs, get_bundle_spec

__all__ = ["BundleSpec", "all_bundle_specs", "get_bundle_spec", "render", "rendered_files"]
