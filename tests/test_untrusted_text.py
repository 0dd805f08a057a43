"""Issue 12 §5: untrusted text stays text: HTML report escaping, YAML profiles (safe loader, bounded
size and alias expansion), report/compare refuse JSON of another schema or shape with exit 2."""

import json
import re
import time
from html.parser import HTMLParser

import pytest

from conftest import run_cli
from partialdeploy.report import schema
from partialdeploy.report.html import to_html
from partialdeploy.report.markdown import to_markdown
from partialdeploy.errors import UserError
from partialdeploy.profiles import load_profile

EVIL = ['<script>alert(1)</script>', '"><img src=x onerror=alert(1)>', "'><svg/onload=alert(1)>",
        "</title><iframe src=javascript:alert(1)>", "a|b\n# heading", "&lt;script&gt;"]


def hostile_report(evil: str) -> dict:
    lat = {"p50": 1.0, "p90": 1.2, "p99": 1.5, "mean": 1.1, "std": 0.1, "min": 0.9, "max": 2.0}
    res = {"target": evil, "runtime": evil, "precision": evil, "batch": 1, "status": "ok", "latency_ms": lat,
           "throughput_ips": 900.0, "load_time_s": 0.1, "first_inference_ms": 2.0, "runs": 10, "cv": 0.3,
           "samples_ms": [1.0, 1.1, 0.9, 2.0], "warnings": [evil], "memory": {"peak_rss_mb": 100.0},
           "device": evil, "artifact": evil,
           "layers": {"total_ms": 1.0, "batch": 1, "layer_count": 2, "source": evil,
                      "blocks": [{"block": evil, "time_ms": 0.5, "pct": 50.0}],
                      "top": [{"name": evil, "op": evil, "block": evil, "time_ms": 0.5, "pct": 50.0}]}}
    other = {"target": evil, "precision": evil, "batch": 8, "status": evil, "reason": evil}
    res2 = {**res, "batch": 8, "throughput_ips": 2000.0}
    return {"schema": schema.SCHEMA, "device": evil, "created": evil, "model": {"name": evil},
            "settings": {"mode": evil, "blocks": evil, "runs": evil, "min_time_s": evil},
            "environment": {"cpu": {"model": evil, "logical_cores": evil}, "gpus": [{"name": evil}], "os": evil,
                            "python": evil, "threads": evil, "runtimes": {evil: evil}},
            "results": [res, res2, other]}


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.attrs = set(), set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        self.attrs |= {k for k, _ in attrs}


@pytest.mark.parametrize("evil", EVIL)
def test_every_string_in_the_html_report_is_escaped(evil):
    page = to_html(schema.validate(hostile_report(evil)))
    p = _Tags()
    p.feed(page)
    assert p.tags <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "b", "ul", "li", "table",
                      "tr", "th", "td", "svg", "rect", "text", "line", "circle", "path"}, p.tags
    assert not [a for a in p.attrs if a.startswith("on")] and "<script" not in page and "<img" not in page
    assert "javascript:" not in page.replace("javascript:alert(1)&gt;", "") or "<iframe" not in page


@pytest.mark.parametrize("evil", EVIL)
def test_markdown_report_is_inert(evil):
    md = to_markdown(schema.validate(hostile_report(evil)))
    assert "<script" not in md and "<img" not in md and "<svg" not in md and "<iframe" not in md
    lines = md.splitlines()
    h = next(i for i, ln in enumerate(lines) if "| p50 ms |" in ln)
    rows = [ln for ln in lines[h + 2:] if ln.startswith("|")][:2]  # the summary table's data rows

    def cells(ln):
        return len(re.split(r"(?<!\\)\|", ln))  # unescaped pipes only
    assert len(rows) == 2 and all(cells(ln) == cells(lines[h]) for ln in rows), rows  # no injected columns


@pytest.mark.parametrize("name,content,expect", [
    ("python object tag", "target: !!python/object/apply:os.system ['touch {marker}']\n", "cannot read profile"),
    ("python name tag", "target: !!python/name:os.system\n", "cannot read profile"),
    ("billion laughs", "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
     "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
     "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\nh: [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]\n",
     "expands to more"),
    ("recursive alias", "tolerances: &t {fp32: *t}\n", "expands to more"),
    ("huge file", "description: '" + "x" * (70 << 10) + "'\n", "larger than"),
    ("not utf-8", b"target: \xff\xfe\n", "cannot read profile"),
    ("deep nesting", "a: " + "[" * 5000 + "]" * 5000 + "\n", "cannot read profile|expands to more"),
])
def test_hostile_yaml_profiles_refused(name, content, expect, tmp_path):
    marker = tmp_path / "pwned"
    f = tmp_path / "p.yaml"
    if isinstance(content, bytes):
        f.write_bytes(content)
    else:
        f.write_text(content.replace("{marker}", str(marker)))
    t0 = time.monotonic()
    with pytest.raises(UserError, match=expect):
        load_profile(f)
    assert time.monotonic() - t0 < 5 and not marker.exists()


def test_yaml_anchors_within_bounds_still_work(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("target: onnxruntime\ntolerances:\n  fp32: &t {rel_max: 0.001}\n  fp16: *t\n")
    assert load_profile(f)["tolerances"]["fp16"] == {"rel_max": 0.001}


def _exit2(r):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1, r.stderr
    return r.stderr


@pytest.mark.parametrize("name,content,expect", [
    ("a manifest", {"schema": "partialdeploy.manifest/1", "artifacts": []}, "has schema"),
    ("a future schema", {"schema": "partialdeploy.profile/9", "results": []}, "upgrade"),
    ("no schema", {"results": []}, "no schema"),
    ("a list", [1, 2, 3], "no schema"),
    ("results not a list", {"schema": schema.SCHEMA, "results": {"a": 1}}, "no results list"),
    ("result not a mapping", {"schema": schema.SCHEMA, "results": [1]}, "malformed"),
    ("latency as text", {"schema": schema.SCHEMA, "results": [{"status": "ok", "batch": 1, "target": "x",
                                                          "latency_ms": {"p50": "fast"}}]}, "malformed"),
    ("batch as text", {"schema": schema.SCHEMA, "results": [{"status": "ok", "batch": "1; rm -rf /"}]}, "malformed"),
    ("NaN latency", {"schema": schema.SCHEMA, "results": [{"status": "ok", "batch": 1, "latency_ms": {
        "p50": float("nan"), "p90": 1, "p99": 1, "mean": 1, "std": 0, "min": 1, "max": 1}}]}, "malformed"),
])
def test_report_and_compare_refuse_json_of_another_schema(name, content, expect, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    good = tmp_path / "good.json"
    good.write_text(json.dumps(hostile_report("ok")))
    assert expect in _exit2(run_cli("report", bad))
    assert expect in _exit2(run_cli("report", "compare", good, bad))
    assert expect in _exit2(run_cli("report", "compare", bad, good))


def test_report_refuses_unreadable_json(tmp_path):
    for content in (b"{", b"\xff\xfe", b"[" * 100000 + b"]" * 100000):
        f = tmp_path / "r.json"
        f.write_bytes(content)
        _exit2(run_cli("report", f))
