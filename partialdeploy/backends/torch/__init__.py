"""PyTorch: runs a module or TorchScript file (the train-form reference, per-layer hooks); no export target."""

from partialdeploy.backends import Backend

BACKEND = Backend(
    name="torch",
    label="PyTorch",
    runner="partialdeploy.backends.torch.runner:TorchRunner",
    dists=("torch",),
    aliases=("pytorch",),
)
