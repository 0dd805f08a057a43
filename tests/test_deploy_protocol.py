"""One deploy protocol: every ``to_deploy`` returns a DeployResult, one generic walker converts any
model (every family, or a block type it has never seen), converting twice equals converting once,
the input model is never modified, and ``inspect`` reads what folds from the blocks themselves."""

import pytest
import torch
import torch.nn as nn

from conftest import randomize
from partialdeploy import families
from partialdeploy.models import build_model
from partialdeploy.models.fold import fold_conv_bn
from partialdeploy.models.pat import PATSpatial
from partialdeploy.models.protocol import DeployResult, Fold, convert, fold_table
from partialdeploy.spec import ArchSpec

TINY = dict(embed_dim=16, depths=(1, 1, 2, 1), num_classes=10, feature_dim=64)


def _specs():
    eca = dict(family="eca_resnet", embed_dim=16, depths=(1, 1, 1, 1), act="RELU", num_classes=10, n_div=1,
               use_channel_attn=False, num_heads=0, feature_dim=0)
    cx = families.get("convnext").variant_spec("tiny", depths=(1, 1, 2, 1), num_classes=10)
    cx = cx.replace(arch={**cx.arch, "dims": [8, 16, 32, 64]})
    return {
        "partialnet-all-blocks": ArchSpec(**TINY, use_spatial_attn=True, layer_scale=True),
        "partialnet-dpconv": ArchSpec(**TINY, auto_div=True),
        "fasternet": ArchSpec(**TINY, family="fasternet", use_channel_attn=False),
        "eca-resnet-basic": ArchSpec(**eca, arch={"block": "basic", "k_sizes": [3, 5, 5, 7]}),
        "eca-resnet-bottleneck": ArchSpec(**eca, arch={"block": "bottleneck", "k_sizes": [3, 3, 5, 5]}),
        "eca-mobilenetv2": families.get("eca_mobilenetv2").variant_spec("0.25", num_classes=10),
        "convnext-partial-sp": cx.replace(use_spatial_attn=True, n_div=2),
        "convnext-plain-headless": cx.replace(use_channel_attn=False, num_classes=0, n_div=1),
    }


def _tensors(m):
    return {k: v.clone() for k, v in m.state_dict().items()}


def _same_tensors(a, b):
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", list(_specs()))
def test_every_family_converts_through_the_walker_idempotently(name):
    spec = _specs()[name]
    model = randomize(build_model(spec), seed=2)
    before = _tensors(model)
    x = torch.randn(2, spec.in_chans, 64, 64, generator=torch.Generator().manual_seed(0))

    once = convert(model, 64)
    assert _same_tensors(before, _tensors(model)) and not model.training  # the input is untouched
    assert isinstance(once, DeployResult) and once.affine is None and once.module.spec == spec
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in once.module.modules())
    # each block said what it folded: stem/head included, every entry a Fold with both halves
    kinds = [f.kind for f in once.folds]
    assert kinds[-1] == "Head" and all(isinstance(f, Fold) and f.folds and f.stays for f in once.folds)

    twice = convert(once.module, 64)
    assert twice.folds == []  # nothing left to fold
    assert [(n, type(m)) for n, m in twice.module.named_modules()] == \
           [(n, type(m)) for n, m in once.module.named_modules()]
    assert _same_tensors(_tensors(once.module), _tensors(twice.module))
    with torch.no_grad():
        assert torch.equal(once.module(x), twice.module(x))


def test_fold_table_counts_the_blocks_the_model_has():
    spec = ArchSpec(**TINY, use_spatial_attn=True)
    rows = {r["kind"]: r["count"] for r in fold_table(convert(build_model(spec).eval(), 64).folds)}
    n = sum(spec.depths)
    assert rows == {"PatchEmbed": 1, "PAT_ch": n - spec.depths[-1], "PAT_sf": spec.depths[-1], "MLP": n,
                    "PAT_sp": n, "PatchMerging": len(spec.depths) - 1, "Head": 1}
    assert list(rows)[0] == "PatchEmbed" and list(rows)[-1] == "Head"  # data-flow order


# ---------------------------------------------------------------- a block type the walker has never seen


class ConvBNReLU6(nn.Module):
    """A new train-form block: conv -> BN -> ReLU6. It converts itself; nothing else is told about it."""

    FOLDS = Fold("ConvBNReLU6", "BN -> the conv", "ReLU6")

    def __init__(self, cin, cout):
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))

    def to_deploy(self, ctx):
        return DeployResult(nn.Sequential(fold_conv_bn(self.conv, self.bn), nn.ReLU6()), [self.FOLDS])


class MeanPoolBySize(nn.Module):
    """A block whose deploy form depends on the export size: a global mean as a sum times 1/(H·W)."""

    FOLDS = Fold("MeanPool", "1/(H·W) -> a constant", "the sum")

    def forward(self, x):
        return x.mean((2, 3))

    def to_deploy(self, ctx):
        h, w = ctx.hw(self)
        return DeployResult(_SumTimes(1.0 / (h * w)), [self.FOLDS])


