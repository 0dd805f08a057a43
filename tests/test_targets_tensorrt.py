"""TensorRT target without a GPU: the precision-carrying ONNX (strongly typed fp16, Q/DQ INT8) run and
gated in ONNX Runtime here, the trtexec lines and build_engine.sh for TensorRT 10 and 11 (a fake
trtexec on PATH), build-engine's TensorRT 10 / 11 call paths against fakes of the two API surfaces,
the ONNX operator check for both parsers, profiles' TensorRT generation, error paths and the engine
compatibility check."""

import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest
from targets_common import export, make_ctx

from partialdeploy.errors import RuntimeUnavailable, UserError
from partialdeploy.backends import get_target
from partialdeploy.backends.tensorrt.build import build_engine, trtexec_args
from partialdeploy.backends.tensorrt.cuda import NOT_HERE, check_engine_compat
from partialdeploy.backends.tensorrt.onnx_support import TRT10_ONNX_OPS, TRT11_ONNX_OPS, onnx_ops_report

pytestmark = pytest.mark.skipif(get_target("tensorrt").can_build_here(), reason="a GPU is present: builds run")


def _ort(path, x):
    import onnxruntime as ort

    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([s.run(None, {"input": x[i:i + 8]})[0] for i in range(0, len(x), 8)])


