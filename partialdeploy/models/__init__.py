"""Train-form and deploy-form networks with the official state-dict layouts (torch required):
PartialNet / PATNet / FasterNet, ECA-ResNet / ECA-MobileNetV2, partial ConvNeXt."""

from partialdeploy.models.partialnet import DeployNet, PartialNet


def build_model(spec):
    """The train form of ``spec``'s family (see ``partialdeploy.families``)."""
    from partialdeploy import families

    return families.get(spec.family).build(spec)


__all__ = ["DeployNet", "PartialNet", "build_model"]
