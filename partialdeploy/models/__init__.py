"""PartialNet / PATNet / FasterNet with the official state-dict layout (torch required)."""

from partialdeploy.models.partialnet import DeployNet, PartialNet, build_model

__all__ = ["DeployNet", "PartialNet", "build_model"]
