"""Train form -> deploy form -> ONNX -> ONNX Runtime parity for every variant, on real images."""

import zlib

import pytest
import torch

from conftest import randomize
from partialdeploy import parity
from partialdeploy.exporting.onnx import export_onnx, naive_export
from partialdeploy.models import build_model
from partialdeploy.reparam import reparameterize, torch_logits
from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
from partialdeploy.families import variant_spec
from partialdeploy.spec import ArchSpec

# M and L are S's blocks, only wider and deeper (~110 s of the default run on 2 cores): `make test-slow`
VARIANTS = [pytest.param(fam, v, marks=[pytest.mark.slow] if v in ("m", "l") else [])
            for fam in ("partialnet", "fasternet") for v in ("t0", "t1", "t2", "s", "m", "l")]


def _chain(model, x, tmp_path, size, dynamic=False):
    ref = torch_logits(model, x)
    deploy = reparameterize(model, size)
    r1 = parity.gate(ref, torch_logits(deploy, x), "deploy", "fp32")
    info = export_onnx(deploy, tmp_path / "m.onnx", size, dynamic_batch=dynamic)
    with OnnxRuntimeRunner(tmp_path / "m.onnx") as r:
        out = r.run_batched(x, len(x) if dynamic else 1)
    r2 = parity.gate(ref, out, "onnx", "fp32")
    return deploy, info, r1, r2


@pytest.mark.parametrize("family,variant", VARIANTS)
def test_every_variant_parity_at_small_resolution(family, variant, tmp_path, real_images):
    spec = variant_spec(family, variant, num_classes=100)
    model = randomize(build_model(spec), seed=zlib.crc32(variant.encode()) % 1000)  # the same in every process
    x = real_images(64, 4)
    deploy, info, r1, r2 = _chain(model, x, tmp_path, 64)
    assert info.ops.get("BatchNormalization", 0) == 0
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deploy.modules())
    assert "ScatterND" not in info.ops
    assert r1.rel_max < 1e-4 and r2.rel_max < 1e-4 and r2.top1_agree == 1.0


def test_t0_at_224_dynamic_batch_and_far_fewer_nodes_than_naive(tmp_path, real_images):
    torch.manual_seed(0)
    model = build_model(variant_spec("partialnet", "t0")).eval()  # default init: what the benchmark exports
    x = real_images(224, 6)
    deploy, info, r1, r2 = _chain(model, x, tmp_path, 224, dynamic=True)
    naive = naive_export(model, tmp_path / "naive.onnx", 224)
    assert naive.ops.get("BatchNormalization", 0) == 11  # what a plain torch.onnx.export leaves behind
    assert info.ops.get("BatchNormalization", 0) == 0
    assert info.nodes < 0.6 * naive.nodes, (info.nodes, naive.nodes)
    assert r2.cosine_min > 0.99999


@pytest.mark.parametrize("kw", [
    dict(use_spatial_attn=True),                       # PAT_ch + PAT_sp + PAT_sf
    dict(act="RELU", n_div=2, num_heads=6, embed_dim=24),  # n_div=2: where the official fusion silently breaks
    dict(layer_scale=True, use_spatial_attn=True),
    dict(use_channel_attn=False),                      # PartialNet without attention: split shortcut on PConv
])
def test_block_combinations(kw, tmp_path, real_images):
    base = dict(embed_dim=16, depths=(1, 1, 2, 1), num_classes=10, feature_dim=64)
    spec = ArchSpec(**{**base, **kw})
    model = randomize(build_model(spec), seed=7)
    _chain(model, real_images(64, 4), tmp_path, 64)


def test_dpconv_learned_split_is_honoured(tmp_path, real_images):
    """DPConv convolves only its learned ``one_channel`` channels; the deploy form is a static partial
    conv with exactly that split, including the extremes (0 and all channels)."""
    spec = ArchSpec(embed_dim=16, depths=(1, 1, 2, 1), num_classes=10, feature_dim=64, auto_div=True)
    model = randomize(build_model(spec), seed=5)
    dps = [m for m in model.modules() if type(m).__name__ == "DPConv"]
    splits = [8, 2, 64, 0, 32]
    for m, s in zip(dps, splits):
        m.one_channel.fill_(min(s, m.dim))
    x = real_images(64, 4)
    deploy, info, r1, r2 = _chain(model, x, tmp_path, 64)
    convs = [b.mixing.conv for b in deploy.body if hasattr(b, "mixing")]
    assert [c.in_channels if c is not None else 0 for c in convs] == [min(s, m.dim) for m, s in zip(dps, splits)]
    # the split matters: a default split gives different outputs
    dps[0].one_channel.fill_(4)
    assert parity.compare(torch_logits(model, x), torch_logits(deploy, x)).max_abs > 1e-4


def test_fold_is_exact_against_bn_identity_trap(real_images):
    """A wrong fold (BN into the previously registered conv) would be invisible with identity BNs;
    with random statistics, breaking the deploy form must be caught by the gate."""
    spec = ArchSpec(embed_dim=16, depths=(1, 1, 2, 1), num_classes=10, feature_dim=64, use_spatial_attn=True)
    model = randomize(build_model(spec), seed=11)
    x = real_images(64, 4)
    deploy = reparameterize(model, 64)
    with torch.no_grad():
        deploy.body[0].fc1.bias.add_(0.05)  # simulate a wrong fold
    with pytest.raises(Exception) as e:
        parity.gate(torch_logits(model, x), torch_logits(deploy, x), "deploy", "fp32")
    assert "parity gate" in str(e.value)


def test_irpe_bias_is_a_constant_of_the_export_size():
    from partialdeploy.models.pat import irpe_bucket_ids

    ids7 = irpe_bucket_ids(7, 7)
    assert ids7.shape == (49, 49) and int(ids7.min()) == 40 and int(ids7.max()) == 40 + 8
    ids20 = irpe_bucket_ids(20, 20)  # distances beyond alpha=20 go through the log-piecewise branch
    assert int(ids20.max()) < 81 and int(ids20.max()) > 40 + 20
    assert torch.equal(ids20[:49, :49][:7, :7], irpe_bucket_ids(20, 20)[:7, :7])
