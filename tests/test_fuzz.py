"""Issue 12 §6: fuzzing. A few hundred mutated checkpoints, export folders and reports (byte flips,
truncations, header edits, swapped tensors, edited manifests): no traceback, no hang, no code
executed, every outcome "accepted" or a clean refusal (exit 2), nothing written on failure, and a
damaged artifact is never accepted.

The library is called in-process (fast); a sample goes through the real CLI in a subprocess.
``PARTIALDEPLOY_FUZZ_SEED`` changes the seed (default fixed, so a failure reproduces); the failing
case's name carries its mutation.
"""

import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from hostile import ROOT, Payload, demo_state, export_demo, save_pth, tree
from partialdeploy.errors import PartialDeployError
from test_exit_codes import cli  # noqa: F401 (the in-process entry point fixture)

SEED = int(os.environ.get("PARTIALDEPLOY_FUZZ_SEED", "12"))
N_CKPT = 240
N_EXPORT = 160
N_REPORT = 60
CASE_SECONDS = 20


class Hang(Exception):
    pass


@contextmanager
def deadline(seconds=CASE_SECONDS):
    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")
    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------------------- mutations

def flip(data: bytes, rng: random.Random, n=None) -> tuple[bytes, str]:
    b = bytearray(data)
    n = n or rng.choice([1, 1, 2, 4, 16])
    where = [rng.randrange(len(b)) for _ in range(n)]
    for i in where:
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b), f"flip{n}@{where[0]}"


