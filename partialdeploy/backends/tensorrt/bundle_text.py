"""The two texts of a TensorRT bundle written from its bundle.json: ``build_engine.sh`` (the trtexec build
for whichever TensorRT the device has: 8.5/8.6, 10 or 11) and ``README.txt`` (how to feed the model, what
each file is, how to install and build on the device)."""

from __future__ import annotations

CALIB_CACHE = "calib.cache"
JETPACK_TRTEXEC = "/usr/src/tensorrt/bin"  # where JetPack installs trtexec (not on PATH)
# a profile that builds for each generation: where a "re-export for TensorRT N" hint sends the user
GENERATION_PROFILES = {8: "tensorrt-jetson-orin-trt8-fp16 (Orin, JetPack 5.x/6.0) or tensorrt-jetson-xavier-fp16",
                       10: "tensorrt-jetson-orin-fp16 (JetPack 6.1+)", 11: "tensorrt-server-int8"}
NO_TENSORRT = ("TensorRT comes with JetPack on a Jetson (sudo apt install nvidia-jetpack; trtexec is in "
               f"{JETPACK_TRTEXEC}), elsewhere pip install tensorrt")

# trtexec: $TRTEXEC, else PATH, else JetPack's directory. The version: TRT_MAJOR, else Python's tensorrt,
# else trtexec's banner "[TensorRT v8602]" (8.6.2: major*1000 + minor*100 + patch) or "[TensorRT v100300]"
# (10.3.0: major*10000 + ...), else a "TensorRT version: 8.6.1" line.
_DETECT = f"""trtexec_bin="${{TRTEXEC:-}}"
if [ -z "$trtexec_bin" ]; then
  trtexec_bin=$(command -v trtexec 2>/dev/null || true)
fi
if [ -z "$trtexec_bin" ] && [ -x {JETPACK_TRTEXEC}/trtexec ]; then
  trtexec_bin={JETPACK_TRTEXEC}/trtexec
fi
major="${{TRT_MAJOR:-}}"
if [ -z "$major" ]; then
  major=$(python3 -c 'import tensorrt; print(tensorrt.__version__.split(".")[0])' 2>/dev/null || true)
fi
if [ -z "$major" ] && [ -n "$trtexec_bin" ]; then
  banner=$("$trtexec_bin" --help 2>&1 || true)
  v=$(printf '%s\\n' "$banner" | sed -n 's/.*\\[TensorRT v0*\\([0-9][0-9]*\\)\\].*/\\1/p' | head -n 1)
  if [ -n "$v" ]; then
    if [ "$v" -ge 10000 ]; then major=$((v / 10000)); else major=$((v / 1000)); fi
  else
    major=$(printf '%s\\n' "$banner" | sed -n 's/.*TensorRT version: *\\([0-9][0-9]*\\)\\..*/\\1/p' | head -n 1)
  fi
fi"""


def reexport_hint(major) -> str:
    prof = GENERATION_PROFILES.get(int(major)) if str(major).isdigit() else None
    return f"re-export with --profile {prof} (or a profile with tensorrt: {major})" if prof else ""


