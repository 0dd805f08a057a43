"""The gates judge on the user's images where they exist: --check-images DIR, else one in five of
--calib held out of calibration (never calibrated on), else the demo's digits, else stock photos —
named as a fallback. Recorded in the manifest."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from partialdeploy.exporting import check_images
from partialdeploy.errors import UserError

SPEC = SimpleNamespace(img_size=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_ratio=1.0)


def _folder(path, n, seed=0):
    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path / f"{i:03d}.png")
    return path


def test_held_out_of_calib_never_calibrated_on(tmp_path):
    calib = _folder(tmp_path / "calib", 100)
    a = check_images.choose(SPEC, check_dir=None, calib_dir=calib, user_calib=True, is_demo=False, demo_x=None,
                            stock_n=16)
    assert a.record["source"] == "held out of --calib" and a.record["count"] == 20 == len(a.x)
    held = {calib / f for f in a.record["files"]}
    assert len(a.calib_files) == 80 and not held & set(a.calib_files) and held | set(a.calib_files) == set(
        calib.iterdir())
    assert "20 of your --calib images held out of calibration" in a.source and not a.notes
    b = check_images.choose(SPEC, check_dir=None, calib_dir=calib, user_calib=True, is_demo=False, demo_x=None,
                            stock_n=16)
    assert b.record["sha256"] == a.record["sha256"]  # the same folder and seed: the same held-out set


def test_few_calib_images_fall_back_to_stock_photos_and_say_so(tmp_path):
    calib = _folder(tmp_path / "calib", 30)
    c = check_images.choose(SPEC, check_dir=None, calib_dir=calib, user_calib=True, is_demo=False, demo_x=None,
                            stock_n=16)
    assert c.calib_files is None and c.record["source"] == "stock photographs (fallback)" and len(c.x) == 16
    assert "has 30 image(s), too few to hold 16 out" in c.notes[0] and "--check-images DIR" in c.notes[0]
    assert "(fallback)" in c.source


def test_check_images_dir_wins(tmp_path):
    mine = _folder(tmp_path / "mine", 70)
    d = check_images.choose(SPEC, check_dir=mine, calib_dir=_folder(tmp_path / "calib", 100), user_calib=True,
                            is_demo=False, demo_x=None, stock_n=16)
    assert d.record["source"] == "--check-images" and d.record["count"] == check_images.MAX_CHECK
    assert d.calib_files is None  # nothing is taken from the calibration set
    with pytest.raises(UserError, match="is not a folder"):
        check_images.choose(SPEC, check_dir=tmp_path / "nope", calib_dir=None, user_calib=False, is_demo=False,
                            demo_x=None, stock_n=16)
    with pytest.raises(UserError, match="holds no images"):
        check_images.choose(SPEC, check_dir=_folder(tmp_path / "empty", 0), calib_dir=None, user_calib=False,
                            is_demo=False, demo_x=None, stock_n=16)


def test_export_records_and_says_what_it_checked_on(tmp_path):
    from partialdeploy.cli import app

    mine = _folder(tmp_path / "mine", 20)
    out = tmp_path / "d"
    r = CliRunner().invoke(app, ["export", "-o", str(out), "--check-images", str(mine)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["check_images"]["source"] == "--check-images" and m["check_images"]["count"] == 20
    assert f"20 parity images (your images (--check-images {mine}))" in r.output
    parity = m["artifacts"][0]["parity"][-1]
    assert parity["n"] == 20 and "top-1 20/20" in r.output


def test_diff_defaults_to_the_images_the_export_was_checked_on(tmp_path):
    """`diff CKPT EXPORT` without --images compares on what the export's gates judged on; once those
    files change, it says so and uses the default images."""
    from partialdeploy import demo
    from partialdeploy.cli import app

    mine = _folder(tmp_path / "mine", 12, seed=3)
    out = tmp_path / "d"
    r = CliRunner().invoke(app, ["export", "--target", "onnx", "-o", str(out), "--check-images", str(mine)])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["diff", str(demo.DEMO_CKPT), str(out), "--count", "5", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["images"] == 5 and res["image_source"] == f"5 of the images the export was checked on ({mine})"
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(mine / "003.png")  # the user's folder changed
    r = CliRunner().invoke(app, ["diff", str(demo.DEMO_CKPT), str(out), "--count", "5", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["image_source"] == "5 held-out demo digits"
    assert any("have changed since" in n for n in res["notes"]), res["notes"]

