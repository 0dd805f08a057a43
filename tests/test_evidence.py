"""Gates with evidence: every gate says n and the agreement as a count, and an INT8/bf16 top-1 gate
needs enough images for its 90% to mean something (a 95% lower confidence bound)."""

import numpy as np
import pytest

from partialdeploy import parity
from partialdeploy.errors import VerificationError


def _logits(n, disagree, seed=0):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((n, 10))
    out = ref.copy()
    for i in range(disagree):  # lift another class just past the top one: cosine stays high, top-1 differs
        j = int(ref[i].argmax())
        out[i, (j + 1) % 10] = ref[i, j] + 0.05
    return ref, out


def test_lower_bound_values():
    lb = parity.agreement_lower_bound
    assert lb(16, 16) == pytest.approx(0.855, abs=1e-3) and lb(15, 16) == pytest.approx(0.762, abs=1e-3)
    assert lb(9, 10) == pytest.approx(0.652, abs=1e-3) and lb(58, 64) == pytest.approx(0.829, abs=1e-3)
    assert lb(0, 0) == 0.0


@pytest.mark.parametrize("n, disagree, passes", [(16, 1, True), (10, 1, False), (8, 0, False), (64, 6, True),
                                                 (64, 7, False)])
def test_int8_agreement_needs_enough_images(n, disagree, passes):
    ref, out = _logits(n, disagree)
    tol = parity.Tolerance(top1_min=0.9, top1_lower_min=0.75)  # the int8 gate's agreement clauses
    res = parity.check(parity.compare(ref, out, "s"), tol)
    assert res.agree_count == n - disagree
    assert res.passed is passes, res.reason
    if not passes and disagree / n <= 0.1:  # 90% or more observed: failed for too little evidence
        assert f"{n - disagree}/{n} is too little evidence" in res.reason and "--check-images" in res.reason


def test_gate_messages_carry_counts():
    ref, out = _logits(16, 3)
    with pytest.raises(VerificationError, match=r"top-1 agreement 81\.2% \(13/16\) < 90\.0%.*top-1 agree 13/16"):
        parity.gate(ref, out, "s", "int8")
    res = parity.compare(ref, out, "s")
    assert "top-1 13/16" in res.cell() and "n=" not in res.cell()
    assert parity.DEFAULT_TOLERANCES["int8"].top1_lower_min == 0.75


def test_accuracy_drop_clause_fails_alone():
    """Top-1 agreement (99/100) and cosine pass; the labelled accuracy drops 1 point > 0.5: exit 1."""
    from types import SimpleNamespace

    from partialdeploy.verification import gate_results, parity_gates

    ref, out = _logits(100, 1)
    labels = ref.argmax(1)  # the reference is right on every image, the candidate misses one
    res = parity.check(parity.compare(ref, out, "s", labels), parity.DEFAULT_TOLERANCES["int8"])
    assert res.agree_count == 99 and res.cosine_min > 0.9 and not res.passed
    assert res.reason == "accuracy drop 1.00 points > 0.5"
    x = np.zeros((100, 1), np.float32)
    ctx = SimpleNamespace(precision="int8", tolerances={}, parity_inputs=x[:16], reference=ref[50:66],
                          eval_images=x, eval_reference=ref, eval_labels=labels)
    fn = lambda v: out if len(v) == 100 else ref[50:66]  # noqa: E731 - the parity images agree
    got = gate_results(ctx, fn, "int8 candidate")
    assert [r.passed for r in got] == [True, False] and "accuracy drop 1.00 points" in got[1].reason
    with pytest.raises(VerificationError, match="held-out.*accuracy drop 1.00 points > 0.5"):
        parity_gates(ctx, fn, "int8 candidate")


def test_required_packages_fail_instead_of_skipping():
    """Every distribution of pyproject's [all] and [dev] extras is in conftest's REQUIRED_MODULES (so
    pytest.importorskip of it fails when it is missing), except the GPU-only TensorRT ones."""
    import importlib.metadata as md
    import re
    import tomllib

    import conftest

    py = tomllib.loads((conftest.ROOT / "pyproject.toml").read_text())
    extras = py["project"]["optional-dependencies"]
    dists = set()
    for name in ("torch", "onnxruntime", "openvino", "coreml", "tensorrt-export", "data", "dev"):
        dists |= {re.split(r"[<>=\[ ;]", d)[0].lower() for d in extras[name]}
    dists.discard("ruff")  # a command (make lint), not a module a test imports
    to_mod = {d.lower(): m for m, ds in md.packages_distributions().items() for d in ds}
    missing = {d for d in dists if to_mod.get(d) not in conftest.REQUIRED_MODULES
               and d.replace("-", "_") not in conftest.REQUIRED_MODULES}
    assert not missing, missing
    with pytest.raises(ImportError):
        conftest.REQUIRED_MODULES.add("no_such_module_xyz")
        try:
            pytest.importorskip("no_such_module_xyz")
        finally:
            conftest.REQUIRED_MODULES.discard("no_such_module_xyz")
    with pytest.raises(pytest.skip.Exception):
        pytest.importorskip("tensorrt_not_here_xyz", reason="needs an NVIDIA GPU")


def test_build_engine_lines_carry_counts(capsys):
    from partialdeploy.cli.render import print_parity
    from partialdeploy.records import ParityResult

    ok = ParityResult("ONNX -> TensorRT int8 (16 parity images)", 16, 0.1, 0.02, 0.95, 15 / 16)
    print_parity([ok.to_dict(), {"stage": 3}])
    text = capsys.readouterr().out
    assert "ONNX -> TensorRT int8 (16 parity images): cos 0.950000, rel 0.02, top-1 15/16" in text
    assert "parity record unreadable" in text
