"""partialdeploy: deploy PartialNet / PATNet / FasterNet checkpoints to ONNX Runtime, OpenVINO,
TensorRT and CoreML with proven parity and honest latency reports.

Importing the package is cheap: torch and the runtimes are imported lazily by the modules that
need them.
"""

__version__ = "0.1.0"
