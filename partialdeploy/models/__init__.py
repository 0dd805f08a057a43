"""Train-form and deploy-form networks with the official state-dict layouts (torch required), one
module pair per family — ``<family>.py`` (train form, each block's ``to_deploy``) and
``<family>_deploy.py`` (its deploy-form modules): PartialNet / PATNet / FasterNet (``partialnet``),
ECA-ResNet / ECA-MobileNetV2 (``eca``), partial ConvNeXt (``convnext``); ``pat`` holds the PAT layers
PartialNet and the partial ConvNeXt share; ``protocol`` and ``fold`` the conversion itself."""


def build_model(spec):
    """The train form of ``spec``'s family (see ``partialdeploy.families``)."""
    from partialdeploy import families

    return families.get(spec.family).build(spec)
