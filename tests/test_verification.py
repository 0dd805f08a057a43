"""The one run-and-gate path (partialdeploy.verification): alternatives tried by verification (not by
the target), a target's own gate reused as the certificate only for the very same file and options,
and a damaged model never certified."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from partialdeploy.errors import VerificationError
from partialdeploy.exporting.options import ExportOptions

W = np.random.default_rng(3).standard_normal((48, 10)).astype(np.float32)

FAKE = '''
import numpy as np
from partialdeploy.backends import Backend
from partialdeploy.backends.target import Target
from partialdeploy.backends.runner import Runner, TensorMeta


class AltTarget(Target):
    name = "altrt"

    def export(self, ctx, out_dir):
        raise NotImplementedError


class AltRunner(Runner):
    """Computes x @ W, but only when opened with the config {"fix": 1}; a file whose bytes say
    "damaged" computes garbage whatever the config. Counts how often it was opened."""
    name = "altrt"
    W = None
    opened = []

    @classmethod
    def artifact_options(cls, entry, mode="latency"):
        return {"config": dict(entry.extra.get("runtime_config") or {})}

    def load(self):
        AltRunner.opened.append(dict(self.options.get("config") or {}))
        self.damaged = b"damaged" in self.path.read_bytes()
        return self

    def inputs(self):
        return [TensorMeta("x", (None, 3, 4, 4), "float32")]

    def outputs(self):
        return [TensorMeta("y", (None, 10), "float32")]

    def infer_impl(self, feed):
        y = feed["x"].reshape(len(feed["x"]), -1) @ self.W
        good = (self.options.get("config") or {}).get("fix") and not self.damaged
        return {"y": y if good else y[:, ::-1].copy()}


BACKEND = Backend(name="altrt", runner=f"{__name__}:AltRunner", targets={"altrt": f"{__name__}:AltTarget"},
                  suffixes=(".alt",))
'''


@pytest.fixture
def altrt(tmp_path, monkeypatch):
    from partialdeploy import backends

    (tmp_path / "altrt_backend.py").write_text(FAKE)
    monkeypatch.syspath_prepend(str(tmp_path))
    import altrt_backend

    altrt_backend.AltRunner.W = W
    altrt_backend.AltRunner.opened.clear()
    backends.register(altrt_backend.BACKEND)
    yield altrt_backend.AltRunner
    backends.unregister("altrt")


def _ctx():
    x = np.random.default_rng(1).standard_normal((8, 3, 4, 4)).astype(np.float32)
    return SimpleNamespace(precision="fp32", tolerances={}, options=ExportOptions(), parity_inputs=x,
                           reference=x.reshape(8, -1) @ W, eval_images=None, eval_reference=None, eval_labels=None)


def _artifact(tmp_path, content=b"model", **kw):
    from partialdeploy.records import Artifact

    (tmp_path / "m.alt").write_bytes(content)
    return Artifact("altrt", "fp32", "m.alt", files=["m.alt"], **kw)


def test_verification_tries_the_alternative_and_records_it(altrt, tmp_path):
    from partialdeploy.verification import Alternative, verify_artifact

    alt = Alternative(extra={"runtime_config": {"fix": 1}}, note="default failed ({failed}); fixed")
    art = _artifact(tmp_path, alternatives=[alt])
    assert verify_artifact(_ctx(), art, tmp_path)
    assert art.verified == "parity" and all(p.passed for p in art.parity) and len(art.parity) == 1
    assert art.extra["runtime_config"] == {"fix": 1}  # whoever loads it opens it the way that passed
    assert art.notes and art.notes[0].startswith("default failed (parity gate") and altrt.opened == [{}, {"fix": 1}]
    assert art.inputs[0]["name"] == "x" and art.outputs[0]["shape"] == [None, 10]  # reported by the runtime


def test_a_damaged_model_fails_every_alternative_and_is_not_certified(altrt, tmp_path):
    from partialdeploy.verification import Alternative, verify_artifact

    art = _artifact(tmp_path, b"damaged", alternatives=[Alternative({"runtime_config": {"fix": 1}}, "n")])
    with pytest.raises(VerificationError, match="top-1 agreement"):
        verify_artifact(_ctx(), art, tmp_path)
    assert art.verified == "converted" and art.parity == [] and "runtime_config" not in art.extra
    assert art.notes == []


def test_a_targets_proof_is_the_certificate_only_for_the_same_file(altrt, tmp_path):
    from partialdeploy.verification import Proof, open_options, verify_artifact, verify_file

    ctx = _ctx()
    art = _artifact(tmp_path, extra={"runtime_config": {"fix": 1}})
    art.inputs, art.outputs = [{"name": "x"}], [{"name": "y"}]
    opts = open_options(altrt, ctx, art)
    results = verify_file(ctx, altrt, tmp_path / "m.alt", "the target's own gate", "fp32", opts)
    art.proof = Proof.of(ctx, tmp_path / "m.alt", opts, results)
    altrt.opened.clear()
    assert verify_artifact(ctx, art, tmp_path) and altrt.opened == []  # certified from the proof, not re-run
    assert art.parity[0].stage.startswith("the target's own gate")

    art2 = _artifact(tmp_path, b"damaged", extra={"runtime_config": {"fix": 1}}, proof=art.proof)
    art2.inputs, art2.outputs = art.inputs, art.outputs
    with pytest.raises(VerificationError):  # the file changed after its gate: gated again, and it fails
        verify_artifact(ctx, art2, tmp_path)
    assert art2.verified == "converted" and altrt.opened == [{"fix": 1}]

    (tmp_path / "m.alt").write_bytes(b"model")
    art3 = _artifact(tmp_path, extra={"runtime_config": {"fix": 1, "other": 2}}, proof=art.proof)
    art3.inputs, art3.outputs = art.inputs, art.outputs
    assert verify_artifact(ctx, art3, tmp_path) and len(altrt.opened) == 2  # other options: gated again


def test_a_claimed_compute_precision_is_read_back_not_taken_from_a_proof(altrt, tmp_path):
    from partialdeploy.verification import Proof, open_options, verify_artifact, verify_file

    ctx = _ctx()
    extra = {"runtime_config": {"fix": 1}, "compute_precision": "f32"}
    art = _artifact(tmp_path, extra=extra)
    art.inputs, art.outputs = [{"name": "x"}], [{"name": "y"}]
    opts = open_options(altrt, ctx, art)
    art.proof = Proof.of(ctx, tmp_path / "m.alt", opts, verify_file(ctx, altrt, tmp_path / "m.alt", "s", "fp32", opts))
    altrt.opened.clear()
    assert verify_artifact(ctx, art, tmp_path) and altrt.opened == [{"fix": 1}]  # opened: the claim is checked
