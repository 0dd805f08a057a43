"""Issue 12 §6: a corpus of named hostile cases. Each builds one hostile or damaged input, runs the
command a user would run (in-process through the CLI, exactly as `partialdeploy ...` parses it) and
requires: exit 2, one "error:" line naming the problem, no traceback, no code executed, nothing
written."""

import json
import os
import shutil
import struct
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from hostile import (EvalPayload, Payload, conv_key, demo_state, export_demo, mutate, read_manifest, save_pth,
                     save_st, tree, write_manifest)
from partialdeploy.cli import app
from partialdeploy.demo import DEMO_CKPT


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """One real export (onnx, openvino, tensorrt bundle) of the demo; each case works on a copy."""
    out = tmp_path_factory.mktemp("corpus") / "dist"
    export_demo(out, "--target", "onnx,openvino,tensorrt")
    return out


def _first(sd, suffix):
    return next(k for k in sd if k.endswith(suffix))


def _set(key_fn, value_fn):
    def fn(sd):
        k = key_fn(sd)
        sd[k] = value_fn(sd[k])
    return fn


def _st_raw(t: Path, header: dict | bytes, body: bytes = b"\0" * 16, length: int | None = None) -> Path:
    h = header if isinstance(header, bytes) else json.dumps(header).encode()
    t.write_bytes(struct.pack("<Q", len(h) if length is None else length) + h + body)
    return t


def _copy_export(src: Path, t: Path) -> Path:
    return Path(shutil.copytree(src, t / "d"))


def _edit_manifest(t, src, fn):
    d = _copy_export(src, t)
    m = read_manifest(d)
    fn(m, d)
    write_manifest(d, m)
    return d


def _art(m, target):
    return next(a for a in m["artifacts"] if a["target"] == target)


def _flip(p: Path, at: float = 0.5):
    b = bytearray(p.read_bytes())
    b[int(len(b) * at)] ^= 0x5A
    p.write_bytes(bytes(b))


def _profile(d):
    return ["profile", str(d), "--runs", "2", "--min-time", "0", "--warmup", "0", "--blocks", "1", "--no-layers"]


def _ck(t, name, fn, fmt="st"):
    return mutate(fn, t / name, fmt=fmt)


def _lightning(t, hp, name="x.ckpt"):
    sd, _ = demo_state()
    return save_pth({"state_dict": {f"model.{k}": v for k, v in sd.items()}, "hyper_parameters": hp,
                     "pytorch-lightning_version": "2.4.0", "epoch": 3}, t / name)


def _calib(t, files: dict) -> Path:
    d = t / "calib"
    d.mkdir()
    for name, content in files.items():
        (d / name).write_bytes(content)
    return d


def _bomb() -> bytes:
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))


def _profile_report(d: Path) -> Path:
    r = CliRunner().invoke(app, _profile(d))
    assert r.exit_code == 0, r.output
    return d / "profile.json"