def truncate(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    k = rng.choice([0, 1, 7, 8, 9, rng.randrange(len(data)), len(data) - 1])
    return data[:k], f"truncate@{k}"


def append_garbage(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    return data + rng.randbytes(rng.choice([1, 64, 4096])), "append"


def st_header_edit(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """Edit the JSON header of a safetensors file: dtypes, shapes, offsets, lengths, metadata."""
    n = struct.unpack("<Q", data[:8])[0]
    head = json.loads(data[8:8 + n])
    body = data[8 + n:]
    keys = [k for k in head if k != "__metadata__"]
    k = rng.choice(keys)
    what = rng.choice(["dtype", "shape", "offsets", "length", "metadata", "drop", "dup-offsets"])
    if what == "dtype":
        head[k]["dtype"] = rng.choice(["I32", "I64", "C64", "BOOL", "F16", "F64", "U8", "X1", ""])
    elif what == "shape":
        head[k]["shape"] = rng.choice([[], [0], [1 << 40], [-1], head[k]["shape"][::-1], head[k]["shape"] + [1]])
    elif what == "offsets":
        a, b = head[k]["data_offsets"]
        head[k]["data_offsets"] = rng.choice([[b, a], [a, b + 4], [0, len(body) + 8], [a, a], [-4, b]])
    elif what == "metadata":
        meta = head.get("__metadata__", {})
        key = rng.choice(list(meta) or ["x"])
        meta[key] = rng.choice(["", "{", "[]", "null", json.dumps({"embed_dim": 1 << 30}), "<script>"])
        head["__metadata__"] = meta
    elif what == "drop":
        head.pop(k)
    elif what == "dup-offsets":
        other = rng.choice(keys)
        head[k]["data_offsets"] = head[other]["data_offsets"]
    h = json.dumps(head).encode()
    n2 = len(h) if what != "length" else rng.choice([0, len(h) - 1, len(h) + 9, 1 << 62])
    return struct.pack("<Q", n2) + h + body, f"header-{what}:{k}"


def swap_tensors(rng: random.Random, fmt: str) -> tuple[dict, dict, str]:
    sd, meta = demo_state()
    keys = sorted(sd)
    a, b = rng.sample(keys, 2)
    sd[a], sd[b] = sd[b], sd[a]
    return sd, meta, f"swap:{a}<->{b}"


def mutated_checkpoints(tmp: Path, n: int):
    """(name, path) of n mutated checkpoints: safetensors, .pth and Lightning .ckpt; some hold a pickle
    payload that would create ``tmp/PWNED`` if it ever ran."""
    from safetensors.torch import save_file

    rng = random.Random(SEED)
    sd, meta = demo_state()
    bases = {}
    bases["st"] = (tmp / "base.safetensors").read_bytes() if (tmp / "base.safetensors").exists() else None
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp / "base.safetensors"), metadata=meta)
    bases["st"] = (tmp / "base.safetensors").read_bytes()
    bases["pth"] = save_pth(sd, tmp / "base.pth").read_bytes()
    bases["ckpt"] = save_pth({"state_dict": {f"model.{k}": v for k, v in sd.items()},
                              "hyper_parameters": {"act_layer": "GELU", "embed_dim": 16},
                              "pytorch-lightning_version": "2.4.0"}, tmp / "base.ckpt").read_bytes()
    bases["payload"] = save_pth({"state_dict": sd, "x": Payload(tmp / "PWNED")}, tmp / "base_p.pth").read_bytes()
    for i in range(n):
        kind = rng.choice(["st", "st", "pth", "ckpt", "payload"])
        op = rng.choice(["flip", "flip", "truncate", "append", "header", "swap"] if kind == "st"
                        else ["flip", "flip", "truncate", "append", "swap"])
        suffix = {"st": ".safetensors", "pth": ".pth", "ckpt": ".ckpt", "payload": ".pth"}[kind]
        p = tmp / f"m{i}{suffix}"
        if op == "swap":
            s, m, how = swap_tensors(rng, kind)
            if kind == "st":
                save_file({k: v.contiguous() for k, v in s.items()}, str(p), metadata=m)
            else:
                save_pth(s, p)
        else:
            fn = {"flip": flip, "truncate": truncate, "append": append_garbage, "header": st_header_edit}[op]
            data, how = fn(bases[kind], rng)
            p.write_bytes(data)
        yield f"{kind}/{how}", p


def _check_load(path: Path) -> str:
    """What `export` does before building anything: load, resolve, check, build the train form."""
    from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec

    ck = load_checkpoint(path)
    spec, _ = resolve_spec(ck, act="gelu")
    load_model(ck, spec)
    return "accepted"


def _outcome(fn, *a) -> str:
    try:
        with deadline():
            return fn(*a)
    except PartialDeployError as e:
        assert e.exit_code == 2, f"exit {e.exit_code}: {e}"
        assert "\n" not in str(e).strip(), f"multi-line error: {e}"
        return "refused"


def test_fuzz_checkpoints(tmp_path):
    outcomes, problems = {"accepted": 0, "refused": 0}, []
    cases = list(mutated_checkpoints(tmp_path, N_CKPT))
    before = tree(tmp_path)
    for name, p in cases:
        try:
            outcomes[_outcome(_check_load, p)] += 1
        except Exception as e:  # a traceback a user would have seen, or a hang
            problems.append(f"{name}: {type(e).__name__}: {str(e)[:160]}")
    assert not problems, f"{len(problems)} of {len(cases)} cases escaped:\n" + "\n".join(problems[:20])
    assert not (tmp_path / "PWNED").exists(), "a pickle payload ran"
    assert tree(tmp_path) == before, "loading wrote files"
    print("checkpoint fuzz outcomes", outcomes)
    assert outcomes["refused"] > len(cases) // 3, outcomes  # the mutations do damage


# ------------------------------------------------------------------------------- export folders

@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("fuzz-export") / "dist"
    export_demo(out, "--target", "onnx,openvino,tensorrt")
    return out


def _artifact_bytes(d: Path) -> dict:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()
            and p.name != "manifest.json"}