def _cos_min(a, b):
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(np.min((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def _export(tmp_path, prec, **kw):
    d = tmp_path / prec
    d.mkdir(exist_ok=True)
    ctx = make_ctx(prec, **kw)
    return export("tensorrt", ctx, d), d, ctx


@pytest.fixture(scope="module")
def fp16_bundle(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("trt"), "fp16", batch_range={"min": 1, "opt": 4, "max": 16},
                   workspace_mb=512)


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("trt"), "int8", tensorrt=11, profile="tensorrt-server-int8")


def test_fp16_bundle_is_strongly_typed_and_proven(fp16_bundle):
    import onnx
    from onnx import TensorProto

    art, d, ctx = fp16_bundle
    assert art.verified == "bundle (build the engine on the device)"
    assert sorted(art.files) == sorted(p.name for p in d.iterdir())
    assert {"model.onnx", "build_engine.sh", "bundle.json", "README.txt", "parity_inputs.npy",
            "reference_logits.npy", "infer.py"} | {f"sample_{i}.png" for i in range(8)} == set(art.files)
    m = onnx.load(str(d / "model.onnx"))
    # precision in the ONNX: fp32 I/O, fp16 weights, Casts; the channel-gate sums of squares stay fp32
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    dtypes = [t.data_type for t in m.graph.initializer]
    assert dtypes.count(TensorProto.FLOAT16) > 0.8 * len([t for t in dtypes if t in (1, 10)])
    assert any(n.op_type == "Cast" for n in m.graph.node)
    info = art.extra["onnx_precision"]
    assert info["nodes_fp16"] > info["nodes_fp32"] > 0
    assert any(k.endswith("/ReduceSum") for k in info["kept_fp32"]) and any(k.endswith("/Sqrt")
                                                                            for k in info["kept_fp32"])
    # proven in ONNX Runtime on CPU: the target's gate, and an independent run of the bundled file
    assert [p.passed for p in art.parity] == [True, True] and "ONNX Runtime" in art.parity[0].stage
    out = _ort(d / "model.onnx", ctx.eval_images)
    assert _cos_min(out, ctx.eval_reference) > 0.9995
    assert (out.argmax(1) == ctx.eval_labels).mean() >= (ctx.eval_reference.argmax(1) == ctx.eval_labels).mean()
    b = json.loads((d / "bundle.json").read_text())
    l10 = ("trtexec --onnx=model.onnx --saveEngine=model.engine --stronglyTyped --minShapes=input:1x3x64x64 "
           "--optShapes=input:4x3x64x64 --maxShapes=input:16x3x64x64 --memPoolSize=workspace:512M "
           "--timingCacheFile=timing.cache")
    keep = info["kept_fp32"]  # TensorRT 8: --fp16 builder flag, the fp32 nodes pinned by precision constraints
    l8 = l10.replace("--stronglyTyped", "--fp16 --precisionConstraints=obey --layerPrecisions="
                     + ",".join(f"{n}:fp32" for n in keep) + " --layerOutputTypes="
                     + ",".join(f"{n}:fp32" for n in keep)).replace("workspace:512M", "workspace:512")
    assert b["trtexec_line"] == {"8": l8, "10": l10, "11": l10.replace(" --stronglyTyped", "")}
    assert b["tensorrt"]["expected"] is None and b["tensorrt"]["builds_with"] == [8, 10, 11]
    assert os.access(d / "build_engine.sh", os.X_OK)
    assert b["onnx_check"]["unsupported"] == [] and set(b["onnx_check"]["by_generation"]) == {"8", "10", "11"}
    assert b["onnx_check"]["by_generation"]["8"]["needs_8_6"] == ["LayerNormalization"]  # the demo's head
    assert any("TensorRT 8.5 (JetPack 5) cannot parse LayerNormalization" in n for n in art.notes)
    np.testing.assert_array_equal(np.load(d / "parity_inputs.npy"), ctx.parity_inputs)
    assert "partialdeploy build-engine" in (d / "README.txt").read_text()


def test_int8_bundle_is_explicit_qdq_and_proven(int8_bundle):
    import onnx
    from onnx import TensorProto, numpy_helper

    art, d, ctx = int8_bundle
    assert "calib.npy" not in art.files and {"eval_images.npy", "eval_labels.npy"} <= set(art.files)
    m = onnx.load(str(d / "model.onnx"))
    inits = {t.name: t for t in m.graph.initializer}
    qs = [n for n in m.graph.node if n.op_type == "QuantizeLinear"]
    dqs = [n for n in m.graph.node if n.op_type == "DequantizeLinear"]
    assert qs and dqs
    producer = {o: n.op_type for n in m.graph.node for o in n.output}
    for q in qs:  # symmetric int8 activations: int8 zero point 0 (what TensorRT requires)
        assert producer.get(q.input[0]) not in ("Conv", "MatMul", "Gemm"), q.name  # outputs stay float
        zp = inits[q.input[2]]
        assert zp.data_type == TensorProto.INT8 and not numpy_helper.to_array(zp).any()
    consumers: dict = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    for dq in dqs:  # Q/DQ only where TensorRT fuses them: inputs of Conv / MatMul / Gemm, no Conv outputs
        assert {"Conv", "MatMul", "Gemm"} & set(consumers[dq.output[0]]), dq.name
    conv_w = [dq for dq in dqs if dq.input[0] in inits and consumers[dq.output[0]] == ["Conv"]]
    assert conv_w and all(numpy_helper.to_array(inits[dq.input[1]]).ndim == 1 and
                          numpy_helper.to_array(inits[dq.input[1]]).size > 1 for dq in conv_w)  # per-channel
    info = art.extra["onnx_precision"]
    assert info["quantization"] == "explicit (Q/DQ)" and info["float_nodes"] == 0
    fb = art.extra["int8_fallback"]  # plain PTQ holds the gate on the demo: no block left in float
    assert fb["enabled"] and fb["float_blocks"] == [] and fb["before"]["passed"] and len(fb["attempts"]) == 1
    held = [p for p in art.parity if p.acc is not None]
    assert len(held) == 1 and held[0].passed and 100 * (held[0].acc_ref - held[0].acc) <= 0.5
    out = _ort(d / "model.onnx", ctx.eval_images)  # the bundled file itself, on the labelled test split
    assert (out.argmax(1) == ctx.eval_labels).mean() >= (ctx.eval_reference.argmax(1) == ctx.eval_labels).mean() - 0.005
    b = json.loads((d / "bundle.json").read_text())
    # made for TensorRT 11 (the profile); the Q/DQ ONNX builds with 10 too, on request (--any-tensorrt)
    assert b["tensorrt"] == {"expected": 11, "profile": "tensorrt-server-int8", "builds_with": [8, 10, 11],
                             "typing": "strong", "int8_quantization": "explicit"}
    # TensorRT 8: the same Q/DQ ONNX with the INT8 builder flag (explicit quantization), no fp16 flag
    assert b["trtexec"]["8"][3] == "--int8" and "--fp16" not in b["trtexec"]["8"]
    assert not any(a in ("--int8", "--fp16", "--stronglyTyped") or "--calib" in a for a in b["trtexec"]["11"])
    assert b["trtexec"]["10"] == b["trtexec"]["11"][:3] + ["--stronglyTyped"] + b["trtexec"]["11"][3:]
    assert b["calibration"] is None


def _qkv_matmuls(m, block="stages.6.blocks.0/mixing/"):
    """The attention block's q/k/v projection MatMuls (the attention core's two MatMuls and proj aside)."""
    return [n for n in m.graph.node if n.op_type == "MatMul" and n.name.startswith(block)
            and ("fused_matmul" in n.name or n.name.endswith(("/q/MatMul", "/k/MatMul", "/v/MatMul")))]


def test_int8_bundle_quantizes_the_fused_qkv_form(int8_bundle):
    """The bundle's Q/DQ ONNX starts from the ONNX the other INT8 targets quantize
    (``exporting.onnx_forms.int8_source``): one Q/DQ MatMul + Split per q/k/v group instead of three,
    exact against the verified ONNX before quantization, gated, the form recorded in the manifest
    and in bundle.json, and the fused intermediate not left in the bundle."""
    import onnx

    art, d, ctx = int8_bundle
    src = onnx.load(str(ctx.onnx_path))
    assert len(_qkv_matmuls(src)) == 3  # the deploy form keeps q, k, v separate (OpenVINO's float attention)
    m = onnx.load(str(d / "model.onnx"))
    qkv = _qkv_matmuls(m)
    assert [n.name for n in qkv] == ["stages.6.blocks.0/mixing/fused_matmul_1/MatMul"]
    producer = {o: n.op_type for n in m.graph.node for o in n.output}
    assert [producer.get(i) for i in qkv[0].input] == ["DequantizeLinear", "DequantizeLinear"]  # int8 x int8
    assert any(n.op_type == "Split" and n.name.startswith("stages.6.blocks.0/mixing/fused_matmul_1/")
               for n in m.graph.node)
    assert art.extra["deploy_form"] == {"attention_projections": "fused qkv"}
    b = json.loads((d / "bundle.json").read_text())
    assert b["onnx_precision"]["deploy_form"] == {"attention_projections": "fused qkv"}
    assert "1 group(s) of q/k/v projections fused" in b["onnx_precision"]["summary"]
    assert all(p.passed for p in art.parity) and art.parity
    assert sorted(art.files) == sorted(p.name for p in d.iterdir())  # no fused / attempt file left


def test_int8_exclude_of_the_attention_block_keeps_its_fused_nodes_float(tmp_path):
    """``--int8-exclude stages.6.blocks.0`` (the attention block): its fused q/k/v MatMul, like every
    other node of the block, gets no Q/DQ; the blocks around it stay quantized."""
    import onnx

    art, d, _ = _export(tmp_path, "int8", with_eval=False, int8_exclude="stages.6.blocks.0")
    fb = art.extra["int8_fallback"]
    assert fb["asked"] == ["stages.6.blocks.0"] and fb["float_blocks"] == ["stages.6.blocks.0"]
    assert art.extra["deploy_form"] == {"attention_projections": "fused qkv"}
    m = onnx.load(str(d / "model.onnx"))
    producer = {o: n.op_type for n in m.graph.node for o in n.output}
    assert [n.name for n in _qkv_matmuls(m)] == ["stages.6.blocks.0/mixing/fused_matmul_1/MatMul"]
    for n in m.graph.node:
        if n.op_type in ("Conv", "MatMul", "Gemm"):
            fed = any(producer.get(i) == "DequantizeLinear" for i in n.input)
            assert fed != n.name.startswith("stages.6.blocks.0/"), n.name
    b = json.loads((d / "bundle.json").read_text())
    assert b["onnx_precision"]["excluded_blocks"] == ["stages.6.blocks.0"] and b["onnx_precision"]["float_nodes"] >= 4
    assert all(p.passed for p in art.parity) and sorted(art.files) == sorted(p.name for p in d.iterdir())


def test_int8_exclude_leaves_blocks_without_qdq(tmp_path):
    import onnx

    from partialdeploy.backends.tensorrt.precision import to_qdq_int8

    ctx = make_ctx("int8")
    info = to_qdq_int8(ctx.onnx_path, tmp_path / "q.onnx", ctx.calib[:16], "input",
                       exclude=["stages.0.blocks.0", "head"])
    m = onnx.load(str(tmp_path / "q.onnx"))
    dq_out = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear"}
    for n in m.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul"):
            kept = n.name.startswith(("stages.0.blocks.0/", "head/"))
            assert any(i in dq_out for i in n.input) != kept, n.name
    assert info["float_nodes"] >= 3 and info["excluded_blocks"] == ["stages.0.blocks.0", "head"]
    with pytest.raises(UserError, match="no nodes of stages.9.blocks.9"):
        to_qdq_int8(ctx.onnx_path, tmp_path / "q2.onnx", ctx.calib[:16], "input", exclude=["stages.9.blocks.9"])


def test_implicit_int8_only_for_tensorrt_10(tmp_path):
    with pytest.raises(UserError, match="only in TensorRT 8 and 10"):
        _export(tmp_path, "int8", int8_quantization="implicit")
    with pytest.raises(UserError, match="only in TensorRT 8 and 10"):
        _export(tmp_path, "int8", int8_quantization="implicit", tensorrt=11)
    art, d, _ = _export(tmp_path, "int8", dynamic=False, batch=1, int8_quantization="implicit", tensorrt=10)
    calib = np.load(d / "calib.npy")
    assert calib.shape == (100, 3, 64, 64) and calib.dtype == np.float32
    b = json.loads((d / "bundle.json").read_text())
    assert list(b["trtexec"]) == ["10"] and b["tensorrt"]["typing"].startswith("weak")
    assert b["trtexec"]["10"][3:6] == ["--int8", "--fp16", "--calib=calib.cache"]
    assert not any(a.startswith("--minShapes") for a in b["trtexec"]["10"])  # static batch: no profile
    r = subprocess.run(["sh", str(d / "build_engine.sh")], capture_output=True, text=True,
                       env={**os.environ, "TRT_MAJOR": "10"})
    assert r.returncode == 2 and "partialdeploy build-engine" in r.stderr  # never calibrates with dummy scales


@pytest.mark.parametrize("gen", [8, 10, 11])
@pytest.mark.parametrize("prec", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("dynamic", [True, False])
def test_trtexec_line(gen, prec, dynamic):
    a = trtexec_args(prec, "input", [3, 224, 224], dynamic, {"min": 1, "opt": 8, "max": 32}, 2048, gen,
                     fp32_layers=["b0/ReduceSum", "b0/Sqrt"])
    assert a[:3] == ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine"]
    assert ("--stronglyTyped" in a) == (gen == 10)
    # the precision is in the ONNX: 10 and 11 take no precision flag; 8 (no strong typing) the builder flag
    flags = {"fp32": [], "fp16": ["--fp16", "--precisionConstraints=obey", "--layerPrecisions=b0/ReduceSum:fp32,"
                                  "b0/Sqrt:fp32", "--layerOutputTypes=b0/ReduceSum:fp32,b0/Sqrt:fp32"],
             "int8": ["--int8"]}[prec] if gen == 8 else []
    assert a[3:3 + len(flags)] == flags and not {"--fp16", "--int8", "--best"} & set(a[3 + len(flags):])
    assert ("--noTF32" in a) == (prec == "fp32" and gen in (8, 10))  # fp32 is not TF32 on Ampere/Orin
    assert not any(x.startswith("--calib") for x in a)
    shapes = ["--minShapes=input:1x3x224x224", "--optShapes=input:8x3x224x224", "--maxShapes=input:32x3x224x224"]
    assert all((s in a) == dynamic for s in shapes)
    # trtexec 8.5 reads MiB without a unit suffix
    assert a[-2:] == [f"--memPoolSize=workspace:2048{'' if gen == 8 else 'M'}", "--timingCacheFile=timing.cache"]


def test_implicit_int8_line_on_tensorrt_8():
    a = trtexec_args("int8", "input", [3, 64, 64], False, {"min": 1, "opt": 1, "max": 1}, 1024, 8, "implicit")
    assert a[3:6] == ["--int8", "--fp16", "--calib=calib.cache"] and a[-2] == "--memPoolSize=workspace:1024"


def test_trtexec_rejects_bad_requests():
    with pytest.raises(UserError, match="fp32, fp16 or int8"):
        trtexec_args("bf16", "input", [3, 64, 64], False, {"min": 1, "opt": 1, "max": 1})
    with pytest.raises(UserError, match="only in TensorRT 8 and 10"):
        trtexec_args("int8", "input", [3, 64, 64], False, {"min": 1, "opt": 1, "max": 1}, 1024, 11, "implicit")
    with pytest.raises(UserError, match="not supported"):
        trtexec_args("fp16", "input", [3, 64, 64], False, {"min": 1, "opt": 1, "max": 1}, 1024, 9)


def _fake_trtexec(tmp_path, version, banner=None, on_path=True):
    """A trtexec that prints TensorRT's banner (``[TensorRT v<version>]`` unless ``banner`` is given) and
    records its arguments; on PATH (default) or only in its own directory (returned as env["FAKE_BIN"])."""
    bindir = tmp_path / f"bin{version}"
    bindir.mkdir()
    f = bindir / "trtexec"
    banner = banner or f"&&&& RUNNING TensorRT.trtexec [TensorRT v{version}] # trtexec $*"
    f.write_text(f'#!/bin/sh\necho "{banner}"\n'
                 f'[ "$1" = "--help" ] && exit 0\necho "$@" > "{tmp_path}/args{version}"\n')
    f.chmod(0o755)
    # no python3 with tensorrt on this PATH: the banner decides
    env = {**os.environ, "PATH": f"{bindir}:/usr/bin:/bin" if on_path else "/usr/bin:/bin", "FAKE_BIN": str(f)}
    for k in ("TRT_MAJOR", "TRTEXEC", "ANY_TENSORRT"):
        env.pop(k, None)
    return env


@pytest.mark.parametrize("version,gen,banner", [
    ("8502", 8, None), ("8602", 8, None), ("100300", 10, None), ("110400", 11, None),
    ("861", 8, "[11/26/2026-12:00:00] [I] TensorRT version: 8.6.1")])  # older trtexec: a version line, no tag
def test_build_engine_sh_picks_flags_for_installed_tensorrt(fp16_bundle, tmp_path, version, gen, banner):
    _, d, _ = fp16_bundle
    env = _fake_trtexec(tmp_path, version, banner)
    r = subprocess.run(["sh", str(d / "build_engine.sh")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    args = (tmp_path / f"args{version}").read_text().split()
    b = json.loads((d / "bundle.json").read_text())
    assert args == b["trtexec"][str(gen)][1:] and ("--stronglyTyped" in args) == (gen == 10)
    assert ("--fp16" in args) == (gen == 8)  # TensorRT 8 has no strong typing: the builder flag


def test_build_engine_sh_finds_trtexec(fp16_bundle, tmp_path):
    """trtexec: TRTEXEC= first, then PATH, then JetPack's /usr/src/tensorrt/bin; none: one line, exit 2."""
    _, d, _ = fp16_bundle
    b = json.loads((d / "bundle.json").read_text())
    env = _fake_trtexec(tmp_path, "8602", on_path=False)
    r = subprocess.run(["sh", str(d / "build_engine.sh")], capture_output=True, text=True,
                       env={**env, "TRTEXEC": env["FAKE_BIN"]})
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "args8602").read_text().split() == b["trtexec"]["8"][1:]
    # the Python module tells the version (TRT_MAJOR stands in for it) but trtexec is nowhere: not "exit 127"
    r = subprocess.run(["sh", str(d / "build_engine.sh")], capture_output=True, text=True,
                       env={**env, "TRT_MAJOR": "8"})
    assert r.returncode == 2 and "trtexec not found" in r.stderr and "TRTEXEC=/path/to/trtexec" in r.stderr
    assert "partialdeploy build-engine ." in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_build_engine_sh_reads_the_python_module_version(fp16_bundle, tmp_path):
    """With Python's tensorrt importable (JetPack's python3-libnvinfer) its version decides, before any
    banner: a fake module says 8.6.2, the trtexec prints no version at all."""
    import shutil

    if shutil.which("python3", path="/usr/bin:/bin") is None:
        pytest.skip("needs a python3 in /usr/bin or /bin for build_engine.sh's version probe")
    _, d, _ = fp16_bundle
    (tmp_path / "py" / "tensorrt").mkdir(parents=True)
    (tmp_path / "py" / "tensorrt" / "__init__.py").write_text('__version__ = "8.6.2.3"\n')
    env = {**_fake_trtexec(tmp_path, "0", banner="usage: trtexec [options]"), "PYTHONPATH": str(tmp_path / "py")}
    r = subprocess.run(["sh", str(d / "build_engine.sh")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "args0").read_text().split() == json.loads((d / "bundle.json").read_text())["trtexec"]["8"][1:]


def test_build_engine_sh_finds_jetpack_trtexec(fp16_bundle, tmp_path):
    """JetPack keeps trtexec in /usr/src/tensorrt/bin, off PATH: placed there in a private mount namespace."""
    import shutil

    _, d, _ = fp16_bundle
    env = _fake_trtexec(tmp_path, "8502", on_path=False)
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode:
        pytest.skip("needs a private mount namespace (unshare -m, root) to place a fake trtexec in "
                    "/usr/src/tensorrt/bin")
    script = (f"mount -t tmpfs none /usr/src && mkdir -p /usr/src/tensorrt/bin && "
              f"cp {env['FAKE_BIN']} /usr/src/tensorrt/bin/trtexec && sh {d / 'build_engine.sh'}")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    b = json.loads((d / "bundle.json").read_text())
    assert (tmp_path / "args8502").read_text().split() == b["trtexec"]["8"][1:]


def test_build_engine_sh_generation_mismatch(int8_bundle, tmp_path):
    _, d, _ = int8_bundle  # exported for TensorRT 11 (data-centre profile)
    r = subprocess.run(["sh", str(d / "build_engine.sh")], capture_output=True, text=True,
                       env=_fake_trtexec(tmp_path, "100300"))
    assert r.returncode == 2 and "exported for TensorRT 11" in r.stderr and "device has TensorRT 10" in r.stderr
    assert not (tmp_path / "args100300").exists()
    (tmp_path / "any").mkdir()
    r = subprocess.run(["sh", str(d / "build_engine.sh")], capture_output=True, text=True,
                       env={**_fake_trtexec(tmp_path / "any", "100300"), "ANY_TENSORRT": "1"})
    assert r.returncode == 0, r.stderr  # the override builds with TensorRT 10's line (--stronglyTyped)
    assert (tmp_path / "any" / "args100300").read_text().split() == json.loads(
        (d / "bundle.json").read_text())["trtexec"]["10"][1:]
    # a Jetson on JetPack 6.0 (TensorRT 8.6): the hint names the profiles that build for it, and the
    # bundle builds with 8 (the same Q/DQ ONNX, --int8) on request
    (tmp_path / "jp6").mkdir()
    env8 = _fake_trtexec(tmp_path / "jp6", "8602")
    r = subprocess.run(["sh", str(d / "build_engine.sh")], capture_output=True, text=True, env=env8)
    assert r.returncode == 2 and "device has TensorRT 8" in r.stderr
    assert "--profile tensorrt-jetson-orin-trt8-fp16" in r.stderr and "ANY_TENSORRT=1" in r.stderr
    r = subprocess.run(["sh", str(d / "build_engine.sh")], capture_output=True, text=True,
                       env={**env8, "ANY_TENSORRT": "1"})
    assert r.returncode == 0 and (tmp_path / "jp6" / "args8602").read_text().split()[2] == "--int8"
    env = {**_fake_trtexec(tmp_path, "090000"), "TRT_MAJOR": ""}
    r = subprocess.run(["sh", str(d / "build_engine.sh")], capture_output=True, text=True,
                       env={**env, "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "found no TensorRT" in r.stderr and "comes with JetPack" in r.stderr
    r = subprocess.run(["sh", str(d / "build_engine.sh")], capture_output=True, text=True,
                       env={**_fake_trtexec(tmp_path / "any", "090000"), "ANY_TENSORRT": "1"})  # TensorRT 9: none
    assert r.returncode == 2 and "builds with TensorRT 8/10/11; this device has TensorRT 9" in r.stderr


# --- build-engine's two call paths against fakes of the TensorRT 10 and 11 Python API surfaces ---

def _fake_tensorrt(major: int):
    """The subset of the tensorrt module build_engine uses. TensorRT 11's fake has no BuilderFlag.FP16 /
    INT8, no int8_calibrator, no calibration profile, no STRONGLY_TYPED use allowed (it is ignored there):
    touching them raises AttributeError, as the removed APIs do. TensorRT 8's has no STRONGLY_TYPED (strong
    typing came with 9/10) but EXPLICIT_BATCH, the builder flags and layer precision constraints."""
    calls = {"network_flags": None, "flags": [], "calibrator": None, "profiles": 0}
    trt = types.ModuleType("tensorrt")
    trt.__version__ = {8: "8.6.2.3", 10: "10.3.0.26", 11: "11.4.0.7"}[major]
    trt.float32 = "float32"
    trt.calls = calls

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            pass

    class Cache:
        def serialize(self):
            return b"timing"

    slots = ("profiling_verbosity", "_cache") + (("int8_calibrator",) if major in (8, 10) else ())

    class Config:
        __slots__ = slots

        def set_memory_pool_limit(self, pool, size):
            assert pool == "workspace" and size > 0

        def create_timing_cache(self, data):
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            self._cache = cache

        def get_timing_cache(self):
            return self._cache

        def add_optimization_profile(self, p):
            calls["profiles"] += 1

        def clear_flag(self, flag):
            calls.setdefault("cleared", []).append(flag)

    if major in (8, 10):
        def set_flag(self, flag):
            calls["flags"].append(flag)

        def set_calibration_profile(self, p):
            calls["calibration_profile"] = p

        Config.set_flag = set_flag
        Config.set_calibration_profile = set_calibration_profile

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            calls["shapes"] = (name, mn, opt, mx)

    class Layer:
        def __init__(self, name, num_outputs):
            self.name, self.num_outputs, self.precision, self.output_types = name, num_outputs, None, {}

        def set_output_type(self, i, dtype):
            self.output_types[i] = dtype

    class Network:
        layers: list = []

        @property
        def num_layers(self):
            return len(self.layers)

        def get_layer(self, i):
            return self.layers[i]

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            calls["network_flags"] = flags
            calls["network"] = Network()
            return calls["network"]

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if major in (8, 10):
                calls["calibrator"] = getattr(config, "int8_calibrator", None)
            return b"engine-bytes"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):  # one layer per ONNX node, named after it (what TensorRT's parser does)
            import onnx

            calls["parsed"] = path
            self.network.layers = [Layer(n.name, len(n.output)) for n in onnx.load(path).graph.node]
            return True

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    trt.ProfilingVerbosity = types.SimpleNamespace(DETAILED="detailed")
    if major == 8:  # no strong typing yet; explicit batch must be asked for
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
        trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", OBEY_PRECISION_CONSTRAINTS="OBEY",
                                                TF32="TF32")
    elif major == 10:
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)
        trt.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8", TF32="TF32")
    else:
        trt.NetworkDefinitionCreationFlag = types.SimpleNamespace()  # STRONGLY_TYPED: deprecated, ignored
        trt.BuilderFlag = types.SimpleNamespace()  # FP16/INT8 removed
    return trt


@pytest.fixture
def fake_device(monkeypatch):
    import partialdeploy.backends.tensorrt.build as tb

    def install(major):
        trt = _fake_tensorrt(major)
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        monkeypatch.setattr(tb, "device_info", lambda: {"tensorrt_version": trt.__version__,
                                                        "compute_capability": "8.7", "gpu": "Fake GPU"})
        from partialdeploy.records import ParityResult

        monkeypatch.setattr(tb, "verify_engine", lambda *a, **k: [ParityResult("fake", 1, 0.0, 0.0, 1.0, 1.0)])
        return trt

    return install


@pytest.mark.parametrize("major,network_flags", [(8, 1 << 0), (10, 1 << 1), (11, 0)])
def test_build_engine_on_each_generation(fp16_bundle, fake_device, tmp_path, major, network_flags):
    import shutil

    _, src, _ = fp16_bundle
    d = tmp_path / "b"
    shutil.copytree(src, d)
    trt = fake_device(major)
    side = build_engine(d)
    c = trt.calls
    # 8: 1 << EXPLICIT_BATCH; 10: 1 << STRONGLY_TYPED; 11: nothing (always strong)
    assert c["network_flags"] == network_flags and c["calibrator"] is None
    assert c["parsed"].endswith("model.onnx") and c["profiles"] == 1 and c["shapes"][2] == (4, 3, 64, 64)
    assert (d / "model.engine").read_bytes() == b"engine-bytes" and (d / "timing.cache").read_bytes() == b"timing"
    assert side["tensorrt_major"] == major and json.loads((d / "model.engine.json").read_text())["precision"] == "fp16"
    keep = set(json.loads((d / "bundle.json").read_text())["onnx_precision"]["kept_fp32"])
    pinned = {la.name for la in c["network"].layers if la.precision == "float32"}
    if major == 8:  # no strong typing: the fp16 builder flag, the ONNX's fp32 nodes pinned (precision + outputs)
        assert c["flags"] == ["FP16", "OBEY"] and side["typing"].startswith("weak")
        assert pinned == keep and all(la.output_types == {0: "float32"} for la in c["network"].layers
                                      if la.name in keep)
    else:  # no precision flags: the precision is in the ONNX
        assert c["flags"] == [] and pinned == set() and side["typing"] == "strongly typed"


@pytest.mark.parametrize("major", [8, 10])
def test_build_engine_fp32_turns_tf32_off(tmp_path, fake_device, major):
    """TF32 is on by default in TensorRT 8 and 10: an fp32 bundle's engine clears it (and its trtexec
    line says --noTF32), so Ampere/Orin compute fp32 as fp32 and the fp32 gate can hold."""
    art, d, _ = _export(tmp_path, "fp32")
    trt = fake_device(major)
    build_engine(d)
    assert trt.calls["cleared"] == ["TF32"] and trt.calls["flags"] == []
    assert "--noTF32" in json.loads((d / "bundle.json").read_text())["trtexec"][str(major)]


def test_build_engine_int8_on_tensorrt_8(int8_bundle, fake_device, tmp_path):
    """The same Q/DQ ONNX on TensorRT 8 (JetPack 5/6.0): the INT8 builder flag turns explicit quantization
    on; no calibrator, no fp16 flag (the float layers stay fp32 as proven)."""
    import shutil

    _, src, _ = int8_bundle
    d = tmp_path / "b"
    shutil.copytree(src, d)
    trt = fake_device(8)
    with pytest.raises(UserError, match=r"exported for TensorRT 11 .* --profile tensorrt-jetson-orin-trt8-fp16.*"
                                        r"--any-tensorrt"):
        build_engine(d)
    side = build_engine(d, any_tensorrt=True)
    assert trt.calls["flags"] == ["INT8"] and trt.calls["calibrator"] is None and side["tensorrt_major"] == 8


def test_build_engine_generation_mismatch(int8_bundle, fake_device, tmp_path):
    import shutil

    _, src, _ = int8_bundle  # exported for TensorRT 11
    d = tmp_path / "b"
    shutil.copytree(src, d)
    trt = fake_device(10)
    with pytest.raises(UserError, match=r"exported for TensorRT 11 \(profile tensorrt-server-int8\) but this device "
                                        r"has TensorRT 10.3.0.26: re-export .*--any-tensorrt"):
        build_engine(d)
    assert not (d / "model.engine").exists()
    side = build_engine(d, any_tensorrt=True)  # the Q/DQ ONNX is the same for both: TensorRT 10 strongly typed
    assert side["tensorrt_major"] == 10 and trt.calls["network_flags"] == 1 << 1 and trt.calls["flags"] == []
    fake_device(11)
    assert build_engine(d)["tensorrt_major"] == 11


def test_build_engine_profile_mismatch_and_override(tmp_path, fake_device):
    art, d, _ = _export(tmp_path, "fp16", tensorrt=10, profile="tensorrt-jetson-orin-fp16")
    b = json.loads((d / "bundle.json").read_text())
    assert b["tensorrt"]["expected"] == 10 and b["tensorrt"]["builds_with"] == [8, 10, 11]  # made for Jetson
    fake_device(11)
    with pytest.raises(UserError, match=r"exported for TensorRT 10 \(profile tensorrt-jetson-orin-fp16\).*"
                                        r"--any-tensorrt"):
        build_engine(d)
    assert build_engine(d, any_tensorrt=True)["tensorrt_major"] == 11


def test_build_engine_implicit_int8_on_tensorrt_10(tmp_path, fake_device, monkeypatch):
    import partialdeploy.backends.tensorrt.build as tb

    _, d, _ = _export(tmp_path, "int8", int8_quantization="implicit", tensorrt=10)
    freed = []
    monkeypatch.setattr(tb, "_make_calibrator", lambda trt, calib, batch, cache: types.SimpleNamespace(
        batch=batch, free=lambda: freed.append(True)))
    trt = fake_device(10)
    side = build_engine(d)
    c = trt.calls
    assert c["network_flags"] == 0 and c["flags"] == ["FP16", "INT8"] and c["calibrator"].batch == 8
    assert freed == [True] and side["calibration_cache"] == "calib.cache" and side["typing"].startswith("weak")
    fake_device(11)
    with pytest.raises(UserError, match="implicit calibration, which 11 removed.*--profile tensorrt-server-int8"):
        build_engine(d)


def test_op_check_covers_both_parsers(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    rep = onnx_ops_report(make_ctx("fp32").onnx_path)
    assert rep["unsupported"] == [] and set(rep["ops"]) <= TRT10_ONNX_OPS <= TRT11_ONNX_OPS
    assert {"Conv", "MatMul", "Gemm", "Erf", "HardSigmoid", "Softmax", "LayerNormalization", "ReduceMean",
            "Split", "Concat", "Cast", "QuantizeLinear", "DequantizeLinear"} <= TRT10_ONNX_OPS & TRT11_ONNX_OPS
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])

    def model(nodes, opset, name):
        g = helper.make_graph(nodes, "g", [x], [y])
        p = tmp_path / name
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", opset),
                                                      helper.make_opsetid("com.microsoft", 1)]), str(p))
        return p

    swish = model([helper.make_node("Swish", ["x"], ["y"])], 22, "swish.onnx")
    rep = onnx_ops_report(swish)
    assert rep["by_generation"]["10"]["unsupported"] == ["Swish"] and not rep["by_generation"]["10"]["opset_supported"]
    assert rep["by_generation"]["11"] == {"unsupported": [], "opsets": [9, 24], "opset_supported": True}
    assert onnx_ops_report(swish, [11])["unsupported"] == []
    ctx = make_ctx("fp32", tensorrt=11)  # a profile for 11: the bundle builds with 11 only, and says why
    ctx.onnx_path = swish
    (tmp_path / "sw").mkdir()
    art = export("tensorrt", ctx, tmp_path / "sw")
    b = json.loads((tmp_path / "sw" / "bundle.json").read_text())
    assert b["tensorrt"]["builds_with"] == [11] and list(b["trtexec"]) == ["11"]
    assert any(n.startswith("not buildable with TensorRT 10: TensorRT 10's ONNX parser does not support Swish")
               for n in art.notes)
    ctx = make_ctx("fp32", tensorrt=10)
    ctx.onnx_path = swish
    with pytest.raises(UserError, match="TensorRT 10's ONNX parser does not support Swish"):
        export("tensorrt", ctx, tmp_path / "out")
    bad = model([helper.make_node("Bernoulli", ["x"], ["b"]),
                 helper.make_node("FusedConv", ["b"], ["y"], domain="com.microsoft")], 21, "bad.onnx")
    rep = onnx_ops_report(bad)
    assert rep["unsupported"] == ["Bernoulli", "com.microsoft::FusedConv"]
    ctx = make_ctx("fp32", tensorrt=11)
    ctx.onnx_path = bad
    with pytest.raises(UserError, match="TensorRT 11's ONNX parser does not support Bernoulli, com.microsoft::Fused"):
        export("tensorrt", ctx, tmp_path / "out")