class _SumTimes(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return x.sum((2, 3)) * self.k


def test_a_new_block_type_is_converted_without_touching_the_walker():
    model = nn.Sequential(ConvBNReLU6(3, 8), nn.Sequential(ConvBNReLU6(8, 16), nn.Identity()), MeanPoolBySize(),
                          nn.Linear(16, 4))
    model = randomize(model, seed=4)
    x = torch.randn(3, 3, 40, 24, generator=torch.Generator().manual_seed(1))
    res = convert(model, (40, 24))
    d = res.module
    assert not any(isinstance(m, (nn.BatchNorm2d, ConvBNReLU6, MeanPoolBySize)) for m in d.modules())
    assert isinstance(d[2], _SumTimes) and d[2].k == 1.0 / (10 * 6)  # sized for its own input: 40×24 / 4
    assert [f.kind for f in res.folds] == ["ConvBNReLU6", "ConvBNReLU6", "MeanPool"]
    with torch.no_grad():
        torch.testing.assert_close(d(x), model(x), rtol=1e-5, atol=1e-6)
    assert convert(d, (40, 24)).folds == []


def test_pat_sp_converts_on_its_own_with_the_walker_default_inputs():
    """PAT_sp's conversion composes the 1×1 conv before it when its block passes one; reached by the
    walker alone (no block around it) it composes an identity and is still exact."""
    model = randomize(nn.Sequential(nn.Conv2d(3, 8, 1), PATSpatial(8)), seed=9)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    res = convert(model)
    assert [f.kind for f in res.folds] == ["PAT_sp"]
    with torch.no_grad():
        torch.testing.assert_close(res.module(x), model(x), rtol=1e-5, atol=1e-5)


def test_protocol_violations_are_named():
    class Bare(nn.Module):
        def forward(self, x):
            return x

        def to_deploy(self, ctx):
            return nn.Identity()  # not a DeployResult

    with pytest.raises(TypeError, match="Bare.to_deploy returned Identity"):
        convert(nn.Sequential(Bare()), 8)

    class LeavesAffine(Bare):
        def to_deploy(self, ctx):
            return DeployResult(nn.Identity(), affine=(torch.ones(1), torch.zeros(1)))

    with pytest.raises(ValueError, match="leaves an affine"):
        convert(nn.Sequential(LeavesAffine()), 8)

    with pytest.raises(TypeError, match="no to_deploy"):
        from partialdeploy.models.protocol import DeployContext

        DeployContext(nn.ReLU(), 8).convert(nn.ReLU(), identity=True)


def test_inspect_reads_folds_from_the_blocks_not_from_a_table():
    """No family carries a fold table any more: what inspect prints comes from the conversion."""
    for fam in families.all_families():
        assert not hasattr(fam, "folds") and not hasattr(fam, "block_kinds") and not hasattr(fam, "to_deploy")


@pytest.mark.parametrize("name", ["partialnet-all-blocks", "partialnet-dpconv", "fasternet"])
def test_blocks_built_directly_in_deploy_form_match_the_converted_blocks(name):
    """Every PartialNet/FasterNet block can be built in deploy form from its configuration (timm
    fastvit's inference_mode): loaded with the converted weights (strictly: same modules, same
    shapes) it computes exactly what the converted block computes."""
    from partialdeploy.models.partialnet import MLPBlock
    from partialdeploy.models.protocol import DeployContext

    spec = _specs()[name]
    model = randomize(build_model(spec), seed=3).eval()
    ctx = DeployContext(model, 64)
    blocks = [m for m in model.modules() if isinstance(m, MLPBlock)]
    assert len(blocks) == sum(spec.depths)
    kinds = set()
    for block in blocks:
        converted = ctx.convert(block).module
        hw = ctx.hw(block)
        split = getattr(block.spatial_mixing, "split", None)
        built = MLPBlock.deploy_form(block.mlp[0].in_channels, spec, block.channel_type, block.split_shortcut, hw,
                                     split=split)
        assert [type(m) for m in built.modules()] == [type(m) for m in converted.modules()]
        built.load_state_dict(converted.state_dict())  # strict: the same parameters and buffers, same shapes
        x = torch.randn(2, block.mlp[0].in_channels, *hw, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert torch.equal(built.eval()(x), converted(x))
        kinds |= {type(m).__name__ for m in built.modules()}
    want = {"partialnet-all-blocks": {"ChannelGateD", "SelfAttnD", "SpatialGateD"},  # PAT_ch, PAT_sf, PAT_sp
            "partialnet-dpconv": {"PartialConvD"}, "fasternet": {"PartialConvD"}}[name]
    assert want <= kinds
