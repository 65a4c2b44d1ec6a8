"""Small-scale reproductions of the Rep3D paper's mechanism (issue #8).

``python -m rep3d_networks.analysis <command> --output_dir DIR ...`` with the commands

* ``lr-field``: per-tap update magnitude ``|ΔW_eff|`` of one depthwise ``21³`` layer under each
  re-parameterization (vanilla, CSLA, fixed prior, LRBM) and optimizer (SGD, AdamW); tests eq. 11 / eq. 25.
* ``erf``: effective receptive field of a Rep3D model (fresh or from a checkpoint) and its LRBM masks (Fig. 3).
* ``convergence``: validation Dice against iterations and seconds of Rep3D variants, UX-Net, SegResNet and SwinUNETR,
  run to a plateau (Table 7).

Each command writes its figures, a JSON and a Markdown summary under ``--output_dir`` and prints the paths.
See ``docs/reproduction.md`` for what the results show.
"""