def mutate_export(src: Path, dst: Path, rng: random.Random) -> str:
    shutil.copytree(src, dst, symlinks=True)
    m = json.loads((dst / "manifest.json").read_text())
    files = [p for p in sorted(dst.rglob("*")) if p.is_file() and p.name != "manifest.json"]
    op = rng.choice(["manifest-flip", "manifest-truncate", "manifest-edit", "manifest-edit", "artifact-flip",
                     "artifact-truncate", "artifact-swap", "entry-swap"])
    if op == "manifest-flip":
        data, how = flip((dst / "manifest.json").read_bytes(), rng)
        (dst / "manifest.json").write_bytes(data)
    elif op == "manifest-truncate":
        data, how = truncate((dst / "manifest.json").read_bytes(), rng)
        (dst / "manifest.json").write_bytes(data)
    elif op == "artifact-flip":
        f = rng.choice(files)
        data, how = flip(f.read_bytes(), rng)
        f.write_bytes(data)
        how = f"{f.name}:{how}"
    elif op == "artifact-truncate":
        f = rng.choice(files)
        data, how = truncate(f.read_bytes(), rng)
        f.write_bytes(data)
        how = f"{f.name}:{how}"
    elif op == "artifact-swap":
        a, b = rng.sample(files, 2)
        da, db = a.read_bytes(), b.read_bytes()
        a.write_bytes(db)
        b.write_bytes(da)
        how = f"{a.name}<->{b.name}"
    elif op == "entry-swap":
        arts = m["artifacts"]
        i, j = rng.sample(range(len(arts)), 2)
        key = rng.choice(["path", "sha256", "files", "files_sha256", "target"])
        arts[i][key], arts[j][key] = arts[j][key], arts[i][key]
        how = f"{key}:{i}<->{j}"
        (dst / "manifest.json").write_text(json.dumps(m))
    else:
        a = rng.choice(m["artifacts"])
        key = rng.choice(["path", "sha256", "files", "files_sha256", "target", "precision", "inputs", "schema",
                          "artifacts", "preprocessing"])
        val = rng.choice([None, 1, -1, 1e308, "", "../" * 8 + "etc/passwd", "/etc/passwd", [], {}, ["x"],
                          {"a": "b"}, "0" * 64, True, "<script>", [10 ** 9, 10 ** 9]])
        if key in ("schema", "artifacts", "preprocessing"):
            m[key] = val
        else:
            a[key] = val
        how = f"{key}={json.dumps(val)[:20]}"
        (dst / "manifest.json").write_text(json.dumps(m))
    return f"{op}:{how}"


def test_fuzz_export_folders(export_dir, tmp_path):
    """Verification before use: profile's planning (which verifies every artifact) either refuses
    with exit 2 or accepts, and it may accept only when every artifact file is byte-identical to what
    was exported."""
    from partialdeploy.profiling.source import plan

    rng = random.Random(SEED + 1)
    original = _artifact_bytes(export_dir)
    problems, outcomes = [], {"accepted": 0, "refused": 0}
    for i in range(N_EXPORT):
        d = tmp_path / f"e{i}"
        how = mutate_export(export_dir, d, rng)
        before = tree(d)
        try:
            res = _outcome(lambda d=d: plan(d) and "accepted")
            outcomes[res] += 1
            if res == "accepted":
                _, arts, base = plan(d)
                used = {}
                for a in arts:
                    for f in a.files or [a.path]:
                        p = base / f
                        for q in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())):
                            used[str(q.relative_to(d))] = q.read_bytes()
                damaged = [k for k, v in used.items() if original.get(k) != v]
                assert not damaged, f"accepted damaged artifact files {damaged}"
        except Exception as e:
            problems.append(f"{how}: {type(e).__name__}: {str(e)[:160]}")
        if tree(d) != before:
            problems.append(f"{how}: files were written")
        shutil.rmtree(d)
    assert not problems, f"{len(problems)} of {N_EXPORT} cases escaped:\n" + "\n".join(problems[:20])
    print("export fuzz outcomes", outcomes)
    assert outcomes["refused"] > N_EXPORT // 2, outcomes


