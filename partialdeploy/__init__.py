"""partialdeploy: deploy PartialNet / PATNet / FasterNet, ECA-Net and partial-ConvNeXt checkpoints to
ONNX Runtime, OpenVINO, TensorRT and CoreML with proven parity and honest latency reports.

The Python API (docs/api.md)::

    import partialdeploy as pd
    res = pd.export("model.ckpt", targets=["onnx", "openvino"], precision="int8", calib="calib/", out="dist")
    rep = pd.profile("dist")
    d = pd.diff("model.ckpt", "dist", target="openvino")
    info = pd.inspect("model.ckpt")

Importing the package is cheap: the API is loaded on first use, and torch, numpy and the runtimes
are imported by the modules that need them, when they need them.
"""

from partialdeploy.errors import ParityError, RuntimeUnavailable, UserError
from partialdeploy.version import __version__

_API = ("export", "profile", "diff", "inspect", "ExportResult", "ExportedArtifact", "ParityNumbers", "Failure",
        "ProfileReport", "Inspection")
__all__ = [*_API, "UserError", "ParityError", "RuntimeUnavailable", "__version__"]


def __getattr__(name):
    # PEP 562: ``partialdeploy.export`` etc. load partialdeploy.api on first use. No submodule may be
    # named like an API function (an imported submodule would shadow it): ``diff`` lives in blockdiff.
    if name in _API:
        from partialdeploy import api

        return getattr(api, name)
    raise AttributeError(f"module 'partialdeploy' has no attribute {name!r}")
