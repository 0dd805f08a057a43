"""Issue 12: every case that slipped through (damaged weights certified, OOM instead of a refusal,
decompression bombs, changed artifacts profiled, manifest paths leaving the export) is refused
cleanly: exit 2, one line, nothing written."""

import json
import struct
import time
import zlib
from pathlib import Path

import pytest
import torch

from conftest import run_cli
from hostile import conv_key, export_demo, mutate, read_manifest, save_pth, tree, write_manifest
from partialdeploy.exporting import budget
from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec
from partialdeploy.errors import UserError


def one_line_exit2(r, after_progress=False):
    """Exit 2 and one error line (after the export's ✓ progress lines when ``after_progress``)."""
    assert r.returncode == 2, (r.returncode, r.stdout[-400:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    if after_progress:
        lines = [ln for ln in lines if not ln.startswith("✓ ")]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return lines[0]


def _load_all(path, **kw):
    c = load_checkpoint(path)
    spec, _ = resolve_spec(c, **kw)
    return load_model(c, spec)


def _first(sd, suffix):
    return next(k for k in sd if k.endswith(suffix))


# ---------------------------------------------------------------- 1. weights checked before anything is built

@pytest.mark.parametrize("case,fn,expect", [
    ("int32 conv weights", lambda sd: sd.__setitem__(conv_key(sd), (sd[conv_key(sd)] * 100).to(torch.int32)),
     "stages.0.blocks.0.mlp.0.weight (int32) should be floating"),
    ("complex conv weights", lambda sd: sd.__setitem__(conv_key(sd), sd[conv_key(sd)].to(torch.complex64)),
     "stages.0.blocks.0.mlp.0.weight has dtype complex64"),
    ("negative BatchNorm running_var", lambda sd: sd.__setitem__(_first(sd, "running_var"),
                                                                 -sd[_first(sd, "running_var")] - 1),
     "negative BatchNorm variances in patch_embed.norm.running_var"),
])
def test_damaged_weights_exit_2_before_any_work(case, fn, expect, tmp_path):
    """Slipped through: int32 / complex conv weights exported with exit 0 and a *passed* parity gate;
    a negative running_var ended as exit 1 "parity gate failed"."""
    ck = mutate(fn, tmp_path / "bad.safetensors")
    out = tmp_path / "dist"
    r = run_cli("export", ck, "-o", out, "--target", "onnx")
    line = one_line_exit2(r)
    assert expect in line, line
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["bad.safetensors"]


@pytest.mark.parametrize("case,fn,expect", [
    ("sparse tensor", lambda sd: sd.__setitem__(conv_key(sd), sd[conv_key(sd)].to_sparse()), "sparse tensor"),
    ("meta tensor", lambda sd: sd.__setitem__(conv_key(sd), torch.empty(sd[conv_key(sd)].shape, device="meta")),
     "meta tensor"),
    ("bool tensor", lambda sd: sd.__setitem__(conv_key(sd), sd[conv_key(sd)] > 0), "dtype bool"),
    ("float64 is fine, int64 weight is not", lambda sd: sd.__setitem__(conv_key(sd), sd[conv_key(sd)].long()),
     "(int64) should be floating"),
    ("NaN", lambda sd: sd[conv_key(sd)].view(-1).__setitem__(3, float("nan")), "non-finite"),
    ("inf in a BatchNorm", lambda sd: sd[_first(sd, "running_mean")].view(-1).__setitem__(0, float("inf")),
     "non-finite"),
    ("unknown extra key", lambda sd: sd.__setitem__("backdoor.weight", torch.zeros(4)),
     "unknown extra keys: backdoor.weight"),
    ("missing key", lambda sd: sd.pop(conv_key(sd)), "missing: stages.0.blocks.0.mlp.0.weight"),
    ("transposed tensor", lambda sd: sd.__setitem__("head.weight", sd["head.weight"].t().contiguous()),
     "shape mismatch: head.weight"),
    ("float BatchNorm counter", lambda sd: sd.__setitem__(_first(sd, "num_batches_tracked"),
                                                          sd[_first(sd, "num_batches_tracked")].float()),
     "should be integer"),
])
def test_weight_checks_name_the_key(case, fn, expect, tmp_path):
    fmt = "pth" if case in ("sparse tensor", "meta tensor") else "st"
    ck = mutate(fn, tmp_path / ("bad.pth" if fmt == "pth" else "bad.safetensors"), fmt=fmt)
    with pytest.raises(UserError) as e:
        _load_all(ck, act="gelu")
    assert expect in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_quantized_tensor_refused(tmp_path):
    import warnings

    def q(sd):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sd[conv_key(sd)] = torch.quantize_per_tensor(sd[conv_key(sd)], 0.01, 0, torch.qint8)
    ck = mutate(q, tmp_path / "q.pth", fmt="pth")
    with pytest.raises(UserError, match="quantized tensor"):
        _load_all(ck, act="gelu")


def test_float64_weights_and_integer_buffers_still_load(tmp_path):
    """The checks refuse damage, not legitimate variety: float64 weights and int64 BatchNorm counters."""
    ck = mutate(lambda sd: sd.__setitem__(conv_key(sd), sd[conv_key(sd)].double()), tmp_path / "f64.safetensors")
    model = _load_all(ck)
    assert next(model.parameters()).dtype == torch.float32


def test_damaged_spec_metadata_refused(tmp_path):
    from hostile import demo_state, save_st

    sd, meta = demo_state()
    for bad in ("{", "[]", json.dumps({**json.loads(meta["partialdeploy.spec"]), "embed_dim": -5}),
                json.dumps({**json.loads(meta["partialdeploy.spec"]), "img_size": 100001}),
                json.dumps({**json.loads(meta["partialdeploy.spec"]), "act": "os.system"})):
        ck = save_st(sd, {**meta, "partialdeploy.spec": bad}, tmp_path / "m.safetensors")
        with pytest.raises(UserError, match="metadata is damaged"):
            _load_all(ck)


# ---------------------------------------------------------------- 2. resource budget before work

def test_huge_img_size_refused_at_once(tmp_path):
    """Slipped through: --img-size 100000 started building and was OOM-killed minutes later."""
    out = tmp_path / "dist"
    t0 = time.monotonic()
    r = run_cli("export", "--img-size", "100000", "-o", out)
    line = one_line_exit2(r)
    assert time.monotonic() - t0 < 60
    assert "needs about" in line and "available" in line and "use --img-size" in line, line
    assert not out.exists()


def test_budget_suggestion_fits_and_batch_is_named(monkeypatch, tmp_path):
    from partialdeploy.families import variant_spec

    spec = variant_spec("partialnet", "s")
    n = 7_800_000
    mem = budget.estimate(spec, n, 1024).memory + 1
    monkeypatch.setattr(budget, "available_memory", lambda: mem)
    budget.check(spec, n, 1024, 1, ("onnx",), "fp32", tmp_path)  # fits
    with pytest.raises(UserError) as e:
        budget.check(spec, n, 2048, 1, ("onnx",), "fp32", tmp_path)
    msg = str(e.value)
    size = int(msg.split("use --img-size ")[1].split()[0])
    assert 1024 <= size < 2048 and budget.estimate(spec, n, size).memory <= mem, msg
    with pytest.raises(UserError, match="smaller --batch"):
        budget.check(spec, n, 1024, 64, ("onnx",), "fp32", tmp_path)
    monkeypatch.setattr(budget, "available_disk", lambda p: 1000)
    with pytest.raises(UserError, match="of disk"):
        budget.check(spec, n, 224, 1, ("onnx",), "fp32", tmp_path)


def test_budget_grows_with_size_batch_targets():
    from partialdeploy.families import variant_spec

    spec = variant_spec("partialnet", "t0")
    e = budget.estimate
    assert e(spec, 1e6, 448).memory > e(spec, 1e6, 224).memory
    assert e(spec, 1e6, 224, batch=64).memory > e(spec, 1e6, 224, batch=1).memory
    assert e(spec, 1e6, 224, targets=("onnx", "openvino", "tensorrt")).disk > e(spec, 1e6, 224).disk
    # the iRPE bias constant grows as (size/32)^4: at 4096 it alone is gigabytes
    assert e(spec, 1e6, 4096).weights > 1 << 30


def _png_bomb(path: Path, side: int = 30000) -> Path:
    """A valid 1-bit greyscale PNG of side×side pixels that is a few kB on disk."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    return path


def test_calibration_bomb_and_corrupt_images_skipped_with_count(tmp_path):
    """Slipped through: a 30000×30000 PNG of a few kB ended as "internal error: DecompressionBombError", exit 3."""
    from partialdeploy.demo import DEMO_CALIB
    from partialdeploy.images import load_image_folder

    calib = tmp_path / "calib"
    calib.mkdir()
    bomb = _png_bomb(calib / "000_bomb.png")
    assert bomb.stat().st_size < 200_000
    (calib / "001_truncated.png").write_bytes((next(DEMO_CALIB.glob("*.png"))).read_bytes()[:60])
    (calib / "002_not_an_image.jpg").write_text("hello")
    for f in sorted(DEMO_CALIB.glob("*.png"))[:3]:
        (calib / f.name).write_bytes(f.read_bytes())
    skipped = []
    x = load_image_folder(calib, 64, (0.5,) * 3, (0.5,) * 3, skipped=skipped)
    assert len(x) == 3 and sorted(f.name for f, _ in skipped) == ["000_bomb.png", "001_truncated.png",
                                                                   "002_not_an_image.jpg"]
    assert "decompression bomb" in dict((f.name, r) for f, r in skipped)["000_bomb.png"]
    only_bomb = tmp_path / "only"
    only_bomb.mkdir()
    _png_bomb(only_bomb / "x.png")
    out = tmp_path / "dist"
    r = run_cli("export", "--target", "onnxruntime", "--precision", "int8", "--calib", only_bomb, "-o", out)
    line = one_line_exit2(r, after_progress=True)
    assert "no usable image" in line and "x.png" in line and "decompression bomb" in line, line
    assert not out.exists()


# ---------------------------------------------------------------- 3. artifacts verified before use

@pytest.fixture(scope="module")
def demo_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("verified") / "dist"
    export_demo(out)
    return out


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


PROFILE_FAST = ("--runs", "3", "--min-time", "0", "--warmup", "1", "--blocks", "1", "--no-layers")


def test_profile_refuses_changed_model(demo_export, tmp_path):
    """Slipped through: profile on an export whose model.onnx was altered after export profiled it (exit 0)."""
    d = _copy(demo_export, tmp_path / "d")
    art = read_manifest(d)["artifacts"][0]
    model = d / art["path"]
    b = bytearray(model.read_bytes())
    b[len(b) // 2] ^= 0x01
    model.write_bytes(bytes(b))
    before = tree(d)
    r = run_cli("profile", d, *PROFILE_FAST)
    line = one_line_exit2(r)
    assert "model.onnx was changed after export" in line, line
    assert tree(d) == before  # no profile.json written
    r = run_cli("profile", model, "--target", "onnxruntime", *PROFILE_FAST)  # the file alone, inside its export
    assert "changed after export" in one_line_exit2(r)


def test_profile_verifies_then_runs(demo_export, tmp_path):
    d = _copy(demo_export, tmp_path / "d")
    r = run_cli("profile", d, *PROFILE_FAST)
    assert r.returncode == 0, r.stderr
    rep = json.loads((d / "profile.json").read_text())
    assert rep["results"][0]["sha256"] == read_manifest(d)["artifacts"][0]["sha256"]
    # report: the artifacts it measured are still the exported ones
    r = run_cli("report", d / "profile.json")
    assert r.returncode == 0, r.stderr
    model = d / read_manifest(d)["artifacts"][0]["path"]
    model.write_bytes(model.read_bytes() + b"\0")
    r = run_cli("report", d / "profile.json", "--html", tmp_path / "r.html")
    assert "changed after export" in one_line_exit2(r)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("evil", ["../../../../etc/passwd", "/etc/passwd", "onnx/../../outside.onnx",
                                  "C:/Windows/win.ini"])
def test_manifest_paths_leaving_the_export_refused(evil, demo_export, tmp_path):
    """Slipped through: a manifest path ../../../../etc/passwd was followed (exit 1 from the runtime)."""
    d = _copy(demo_export, tmp_path / "d")
    m = read_manifest(d)
    m["artifacts"][0]["path"] = evil
    write_manifest(d, m)
    r = run_cli("profile", d, *PROFILE_FAST)
    line = one_line_exit2(r)
    assert "leaves the export directory" in line or "not a relative path" in line, line


def test_symlink_out_of_the_export_refused(demo_export, tmp_path):
    d = _copy(demo_export, tmp_path / "d")
    art = read_manifest(d)["artifacts"][0]
    outside = tmp_path / "outside.onnx"
    (d / art["path"]).rename(outside)
    (d / art["path"]).symlink_to(outside)
    r = run_cli("profile", d, *PROFILE_FAST)
    assert "outside the export directory" in one_line_exit2(r)


def test_build_engine_verifies_the_bundle_before_needing_a_gpu(tmp_path):
    d = tmp_path / "dist"
    export_demo(d, "--target", "tensorrt")
    bundle = d / "tensorrt" / "fp32"
    ref = bundle / "reference_logits.npy"
    b = bytearray(ref.read_bytes())
    b[-1] ^= 0xFF
    ref.write_bytes(bytes(b))
    r = run_cli("build-engine", bundle)
    line = one_line_exit2(r)
    assert "reference_logits.npy was changed after export" in line, line
    bj = json.loads((bundle / "bundle.json").read_text())
    ref.write_bytes(bytes(b[:-1]) + bytes([b[-1] ^ 0xFF]))  # restored
    from partialdeploy.backends.tensorrt.build import build_engine
    from partialdeploy.integrity import verify_inside_export

    assert verify_inside_export(bundle).target == "tensorrt"
    # a bundle.json pointing out of its directory (the bundle copied alone, no manifest above it)
    alone = _copy(bundle, tmp_path / "alone")
    bj["onnx"] = "../../etc/passwd"
    (alone / "bundle.json").write_text(json.dumps(bj))
    with pytest.raises(UserError, match="leaves the export directory"):
        build_engine(alone)


def test_openvino_weights_file_is_verified_too(tmp_path):
    """The manifest's sha256 of model.xml alone would not notice a changed model.bin: every file is hashed."""
    d = tmp_path / "dist"
    export_demo(d, "--target", "openvino")
    art = read_manifest(d)["artifacts"][0]
    assert set(art["files_sha256"]) == {art["path"], art["path"].replace(".xml", ".bin")}
    binf = d / art["path"].replace(".xml", ".bin")
    b = bytearray(binf.read_bytes())
    b[100] ^= 0x10
    binf.write_bytes(bytes(b))
    r = run_cli("profile", d, *PROFILE_FAST)
    assert "model.bin was changed after export" in one_line_exit2(r)


def test_pth_pickle_payload_still_refused(tmp_path):
    from hostile import Payload

    marker = tmp_path / "pwned"
    ck = save_pth({"state_dict": {"x": torch.zeros(1)}, "evil": Payload(marker)}, tmp_path / "evil.pth")
    r = run_cli("export", ck, "-o", tmp_path / "dist")
    assert "refusing to load" in one_line_exit2(r)
    assert not marker.exists()


@pytest.mark.slow  # a whole export at 512 px in a subprocess, to read its peak RSS
def test_budget_estimate_covers_the_measured_peak(tmp_path):
    """The estimate is on the high side of what an export really uses (peak RSS of the process)."""
    import os
    import subprocess
    import sys

    from hostile import ROOT
    from partialdeploy import demo

    peak_file = tmp_path / "peak"
    code = ("import atexit, resource, sys\n"
            f"atexit.register(lambda: open({str(peak_file)!r}, 'w').write("
            "str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)))\n"
            f"sys.argv = ['partialdeploy', 'export', '--img-size', '512', '-o', {str(tmp_path / 'd')!r}]\n"
            "from partialdeploy.cli import main\nmain()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert r.returncode == 0, r.stderr
    peak = int(peak_file.read_text())
    c = load_checkpoint(demo.DEMO_CKPT)
    spec, _ = resolve_spec(c, img_size=512)
    est = budget.estimate(spec, sum(v.numel() for v in c.state_dict.values()), 512, eval_images=demo.eval_size())
    assert peak <= est.memory <= 4 * peak, (budget.human(peak), budget.human(est.memory))