def test_fuzz_reports(tmp_path):
    """Mutated profile reports: refused with exit 2, or rendered to HTML/Markdown without an error."""
    from partialdeploy.report import regression, schema
    from partialdeploy.report.html import to_html
    from partialdeploy.report.markdown import to_markdown
    from test_untrusted_text import hostile_report

    rng = random.Random(SEED + 2)
    base = json.dumps(hostile_report("<b>x</b>")).encode()
    problems = []
    for i in range(N_REPORT):
        op = rng.choice([flip, truncate, append_garbage])
        data, how = op(base, rng)
        p = tmp_path / f"r{i}.json"
        p.write_bytes(data)

        def render(p=p):
            d = schema.load(p)
            to_html(d)
            to_markdown(d)
            regression.compare(d, d, 0.1)
            return "accepted"
        try:
            _outcome(render)
        except Exception as e:
            problems.append(f"{how}: {type(e).__name__}: {str(e)[:160]}")
    assert not problems, "\n".join(problems[:20])


# ------------------------------------------------------------------------------- CLI sample

def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "partialdeploy", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=cwd, timeout=300)


@pytest.mark.slow  # seven interpreters, one a full export (~12 s): `make test-slow`; the default run has the next
def test_fuzz_cli_sample(export_dir, tmp_path):
    """A sample through the real command line: exit 0 or 2, never a traceback; nothing written on 2."""
    rng = random.Random(SEED + 3)
    cks = list(mutated_checkpoints(tmp_path, 24))
    sample = [cks[i] for i in (0, 5, 11, 17)]
    for name, p in sample:
        out = tmp_path / f"out-{p.stem}"
        r = _cli("export", p, "--act", "gelu", "-o", out, cwd=tmp_path)
        assert r.returncode in (0, 2) and "Traceback" not in r.stderr, (name, r.returncode, r.stderr[-800:])
        if r.returncode == 2:
            assert not out.exists(), name
    for i in range(3):
        d = tmp_path / f"e{i}"
        how = mutate_export(export_dir, d, rng)
        before = tree(d)
        r = _cli("profile", d, "--runs", "2", "--min-time", "0", "--warmup", "0", "--blocks", "1", "--no-layers",
                 cwd=tmp_path)
        assert r.returncode in (0, 2) and "Traceback" not in r.stderr, (how, r.returncode, r.stderr[-800:])
        if r.returncode == 2:
            assert tree(d) == before, how
    assert not (tmp_path / "PWNED").exists()


def test_fuzz_cli_sample_in_process(cli, export_dir, tmp_path):  # noqa: F811
    """The sample above through the real entry point (``cli.main``) in this process: the mutated
    checkpoints of the sample that the loader refuses (the accepted one is a plain export, which other
    default tests run) exit 2 with one error line and write nothing; the three mutated export folders
    profile to exit 0 or 2, never a traceback, and are left as they were on 2."""
    rng = random.Random(SEED + 3)
    cks = list(mutated_checkpoints(tmp_path, 24))
    refused = [(name, p) for name, p in (cks[i] for i in (0, 5, 11, 17)) if _outcome(_check_load, p) == "refused"]
    assert len(refused) >= 2, refused  # the sample holds damaged checkpoints
    for name, p in refused:
        out = tmp_path / f"out-{p.stem}"
        code, _, err = cli("export", p, "--act", "gelu", "-o", out)
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("✓ ", "note:"))]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (name, code, err[-800:])
        assert not out.exists(), name
    for i in range(3):
        d = tmp_path / f"e{i}"
        how = mutate_export(export_dir, d, rng)
        before = tree(d)
        code, _, err = cli("profile", d, "--runs", "2", "--min-time", "0", "--warmup", "0", "--blocks", "1",
                           "--no-layers")
        assert code in (0, 2) and "Traceback" not in err and "internal error" not in err, (how, code, err[-800:])
        if code == 2:
            assert tree(d) == before, how
    assert not (tmp_path / "PWNED").exists()


def test_payload_base_really_is_hostile(tmp_path):
    """The fuzz's pickle payload would create the marker if loading ran it (so its absence means something)."""
    import pickle

    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.exists()
    torch.zeros(1)  # torch imported for the checkpoint builders