# name -> (build(tmp, export_dir, marker) -> argv, expected text in the error line)
CASES = {
    # ---- checkpoints that would run code
    "pickle-os-system-payload": (lambda t, e, m: ["export", str(save_pth({"w": Payload(m)}, t / "a.pth"))],
                                 "refusing to load"),
    "pickle-eval-payload-in-ckpt": (lambda t, e, m: ["export", str(save_pth(
        {"state_dict": {"model.x": torch.zeros(1)}, "hyper_parameters": EvalPayload(m)}, t / "a.ckpt"))],
        "refusing to load"),
    "pickle-payload-nested-in-list": (lambda t, e, m: ["export", str(save_pth(
        {"model": {"x": torch.zeros(1)}, "extra": [1, {"y": Payload(m)}]}, t / "a.pth"))], "refusing to load"),
    "legacy-pickle-payload": (lambda t, e, m: ["export", str(_legacy(t, m))], "refusing to load"),
    "pickle-payload-renamed-safetensors": (lambda t, e, m: ["export", str(_renamed_payload(t, m))],
                                           "not a valid safetensors"),
    # ---- damaged files
    "empty-file": (lambda t, e, m: ["export", str(_write(t / "e.pth", b""))], "is empty"),
    "truncated-zip-checkpoint": (lambda t, e, m: ["export", str(_truncated_pth(t))], "corrupt or truncated"),
    "truncated-safetensors": (lambda t, e, m: ["export", str(_write(t / "t.safetensors",
                                                                    DEMO_CKPT.read_bytes()[:5000]))],
                              "not a valid safetensors"),
    "random-bytes-pth": (lambda t, e, m: ["export", str(_write(t / "r.pth", os.urandom(4096)))], "corrupt"),
    "text-file-as-pth": (lambda t, e, m: ["export", str(_write(t / "r.pth", b"hello world\n" * 20))], "corrupt"),
    "safetensors-header-length-lie": (lambda t, e, m: ["export", str(_st_raw(t / "h.safetensors", {},
                                                                             length=1 << 40))],
                                      "not a valid safetensors"),
    "safetensors-header-not-json": (lambda t, e, m: ["export", str(_st_raw(t / "h.safetensors", b"{not json"))],
                                    "not a valid safetensors"),
    "safetensors-offsets-out-of-range": (lambda t, e, m: ["export", str(_st_raw(t / "h.safetensors", {
        "patch_embed.proj.weight": {"dtype": "F32", "shape": [16, 3, 4, 4], "data_offsets": [0, 3072]}}))],
        "not a valid safetensors"),
    "safetensors-unknown-dtype": (lambda t, e, m: ["export", str(_st_raw(t / "h.safetensors", {
        "w": {"dtype": "Q99", "shape": [4], "data_offsets": [0, 16]}}))], "not a valid safetensors"),
    "safetensors-spec-metadata-damaged": (lambda t, e, m: ["export", str(_bad_meta(t))], "metadata is damaged"),
    # ---- damaged weights
    "int32-conv-weights": (lambda t, e, m: ["export", str(_ck(t, "a.safetensors", _set(
        conv_key, lambda v: (v * 100).to(torch.int32))))], "should be floating"),
    "int64-conv-weights": (lambda t, e, m: ["export", str(_ck(t, "a.safetensors", _set(
        conv_key, lambda v: v.long())))], "should be floating"),
    "complex-conv-weights": (lambda t, e, m: ["export", str(_ck(t, "a.safetensors", _set(
        conv_key, lambda v: v.to(torch.complex64))))], "complex64"),
    "bool-weights": (lambda t, e, m: ["export", str(_ck(t, "a.safetensors", _set(conv_key, lambda v: v > 0)))],
                     "dtype bool"),
    "sparse-weights": (lambda t, e, m: ["export", "--act", "gelu", str(_ck(t, "a.pth", _set(
        conv_key, lambda v: v.to_sparse()), "pth"))], "sparse tensor"),
    "meta-tensor": (lambda t, e, m: ["export", "--act", "gelu", str(_ck(t, "a.pth", _set(
        conv_key, lambda v: torch.empty(v.shape, device="meta")), "pth"))], "meta tensor"),
    "nan-weight": (lambda t, e, m: ["export", str(_ck(t, "a.safetensors", _set(
        conv_key, lambda v: v.index_fill(0, torch.tensor([0]), float("nan")))))], "non-finite"),
    "inf-batchnorm-mean": (lambda t, e, m: ["export", str(_ck(t, "a.safetensors", _set(
        lambda sd: _first(sd, "running_mean"), lambda v: v + float("inf"))))], "non-finite"),
    "negative-running-var": (lambda t, e, m: ["export", str(_ck(t, "a.safetensors", _set(
        lambda sd: _first(sd, "running_var"), lambda v: -v - 1)))], "negative BatchNorm variances"),
    "unknown-extra-key": (lambda t, e, m: ["export", str(_ck(t, "a.safetensors",
                                                             lambda sd: sd.__setitem__("evil.bias", torch.ones(2))))],
                          "unknown extra keys: evil.bias"),
    "missing-key": (lambda t, e, m: ["export", str(_ck(t, "a.safetensors", lambda sd: sd.pop("head.bias")))],
                    "missing: head.bias"),
    "transposed-head": (lambda t, e, m: ["export", str(_ck(t, "a.safetensors", _set(
        lambda sd: "head.weight", lambda v: v.t().contiguous())))], "shape mismatch: head.weight"),
    "swapped-tensors": (lambda t, e, m: ["export", str(_ck(t, "a.safetensors", _swap))], "shape mismatch"),
    "list-instead-of-state-dict": (lambda t, e, m: ["export", str(save_pth([torch.zeros(2)], t / "l.pth"))],
                                   "not a state_dict"),
    "state-dict-without-tensors": (lambda t, e, m: ["export", str(save_pth({"a": "b"}, t / "s.pth"))],
                                   "no tensors"),
    "hyper-parameters-contradict-weights": (lambda t, e, m: ["export", str(_lightning(
        t, {"depths": [9, 9, 9, 9], "act_layer": "GELU"}))], "inconsistent"),
    "not-a-partialnet": (lambda t, e, m: ["export", str(save_pth({"fc.weight": torch.zeros(2, 2)}, t / "n.pth"))],
                         "not a PartialNet/FasterNet"),
    # ---- paths
    "directory-as-checkpoint": (lambda t, e, m: ["export", str(t)], "is a directory"),
    "nonexistent-checkpoint": (lambda t, e, m: ["export", str(t / "nope.pth")], "does not exist"),
    "fifo-as-checkpoint": (lambda t, e, m: ["export", str(_fifo(t))], "not a regular file"),
    "dev-zero-symlink-as-checkpoint": (lambda t, e, m: ["export", str(_symlink(t / "z.pth", "/dev/zero"))],
                                       "not a regular file"),
    "output-is-a-file": (lambda t, e, m: ["export", "-o", str(_write(t / "f", b"x"))], "not a directory"),
    # ---- options and resources
    "img-size-100000": (lambda t, e, m: ["export", "--img-size", "100000", "-o", str(t / "o")], "needs about"),
    "img-size-not-multiple-of-32": (lambda t, e, m: ["export", "--img-size", "33", "-o", str(t / "o")],
                                    "multiple of 32"),
    "batch-zero": (lambda t, e, m: ["export", "--batch", "0", "-o", str(t / "o")], "--batch must be"),
    "unknown-precision": (lambda t, e, m: ["export", "--precision", "int3", "-o", str(t / "o")], "int3"),
    "unknown-target": (lambda t, e, m: ["export", "--target", "tflite", "-o", str(t / "o")], "unknown target"),
    "calibration-only-a-bomb": (lambda t, e, m: ["export", "-t", "onnxruntime", "-p", "int8", "-o", str(t / "o"),
                                                 "--calib", str(_calib(t, {"b.png": _bomb()}))],
                                "decompression bomb"),
    "calibration-only-corrupt-images": (lambda t, e, m: ["export", "-t", "onnxruntime", "-p", "int8", "-o",
                                                         str(t / "o"), "--calib", str(_calib(t, {
                                                             "a.png": b"\x89PNG\r\n\x1a\n garbage",
                                                             "b.jpg": b"\xff\xd8\xff garbage"}))],
                                        "no usable image"),
    "calibration-folder-missing": (lambda t, e, m: ["export", "-t", "onnxruntime", "-p", "int8", "-o", str(t / "o"),
                                                    "--calib", str(t / "none")], "does not exist"),
    # ---- YAML profiles
    "profile-yaml-python-tag": (lambda t, e, m: ["export", "--profile", str(_write(
        t / "p.yaml", f"target: !!python/object/apply:os.system ['touch {m}']\n".encode()))],
        "cannot read profile"),
    "profile-yaml-billion-laughs": (lambda t, e, m: ["export", "--profile", str(_laughs(t))], "expands to more"),
    "profile-yaml-huge": (lambda t, e, m: ["export", "--profile", str(_write(
        t / "p.yaml", b"description: '" + b"x" * (100 << 10) + b"'\n"))], "larger than"),
    "profile-yaml-unknown-field": (lambda t, e, m: ["export", "--profile", str(_write(
        t / "p.yaml", b"target: onnx\n__import__: os\n"))], "unknown field"),
    # ---- export folders
    "artifact-changed-after-export": (lambda t, e, m: _profile(_changed(t, e, "onnx")), "changed after export"),
    "openvino-bin-changed": (lambda t, e, m: _profile(_changed(t, e, "openvino", ".bin")), "model.bin was changed"),
    "artifact-missing": (lambda t, e, m: _profile(_removed(t, e)), "missing"),
    "manifest-path-parent-escape": (lambda t, e, m: _profile(_edit_manifest(t, e, lambda man, d: _art(
        man, "onnx").__setitem__("path", "../../../../etc/passwd"))), "leaves the export directory"),
    "manifest-absolute-path": (lambda t, e, m: _profile(_edit_manifest(t, e, lambda man, d: _art(
        man, "onnx").__setitem__("path", "/etc/passwd"))), "leaves the export directory"),
    "manifest-files-escape": (lambda t, e, m: _profile(_edit_manifest(t, e, lambda man, d: _art(
        man, "onnx")["files"].append("../../secret"))), "leaves the export directory"),
    "manifest-files-sha256-escape": (lambda t, e, m: _profile(_edit_manifest(t, e, lambda man, d: _art(
        man, "onnx")["files_sha256"].__setitem__("/etc/shadow", "0" * 64))), "leaves the export directory"),
    "artifact-symlink-outside": (lambda t, e, m: _profile(_symlinked(t, e)), "outside the export directory"),
    "manifest-not-json": (lambda t, e, m: _profile(_manifest_bytes(t, e, b"{\"schema\": ")), "not valid JSON"),
    "manifest-other-schema": (lambda t, e, m: _profile(_edit_manifest(t, e, lambda man, d: man.__setitem__(
        "schema", "someone.else/1"))), "not a partialdeploy manifest"),
    "manifest-artifacts-not-a-list": (lambda t, e, m: _profile(_edit_manifest(t, e, lambda man, d: man.__setitem__(
        "artifacts", {"a": 1}))), "not a list"),
    "manifest-path-not-text": (lambda t, e, m: _profile(_edit_manifest(t, e, lambda man, d: _art(
        man, "onnx").__setitem__("path", ["model.onnx"]))), "non-text"),
    "manifest-sha-swapped": (lambda t, e, m: _profile(_edit_manifest(t, e, _swap_sha)), "changed after export"),
    "manifest-huge-input-size": (lambda t, e, m: _profile(_edit_manifest(t, e, lambda man, d: man[
        "preprocessing"].__setitem__("size", [10 ** 6, 10 ** 6]))), "not an image size"),
    "manifest-deeply-nested": (lambda t, e, m: _profile(_manifest_bytes(t, e, b"[" * 100000 + b"]" * 100000)),
                               "not valid JSON"),
    # ---- reports
    "report-of-a-manifest": (lambda t, e, m: ["report", str(e / "manifest.json")], "has schema"),
    "report-malformed-results": (lambda t, e, m: ["report", str(_write(t / "r.json", json.dumps(
        {"schema": "partialdeploy.profile/1", "results": [{"status": "ok", "latency_ms": {"p50": "<b>"}}]}
    ).encode()))], "malformed"),
    "compare-against-foreign-json": (lambda t, e, m: ["report", "compare", str(_write(t / "a.json", b"{}")),
                                                      str(_write(t / "b.json", b"[]"))], "no schema"),
    "report-after-artifact-changed": (lambda t, e, m: ["report", str(_report_then_change(t, e))],
                                      "changed after export"),
    # ---- TensorRT bundle
    "bundle-file-changed": (lambda t, e, m: ["build-engine", str(_changed_bundle(t, e))], "changed after export"),
    "bundle-json-onnx-escape": (lambda t, e, m: ["build-engine", str(_bundle_escape(t, e))],
                                "leaves the export directory"),
    "bundle-json-not-json": (lambda t, e, m: ["build-engine", str(_bundle_bytes(t, e, b"\x00\x01"))],
                             "not valid JSON"),
    # ---- diff
    "diff-on-changed-artifact": (lambda t, e, m: ["diff", str(DEMO_CKPT), str(_changed(t, e, "onnx")),
                                                  "--target", "onnx"], "changed after export"),
}


