"""What a model does block by block, in the names of the user's checkpoint.

* :mod:`~partialdeploy.analysis.blocknames` — the name mechanics: official block names on exported
  ONNX nodes and block-output tensors (no torch, no family knowledge);
* :mod:`~partialdeploy.analysis.taps` — boundary taps, runtime-blind: any runner that declares
  ``BOUNDARY_TAPS``, every block output exposed (``diff`` and the INT8 fallback use them);
* :mod:`~partialdeploy.analysis.sides` and :mod:`~partialdeploy.analysis.blockdiff` — ``diff``: two
  models opened, compared block by block, the first divergent block named;
* :mod:`~partialdeploy.analysis.inspect` — ``inspect``: the folds each block declares, parameters
  and FLOPs before and after (imports torch).
"""
