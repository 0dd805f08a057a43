"""JUnit XML for CI: `report compare --junit` and `export --junit` files validate against the JUnit
schema reporters read (tests/fixtures/junit.xsd), one case per target × precision × batch, and a
failing case carries its numbers."""

import xml.etree.ElementTree as ET

import xmlschema  # a dev dependency: a broken install fails here instead of skipping

from conftest import ROOT
from partialdeploy.report import junit, regression
from test_gates import BASE, _rep

SCHEMA = xmlschema.XMLSchema(ROOT / "tests" / "fixtures" / "junit.xsd")


def _cases(path):
    SCHEMA.validate(str(path))
    root = ET.parse(path).getroot()
    return root, {c.get("name"): c for c in root.iter("testcase")}


def test_comparison_junit_one_case_per_row_failures_carry_numbers(tmp_path):
    new = _rep({("onnx", "fp32", 1): 1.5, ("openvino", "int8", 1): 0.5})
    cmp = regression.compare(_rep(BASE), new, 0.10)
    p = junit.write([junit.comparison_suite(cmp, "base.json", "new.json")], tmp_path / "gate.xml")
    root, cases = _cases(p)
    assert set(cases) == {"onnx fp32 batch 1", "openvino int8 batch 1", "openvino fp32 batch 1"}
    fail = cases["onnx fp32 batch 1"].find("failure")
    assert fail is not None and "regression" in fail.get("message")
    assert "p50 1.000 -> 1.500 ms (+50.0%, allowed +10%)" in fail.text
    assert "missing" in cases["openvino fp32 batch 1"].find("failure").get("message")
    assert cases["openvino int8 batch 1"].find("failure") is None
    assert root.get("tests") == "3" and root.get("failures") == "2"


def test_comparison_junit_report_level_failures_and_allowed_missing(tmp_path):
    t0 = {"family": "partialnet", "embed_dim": 64, "depths": [1, 2, 8, 2], "name": "T0"}
    cmp = regression.compare(_rep(BASE), _rep({("onnx", "fp32", 1): 9.0}, model=t0, device="gpu"), 0.1,
                             allow_missing=True, strict=True)
    _, cases = _cases(junit.write([junit.comparison_suite(cmp)], tmp_path / "g.xml"))
    ev = cases["evidence"].find("failure")
    assert "different models" in ev.get("message") and "--strict: the reports come from different devices" in ev.text
    assert cases["openvino int8 batch 1"].find("skipped") is not None


def test_hostile_text_stays_text(tmp_path):
    rep = _rep(BASE)
    rep["results"][0]["target"] = "onnx\x00</testcase><evil/>\x1b[31m"
    cmp = regression.compare(rep, rep, 0.1)
    _, cases = _cases(junit.write([junit.comparison_suite(cmp)], tmp_path / "g.xml"))
    assert any(n.startswith("onnx</testcase><evil/>[31m") for n in cases)


def test_export_junit_and_error_suite(tmp_path):
    from partialdeploy.api import ExportResult, Failure
    from partialdeploy.records import Artifact, ParityResult, TargetFailure

    trace = ParityResult("train form -> traced deploy model (CoreML converter input)", 16, 0, 0, 1.0, 1.0)
    ok = ParityResult("ONNX -> ONNX Runtime int8", 16, 0.1, 0.05, 0.97, 15 / 16, tolerance={"top1_min": 0.9})
    failed = TargetFailure("openvino", "int8", "verification",
                           "parity gate 'ONNX -> OpenVINO int8' failed: top-1 agreement 12/16 < 14/16")
    data = {"stages": [{"name": "deploy form", "seconds": 0.5,
                        "parity": ParityResult("train -> deploy", 16, 1e-6, 1e-7, 1, 1).to_dict()}],
            "artifacts": [Artifact("onnxruntime", "int8", "onnxruntime/int8/model.onnx", verified="parity",
                                   parity=[ok]).to_dict(),
                          Artifact("coreml", "fp16", "coreml/fp16/model.mlpackage", parity=[trace],
                                   verified="spec-checked (running needs macOS)").to_dict()],
            "failures": [failed.to_dict()]}
    res = ExportResult("demo", tmp_path, None, (), (Failure("openvino", "int8", "verification", failed.error),),
                       (Failure("coreml", "int8", "skipped", "predicts only on macOS"),), ("a note",), data=data)
    p = junit.write([junit.export_suite(res, batch=1)], tmp_path / "e.xml")
    root, cases = _cases(p)
    assert set(cases) == {"deploy form", "onnxruntime int8 batch 1", "openvino int8 batch 1", "coreml int8 batch 1",
                          "coreml fp16 batch 1"}
    # a package that was never run passed no gate: skipped, not green with its source trace's numbers
    assert "no parity gate ran" in cases["coreml fp16 batch 1"].find("skipped").get("message")
    assert "12/16 < 14/16" in cases["openvino int8 batch 1"].find("failure").get("message")
    assert "top-1 agree 15/16 (93.8%)" in cases["onnxruntime int8 batch 1"].find("system-out").text
    assert cases["coreml int8 batch 1"].find("skipped").get("message") == "predicts only on macOS"
    _cases(junit.write([junit.error_suite("export", "no such checkpoint")], tmp_path / "x.xml"))


def test_export_cli_writes_junit(demo_dir):
    root, cases = _cases(demo_dir.parent / "export.xml")
    assert set(cases) == {"deploy form", "onnx export", "onnx fp32 batch 1"} and root.get("failures") == "0"
    assert "16 parity images" in cases["onnx fp32 batch 1"].find("system-out").text


def test_export_cli_writes_a_markdown_summary(demo_dir):
    md = (demo_dir.parent / "export.md").read_text()
    assert md.startswith("**parity gates: PartialNet-custom") and ": passed** (3 case(s), 0 failed" in md
    assert "| onnx fp32 batch 1 | passed | ONNX -&gt; ONNX Runtime fp32 (16 parity images): " in md  # inert text
    assert "top-1 agree 16/16" in md