def build_script(b: dict) -> str:
    t = b["tensorrt"]
    known = list(b["trtexec_line"])
    lines = ["#!/bin/sh", "# Build the TensorRT engine for this GPU (engines are not portable across GPUs or",
             "# TensorRT versions). Same build through the Python API, with the parity gate:",
             "#   partialdeploy build-engine .",
             "# The precision is in model.onnx: TensorRT 11 builds it as is, 10 with --stronglyTyped, 8.5/8.6",
             "# with the --fp16/--int8 builder flag. TRTEXEC=/path/to/trtexec picks trtexec (default: PATH, then",
             f"# {JETPACK_TRTEXEC}); TRT_MAJOR={'|'.join(known)} overrides the detected version;",
             "# ANY_TENSORRT=1 builds for another generation than the profile's.",
             "set -e", 'cd "$(dirname "$0")"', _DETECT,
             'if [ -z "$major" ]; then',
             f'  echo "found no TensorRT: no python3 tensorrt module and no trtexec (TRTEXEC=, PATH, {JETPACK_TRTEXEC}).'
             f' {NO_TENSORRT}. If trtexec is installed but its version was not detected, set TRT_MAJOR={known[0]}'
             f' (one of {"/".join(known)})" >&2', "  exit 2", "fi"]
    if t["expected"] is not None:
        hints = " ".join(f'{g}) hint="{reexport_hint(g)}";;' for g in GENERATION_PROFILES)
        hints += f' *) hint="no bundle builds with it (TensorRT {", ".join(map(str, GENERATION_PROFILES))})";;'
        lines += [f'if [ "$major" != "{t["expected"]}" ] && [ -z "${{ANY_TENSORRT:-}}" ]; then',
                  f'  hint=""; case "$major" in {hints} esac',
                  f'  case " {" ".join(known)} " in *" $major "*) hint="$hint, or set ANY_TENSORRT=1 to build this'
                  ' bundle anyway";; esac',
                  f'  echo "this bundle was exported for TensorRT {t["expected"]} (profile {t.get("profile") or "given"})'
                  ' but this device has TensorRT $major: ${hint:-re-export for TensorRT $major}" >&2', "  exit 2", "fi"]
    if b["calibration"]:
        lines += [f'if [ ! -f {CALIB_CACHE} ]; then',
                  f'  echo "{CALIB_CACHE} is missing: trtexec cannot calibrate from images. Run'
                  f' \\`partialdeploy build-engine .\\` (calibrates on calib.npy, writes {CALIB_CACHE}) first." >&2',
                  "  exit 2", "fi"]
    lines += ['if [ -z "$trtexec_bin" ]; then',
              f'  echo "trtexec not found (TRTEXEC is unset, not on PATH, not in {JETPACK_TRTEXEC}): set'
              ' TRTEXEC=/path/to/trtexec, or build through the Python API: partialdeploy build-engine ." >&2',
              "  exit 2", "fi", 'case "$major" in']
    for g, line in b["trtexec_line"].items():
        assert line.startswith("trtexec ")
        lines += [f"  {g})", f'    "$trtexec_bin"{line[len("trtexec"):]}', "    ;;"]
    lines += ["  *)", f'    echo "this bundle builds with TensorRT {"/".join(known)}; this device has TensorRT $major:'
              ' re-export it for this TensorRT (TRT_MAJOR overrides a wrong detection)" >&2',
              "    exit 2", "    ;;", "esac"]
    return "\n".join(lines) + "\n"


def _feed(b: dict) -> str:
    i, o, p = b["input"], b["output"], b.get("preprocessing")
    shape = "x".join("N" if d is None else str(d) for d in i["shape"])
    oshape = "x".join("N" if d is None else str(d) for d in o.get("shape") or [])
    text = f"""  input   '{i['name']}' {shape} {i['dtype']}, layout {i.get('layout', 'NCHW')}
  output  '{o['name']}' {oshape} {o['dtype']}, {o.get('meaning', 'logits')}
"""
    if p:
        text += f"""  preprocessing, per image:
    1. decode to {p['color']} (uint8; grey is repeated to 3 channels)
    2. resize the shorter side to {p['resize_shorter_side_to']} ({p['interpolation']})
    3. {p['crop']} crop {p['size'][0]}x{p['size'][1]}
    4. scale by {p['scale']}, subtract mean {p['mean']}, divide by std {p['std']}
    5. HWC -> CHW, {p['dtype']}; stack images into N
"""
    labels = b.get("labels")
    if labels:
        shown = ", ".join(f"{k}={v}" for k, v in enumerate(labels[:10]))
        text += f"  labels  {len(labels)} classes: {shown}{', …' if len(labels) > 10 else ''} (all in bundle.json)\n"
    else:
        text += "  labels  none recorded in the checkpoint: output index = class index\n"
    return text