def test_profiles_say_which_tensorrt(tmp_path):
    from partialdeploy.profiles import load_profile, validate

    assert load_profile("tensorrt-jetson-orin-fp16")["tensorrt"] == 10
    # JetPack 5.x / 6.0 ship TensorRT 8.5 / 8.6: Orin on either, Xavier (JetPack 5 is its last)
    for name in ("tensorrt-jetson-orin-trt8-fp16", "tensorrt-jetson-xavier-fp16"):
        p = load_profile(name)
        assert p["tensorrt"] == 8 and p["precision"] == "fp16" and p["target"] == "tensorrt"
    assert validate({"target": "tensorrt", "tensorrt": 8, "int8_quantization": "implicit"})["tensorrt"] == 8
    assert load_profile("tensorrt-server-int8")["tensorrt"] == 11
    with pytest.raises(UserError, match=r"choose 8 \(8.5/8.6: JetPack 5.x and 6.0\), 10 .* or 11"):
        validate({"target": "tensorrt", "tensorrt": 12})
    with pytest.raises(UserError, match="implicit needs tensorrt: 8 or 10"):
        validate({"target": "tensorrt", "tensorrt": 11, "int8_quantization": "implicit"})
    assert validate({"tensorrt": 10, "int8_quantization": "IMPLICIT"})["int8_quantization"] == "implicit"


