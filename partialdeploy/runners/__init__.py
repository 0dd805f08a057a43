"""Runners: one uniform interface over every runtime (Polygraphy-style).

``open_runner(path_or_artifact, target=None, **options)`` picks the runner for a file:
``.onnx`` -> ONNX Runtime, ``.xml`` -> OpenVINO, ``.engine``/``.plan`` -> TensorRT,
``.mlpackage`` -> CoreML. Runtimes are imported lazily inside each runner.
"""

from partialdeploy.runners.base import Runner, TensorMeta, open_runner, runner_for

__all__ = ["Runner", "TensorMeta", "open_runner", "runner_for"]
