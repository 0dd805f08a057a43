"""PyTorch: runs a module or TorchScript file (the train-form reference, per-layer hooks); no export target."""

from partialdeploy.backends import Backend

BACKEND = Backend(
    name="torch",
    label="PyTorch",
    runner="partialdeploy.runners.torch:TorchRunner",
    dists=("torch",),
    aliases=("pytorch",),
)