def readme(b: dict) -> str:
    bb, t = b["batch"], b["tensorrt"]
    gens = "/".join(str(g) for g in t["builds_with"])
    gen = (f"TensorRT {t['expected']} (profile {t.get('profile') or 'given'})" if t["expected"]
           else f"TensorRT {gens}")
    lines = "\n".join(f"  TensorRT {g}:  {line}" for g, line in b["trtexec_line"].items())
    recipe = b["onnx_precision"].get("summary", b["precision"])
    files = "\n".join(f"  {f:<24}{h}" for f, h in b["sha256"].items())
    wheel = b.get("wheel")
    install = (f"  pip install './{wheel}[tensorrt]'   # the partialdeploy wheel carried in this bundle"
               if wheel else "  pip install 'partialdeploy-<version>-py3-none-any.whl[tensorrt]'  # a wheel from make dist "
               "(export --bundle-wheel puts it here)")
    need86 = (((b.get("onnx_check") or {}).get("by_generation") or {}).get("8") or {}).get("needs_8_6") or []
    caveat = (f"TensorRT 8.5 (JetPack 5) cannot parse {', '.join(need86)} (8.6, JetPack 6.0, can): for 8.5 export "
              "with --opset 16.\n" if need86 and 8 in t["builds_with"] else "")
    batch = (f"dynamic, optimization profile min/opt/max = {bb['min']}/{bb['opt']}/{bb['max']}" if b["dynamic_batch"]
             else f"static {bb['opt']}")
    return f"""TensorRT build bundle ({b['model']}, {b['precision']}) from {b['tool']}, for {gen}

TensorRT engines only run on the GPU model and TensorRT version that built them, so the engine is built
on the device from this bundle. Precision recipe: {recipe}; already proven in ONNX Runtime on CPU.
Builds with TensorRT {gens}: 11 as is, 10 with --stronglyTyped, 8.5/8.6 (JetPack 5.x / 6.0) with the
--fp16/--int8 builder flag.
{caveat}
Feeding the model (all of it in bundle.json):
{_feed(b)}
Files (sha256; README.txt and bundle.json are hashed in the export's manifest.json):
{files}

  model.onnx          TensorRT-ready ONNX (opset {(b.get('onnx_check') or {}).get('opset')})
  build_engine.sh     the trtexec build for the installed TensorRT:
{lines}
  infer.py            minimal inference example: numpy + TensorRT (+ cuda-python), no torch
  sample_*.png        parity images as decoded; parity_inputs.npy is them preprocessed and
                      reference_logits.npy the train-form model's logits on them

On the device:

  TensorRT: on a Jetson it comes with JetPack (sudo apt install nvidia-jetpack: python3-libnvinfer and
  trtexec in /usr/src/tensorrt/bin); elsewhere pip install tensorrt. Not pip on a Jetson.
  sh build_engine.sh                  # trtexec build: writes {b['engine']}{' (needs calib.cache from build-engine)' if b['calibration'] else ''}
  pip install numpy pillow cuda-python  # cuda-python for the device's CUDA (JetPack 5: CUDA 11.4 -> 'cuda-python<12')
  python3 infer.py                    # reproduces reference_logits.npy from the sample images (exit 1 if not)
  python3 infer.py photo.jpg          # top-5 classes

  partialdeploy (Python >= 3.10: JetPack 6; a venv with --system-site-packages sees JetPack's TensorRT):
{install}
  partialdeploy build-engine .        # build via the Python API + parity gate, writes {b['engine']} + {b['sidecar']}
  partialdeploy profile .             # latency on the device

Batch: {batch}; workspace {b['workspace_mb']} MB; the timing cache ({b['timing_cache']}) is reused by later
builds on the same device.
"""