def _write(p: Path, data: bytes) -> Path:
    p.write_bytes(data)
    return p


def _legacy(t, m):
    p = t / "legacy.pth"
    torch.save({"x": Payload(m)}, str(p), _use_new_zipfile_serialization=False)
    return p


def _renamed_payload(t, m):
    p = save_pth({"x": Payload(m)}, t / "a.pth")
    return p.rename(t / "a.safetensors")


def _truncated_pth(t):
    sd, _ = demo_state()
    p = save_pth(sd, t / "full.pth")
    return _write(t / "cut.pth", p.read_bytes()[: p.stat().st_size // 2])


def _bad_meta(t):
    sd, meta = demo_state()
    return save_st(sd, {**meta, "partialdeploy.spec": "{\"embed_dim\": \"__import__('os')\"}"},
                   t / "m.safetensors")


def _swap(sd):
    a, b = "head.weight", conv_key(sd)
    sd[a], sd[b] = sd[b], sd[a]


def _fifo(t):
    p = t / "fifo.pth"
    os.mkfifo(p)
    return p


def _symlink(p: Path, to: str) -> Path:
    p.symlink_to(to)
    return p


def _laughs(t):
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, c in enumerate("bcdefghi"):
        prev = "abcdefghi"[i]
        lines.append(f"{c}: &{c} [" + ", ".join([f"*{prev}"] * 10) + "]")
    return _write(t / "p.yaml", ("\n".join(lines) + "\n").encode())


def _changed(t, e, target, suffix=None):
    d = _copy_export(e, t)
    art = _art(read_manifest(d), target)
    f = d / (art["path"] if suffix is None else art["path"].rsplit(".", 1)[0] + suffix)
    _flip(f)
    return d


def _removed(t, e):
    d = _copy_export(e, t)
    (d / _art(read_manifest(d), "onnx")["path"]).unlink()
    return d


def _symlinked(t, e):
    d = _copy_export(e, t)
    p = d / _art(read_manifest(d), "onnx")["path"]
    outside = t / "outside.onnx"
    p.rename(outside)
    p.symlink_to(outside)
    return d


def _manifest_bytes(t, e, data):
    d = _copy_export(e, t)
    (d / "manifest.json").write_bytes(data)
    return d


def _swap_sha(man, d):
    a, b = _art(man, "onnx"), _art(man, "openvino")
    a["files_sha256"] = {a["path"]: b["sha256"]}


def _report_then_change(t, e):
    d = _copy_export(e, t)
    rep = _profile_report(d)
    _flip(d / _art(read_manifest(d), "onnx")["path"])
    return rep


def _changed_bundle(t, e):
    d = _copy_export(e, t)
    b = d / _art(read_manifest(d), "tensorrt")["path"]
    _flip(b / "parity_inputs.npy", 0.9)
    return b


def _bundle_escape(t, e):
    b = Path(shutil.copytree(e / _art(read_manifest(e), "tensorrt")["path"], t / "bundle"))
    j = json.loads((b / "bundle.json").read_text())
    j["onnx"] = "../../../etc/passwd"
    (b / "bundle.json").write_text(json.dumps(j))
    return b


def _bundle_bytes(t, e, data):
    b = Path(shutil.copytree(e / _art(read_manifest(e), "tensorrt")["path"], t / "bundle"))
    (b / "bundle.json").write_bytes(data)
    return b


def test_corpus_has_at_least_50_cases():
    assert len(CASES) >= 50


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(name, exported, tmp_path, monkeypatch):
    build, expect = CASES[name]
    work = tmp_path / "w"
    work.mkdir()
    marker = tmp_path / "PWNED"
    monkeypatch.chdir(work)  # the default -o dist/ would land here: it must not appear
    argv = build(work, exported, marker)
    before = tree(tmp_path)
    before_dirs = sorted(str(p) for p in tmp_path.rglob("*") if p.is_dir())
    r = CliRunner().invoke(app, argv)
    err = r.stderr if hasattr(r, "stderr") else r.output
    assert r.exit_code == 2, (name, r.exit_code, r.output[-1500:], repr(r.exception))
    assert isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("✓ ", "note:"))]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    import re

    assert re.search(expect, lines[0]), (expect, lines[0])
    assert "Traceback" not in r.output
    assert not marker.exists(), "code from the input was executed"
    assert tree(tmp_path) == before, "something was written"
    assert sorted(str(p) for p in tmp_path.rglob("*") if p.is_dir()) == before_dirs
    assert not list(tmp_path.parent.glob(".partialdeploy-*"))