def test_build_engine_here_exits_2_without_torch(fp16_bundle):
    _, d, _ = fp16_bundle
    with pytest.raises(RuntimeUnavailable, match="TensorRT is not installed / no NVIDIA GPU"):
        build_engine(d)
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom partialdeploy.cli import app\n"
            f"r = CliRunner().invoke(app, ['build-engine', {str(d)!r}])\n"
            "print(r.exit_code); print(r.output)\nprint('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "2" and NOT_HERE in r.stdout and lines[-1] == "False", r.stdout + r.stderr


def test_build_engine_bad_bundles(tmp_path, fp16_bundle):
    with pytest.raises(UserError, match="not a TensorRT bundle"):
        build_engine(tmp_path)
    (tmp_path / "bundle.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        build_engine(tmp_path)
    (tmp_path / "bundle.json").write_text(json.dumps({"schema": "partialdeploy.tensorrt-bundle/1"}))
    with pytest.raises(UserError, match="re-export"):
        build_engine(tmp_path)
    _, d, _ = fp16_bundle
    with pytest.raises(UserError, match="model.onnx is fp16 .* re-export it with --precision int8"):
        build_engine(d, precision="int8")
    with pytest.raises(UserError, match="fp32, fp16 or int8"):
        build_engine(d, precision="int4")


def test_engine_compat_mismatch():
    side = {"tensorrt_version": "10.3.0", "compute_capability": "8.7"}
    check_engine_compat(side, "10.3.0", "8.7")
    with pytest.raises(UserError, match=r"TensorRT 10.3.0 \(this device has 10.7.0\).*rebuild it here"):
        check_engine_compat(side, "10.7.0", "8.7")
    with pytest.raises(UserError, match=r"compute capability 8.7 \(this GPU is 8.9\)"):
        check_engine_compat(side, "10.3.0", "8.9")


def test_batch_range_validation(tmp_path):
    with pytest.raises(UserError, match="min <= opt <= max"):
        export("tensorrt", make_ctx("fp32", batch_range={"min": 4, "opt": 2, "max": 8}), tmp_path)


def _fake_trt_runner(bundle_dir, miscompute: bool, loads: list | None = None):
    """A stand-in for the TensorRT runtime: it "runs the engine" by running the bundle's own
    precision-carrying model.onnx in ONNX Runtime — or, miscomputing, with every image's logits
    rolled by one class (what a wrong tactic or a broken fusion would do). ``bundle_dir`` None: the
    bundle is the directory the runner is opened on. Every engine it opens is appended to ``loads``."""
    from partialdeploy.backends.runner import Runner
    from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner

    class FakeTensorRTRunner(Runner):
        name = "tensorrt"

        def load(self):
            engine = self.path / "model.engine" if self.path.is_dir() else self.path
            assert engine.read_bytes() == b"engine-bytes"  # the engine the build just made
            (loads if loads is not None else []).append(engine)
            self.ort = OnnxRuntimeRunner((bundle_dir or self.path) / "model.onnx").load()
            return self

        def inputs(self):
            return self.ort.inputs()

        def outputs(self):
            return self.ort.outputs()

        def infer_impl(self, feed):
            out = self.ort.infer_impl(feed)
            return {k: np.roll(v, 1, axis=-1) if miscompute else v for k, v in out.items()}

        def close(self):
            self.ort.close() if hasattr(self, "ort") else None

    return FakeTensorRTRunner


@pytest.mark.parametrize("miscompute", [False, True])
def test_build_engine_gates_before_keeping_the_engine(fp16_bundle, fake_device, tmp_path, monkeypatch, miscompute):
    """The real gate (verify_engine -> parity_gates) on what a fake TensorRT runtime computes: an
    engine that miscomputes fails with exit 1 and leaves no model.engine (nor a sidecar) behind,
    so `profile` can never time it; a faithful one is kept with its parity in the sidecar."""
    import shutil

    import partialdeploy.backends.tensorrt.runner as rt
    import partialdeploy.backends.tensorrt.build as tb
    from partialdeploy.errors import VerificationError

    _, src, _ = fp16_bundle
    d = tmp_path / "b"
    shutil.copytree(src, d)
    real_gate = tb.verify_engine
    fake_device(11)
    monkeypatch.setattr(tb, "verify_engine", real_gate)  # not fake_device's stub: the real gate runs ...
    monkeypatch.setattr(rt, "TensorRTRunner", _fake_trt_runner(d, miscompute))  # ... on the fake runtime
    if miscompute:
        with pytest.raises(VerificationError, match="parity gate 'ONNX -> TensorRT fp16"):
            build_engine(d)
        assert not (d / "model.engine").exists() and not (d / "model.engine.json").exists()
        assert not [p for p in d.iterdir() if p.name.startswith(".engine-candidate")]
    else:
        side = build_engine(d)
        assert (d / "model.engine").read_bytes() == b"engine-bytes"
        assert side["parity"][0]["passed"] and side["parity"][0]["stage"].startswith("ONNX -> TensorRT fp16")
        assert json.loads((d / "model.engine.json").read_text())["parity"] == side["parity"]


@pytest.mark.parametrize("miscompute", [False, True])
def test_export_on_a_gpu_builds_and_the_pipeline_gates_the_engine_once(fake_device, tmp_path, monkeypatch,
                                                                       miscompute):
    """Where a GPU is visible (faked: TensorRT's documented builder API and a runtime that runs the
    bundle's ONNX), the target only builds the engine; the one verification path opens it through the
    backend's runner and gates it — once: build-engine's own gate is not run at export. A miscomputing
    engine fails that gate (exit 1)."""
    import partialdeploy.backends.tensorrt.build as tb
    import partialdeploy.backends.tensorrt.cuda as cuda
    import partialdeploy.backends.tensorrt.runner as rt
    from partialdeploy.errors import VerificationError

    fake_device(11)
    build_gates, loads = [], []
    monkeypatch.setattr(tb, "verify_engine", lambda *a, **k: build_gates.append(a) or [])
    monkeypatch.setattr(cuda, "why_unavailable", lambda: None)
    monkeypatch.setattr(rt, "TensorRTRunner", _fake_trt_runner(None, miscompute, loads))
    ctx = make_ctx("fp16", batch_range={"min": 1, "opt": 4, "max": 16})
    if miscompute:
        with pytest.raises(VerificationError, match="parity gate 'ONNX -> TensorRT fp16"):
            export("tensorrt", ctx, tmp_path)
    else:
        art = export("tensorrt", ctx, tmp_path)
        assert art.verified == "parity" and (tmp_path / "model.engine").read_bytes() == b"engine-bytes"
        stages = [p.stage.split(" (")[0] for p in art.parity]  # parity and held-out images each
        assert stages == ["TensorRT-ready fp16 ONNX in ONNX Runtime"] * 2 + ["ONNX -> TensorRT fp16"] * 2
        assert all(p.passed for p in art.parity) and "model.engine" in art.files
    assert build_gates == [] and loads == [tmp_path / "model.engine"]


@pytest.mark.slow
def test_opset_16_hint_builds_on_tensorrt_8_5(tmp_path):
    """The export's note for TensorRT 8.5 (JetPack 5) says --opset 16: that ONNX has no LayerNormalization
    (written as basic operators) and passes every generation's operator check."""
    from targets_common import _demo

    from partialdeploy.exporting.onnx import export_onnx

    spec, deploy, *_ = _demo()
    export_onnx(deploy, tmp_path / "m.onnx", spec.img_size, dynamic_batch=True, batch=1, opset=16)
    rep = onnx_ops_report(tmp_path / "m.onnx")
    assert "LayerNormalization" not in rep["ops"] and rep["by_generation"]["8"]["needs_8_6"] == []
    assert rep["unsupported"] == [] and rep["opset_supported"]
