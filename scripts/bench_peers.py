"""The peers ``make bench`` times beside our artifacts (scripts/bench.py), and the goal table that
compares us with them per precision class.

A peer is what a user who cares about speed builds from the naive ``torch.onnx.export`` of the train
form with each runtime's own documented tools and their defaults:

  naive ORT          the file in ONNX Runtime                                            (fp32)
  naive OV f32       the file in OpenVINO, INFERENCE_PRECISION_HINT=f32                  (fp32)
  naive OV default   the file in OpenVINO with its default hints: on a CPU with bf16 units the plugin
                     computes in bf16 — the precision is read back and decides the row's class
  naive NNCF OV      ``nncf.quantize`` (defaults) of the converted file, compiled with default hints (int8)
  naive ORT QDQ      ``quant_pre_process`` + ``quantize_static`` (defaults: QDQ, U8S8, per-tensor) (int8)

A peer that fails to build (NNCF has crashed on the naive T0) has no row; the goal table reports it
as a win for us ("peer crashed"), with the error.
"""

from __future__ import annotations

from pathlib import Path

# our rows per precision class, and the goal: our best / the best peer of the class
OURS = {"fp32": ("ours ORT", "ORT target fp32", "OV f32"), "bf16": ("OV bf16",), "int8": ("ORT int8", "OV int8")}
PEER_ROWS = ("naive ORT", "naive OV f32", "naive OV default", "naive NNCF OV", "naive ORT QDQ")
PEER_GOAL = 0.85
ONNX_GOAL = 0.95  # our ONNX in ONNX Runtime against the naive file in ONNX Runtime


# ---------------------------------------------------------------- the CPU

def cpu_flags(text: str | None = None) -> set[str]:
    """The flags of /proc/cpuinfo (empty when unknown)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[1].split()) if ":" in line else set()


def cpu_class(flags: set[str]) -> str:
    """AMX / AVX-512 VNNI / AVX-512 / AVX2 + VNNI / AVX2 / older: what decides the precision levers."""
    if flags & {"amx_int8", "amx_bf16"}:
        return "AMX"
    if "avx512_vnni" in flags:
        return "AVX-512 VNNI"
    if "avx512f" in flags:
        return "AVX-512"
    if "avx_vnni" in flags:
        return "AVX2 + AVX-VNNI"
    return "AVX2" if "avx2" in flags else "pre-AVX2"


def judgeable(flags: set[str]) -> dict[str, str | None]:
    """Per precision class: None when this CPU can judge the goal, else why not."""
    bf16 = bool(flags & {"avx512_bf16", "amx_bf16"})
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    return {"fp32": None,
            "bf16": None if bf16 else "no bf16 units (avx512_bf16/AMX): bf16 does not run here",
            "int8": None if vnni else ("no VNNI/AMX: int8 runs on AVX2 multiply-adds, the goal assumes int8 "
                                       "dot products")}


# ---------------------------------------------------------------- runtimes, as the bench opens them

def ort_session(path, threads: int, level: str = "all"):
    """ONNX Runtime, this many threads, worker threads not spinning (they would steal the cores from
    whatever runs next). Returns (fn, "f32")."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                   "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return (lambda x: s.run(None, {name: x})[0]), "f32"


def ov_compiled(path, threads: int, config: dict | None = None):
    """OpenVINO CPU, latency hint, this many threads, INFERENCE_PRECISION_HINT=f32 unless ``config``
    says otherwise. Returns (fn, the precision the compiled model computes in, read back)."""
    import openvino as ov

    from partialdeploy.backends.openvino.runner import hint_name

    cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32",
           **(config or {})}
    c = ov.Core().compile_model(str(path), "CPU", cfg)
    req = c.create_infer_request()
    out = c.outputs[0]
    return (lambda x: req.infer({0: x}, share_inputs=True)[out]), hint_name(c.get_property("INFERENCE_PRECISION_HINT"))


# ---------------------------------------------------------------- building the peers

def ov_default(path, threads: int):
    """The file compiled as an OpenVINO user would: default hints (latency, this many threads).
    Returns (fn, precision the plugin computes in, read back)."""
    import openvino as ov

    from partialdeploy.backends.openvino.runner import hint_name

    c = ov.Core().compile_model(str(path) if not hasattr(path, "get_ops") else path, "CPU",
                                {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    req = c.create_infer_request()
    out = c.outputs[0]
    return (lambda x: req.infer({0: x}, share_inputs=True)[out]), hint_name(c.get_property("INFERENCE_PRECISION_HINT"))


def nncf_peer(path, calib, threads: int, save: Path | None = None):
    """``nncf.quantize`` with its defaults on the converted naive file, compiled with default hints
    (and saved as an IR at ``save``, for the per-layer breakdown). Returns (fn, "i8+<float precision>")
    or raises whatever NNCF raises."""
    import contextlib
    import io
    import logging

    import nncf
    import numpy as np
    import openvino as ov

    model = ov.convert_model(str(path))
    shape = model.inputs[0].get_partial_shape()
    bs = shape[0].get_length() if shape[0].is_static else 1
    calib = np.asarray(calib, np.float32)
    batches = [calib[i:i + bs] for i in range(0, len(calib) - bs + 1, bs)] or [np.resize(calib, (bs, *calib.shape[1:]))]
    log = logging.getLogger("nncf")
    old = log.level
    log.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            q = nncf.quantize(model, nncf.Dataset(batches), subset_size=len(batches))
    finally:
        log.setLevel(old)
    if save is not None:
        ov.save_model(q, str(save))
    fn, prec = ov_default(q, threads)
    return fn, "i8+" + prec


def ort_qdq_peer(path, calib, out: Path, threads: int):
    """ONNX Runtime's documented static quantization with its defaults (``quant_pre_process``, then
    ``quantize_static``: QDQ, uint8 activations, int8 per-tensor weights, MinMax) of the naive file.
    Returns (fn, "i8+f32", the quantized file)."""
    import numpy as np
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, quant_pre_process, quantize_static

    from partialdeploy.backends.target import quiet

    inp = onnx.load(str(path), load_external_data=False).graph.input[0]
    name, bs = inp.name, inp.type.tensor_type.shape.dim[0].dim_value or 1
    calib = np.asarray(calib, np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([calib[i:i + bs] for i in range(0, len(calib) - bs + 1, bs)]
                           or [np.resize(calib, (bs, *calib.shape[1:]))])

        def get_next(self):
            b = next(self.it, None)
            return None if b is None else {name: np.ascontiguousarray(b)}

    pre, q = Path(out).with_suffix(".pre.onnx"), Path(out)
    with quiet():
        quant_pre_process(str(path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(q), Reader())
    pre.unlink(missing_ok=True)
    fn, _ = ort_session(q, threads)
    return fn, "i8+f32", q


def build_peers(naive: Path, calib, threads: int, say) -> tuple[dict, dict]:
    """{row: (fn, computes, onnx file or None)} of every peer that builds, and {row: error} of those
    that did not (each is reported; a crash is a win for us)."""
    rows, failed = {}, {}
    rows["naive ORT"] = (*ort_session(naive, threads), naive)
    rows["naive OV f32"] = (*ov_compiled(naive, threads), naive)
    rows["naive OV default"] = (*ov_default(naive, threads), None)
    nncf_ir = naive.with_name("naive_nncf.xml")
    for label, build in (("naive NNCF OV", lambda: (*nncf_peer(naive, calib, threads, nncf_ir), None)),
                         ("naive ORT QDQ", lambda: ort_qdq_peer(naive, calib, naive.with_name("naive_qdq.onnx"),
                                                                threads))):
        try:
            rows[label] = build()
        except Exception as e:  # a peer's own tool failing on the naive file: reported, counted as our win
            msg = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"[:200]
            failed[label] = msg
            say(f"  peer {label} failed to build: {msg}")
    return rows, failed


# ---------------------------------------------------------------- the goal table

CONFIDENCE = 0.95


def median_interval(values, conf: float = CONFIDENCE) -> tuple[float, float, float]:
    """(low, high, coverage): the distribution-free interval for the median of ``values`` — the k-th
    smallest and k-th largest, k the largest with P(Binomial(n, 1/2) < k) <= (1 - conf) / 2. With fewer
    than 6 values no such k exists: the interval is (min, max) and its coverage, 1 - 2^(1-n), is said."""
    import math

    v = sorted(values)
    n = len(v)
    k, tail = 1, 0.0
    for j in range(1, n // 2 + 1):  # tail = P(B <= j - 1)
        t = sum(math.comb(n, i) for i in range(j)) / 2 ** n
        if t > (1 - conf) / 2:
            break
        k, tail = j, t
    if tail == 0.0:
        tail = 1 / 2 ** n
    return v[k - 1], v[n - k], 1 - 2 * tail


def paired(rows: dict, mine: str, peer: str, goal: float) -> dict | None:
    """Our row over the peer's, round by round (both timed in the same cycle of blocks): the median
    ratio, its interval, how many rounds met the goal, and the verdict the interval allows — "met"
    when even its high end is within the goal, "MISS" when even its low end is over, else "within
    noise". None without per-round times for both rows (at least 3 rounds)."""
    a, b = rows[mine].get("rounds_ms"), rows[peer].get("rounds_ms")
    if not a or not b or len(a) != len(b) or len(a) < 3:
        return None
    import statistics

    r = [x / y for x, y in zip(a, b)]
    lo, hi, cover = median_interval(r)
    verdict = "met" if hi <= goal else "MISS" if lo > goal else "within noise"
    return {"median": statistics.median(r), "low": lo, "high": hi, "coverage": cover, "rounds": len(r),
            "rounds_met": sum(x <= goal for x in r), "verdict": verdict}

def row_class(label: str, computes: str) -> str | None:
    """The precision class of a row, from what it computes (read back from the runtime)."""
    if computes.startswith("i8") or label.endswith("int8") or label in ("naive NNCF OV", "naive ORT QDQ"):
        return "int8"
    return {"bf16": "bf16", "f32": "fp32"}.get(computes)


def peer_goals(variant: str, batch: int, rows: dict, failed: dict, flags: set[str]) -> list[dict]:
    """One record per precision class (+ "ours ONNX in ORT"): our best row, the best peer of the class,
    the ratio and whether the goal is met, a peer crash, or not judged on this CPU.
    ``rows``: {label: {"ms": ..., "computes": ...}} as measured in one cycle."""
    why_not = judgeable(flags)
    out = []
    for cls, ours in OURS.items():
        mine = [(rows[k]["ms"], k) for k in ours if k in rows and row_class(k, rows[k]["computes"]) == cls]
        peers = [(rows[k]["ms"], k) for k in PEER_ROWS if k in rows and row_class(k, rows[k]["computes"]) == cls]
        crashed = sorted(k for k in failed if row_class(k, "") == cls)
        rec = {"variant": variant, "batch": batch, "class": cls, "ours": None, "peer": None, "ratio": None,
               "goal": PEER_GOAL, "crashed": {k: failed[k] for k in crashed}, "judged": why_not[cls] is None,
               "why_not": why_not[cls]}
        if mine:
            rec["ours_ms"], rec["ours"] = min(mine)
        if peers:
            rec["peer_ms"], rec["peer"] = min(peers)
        if mine and peers:
            rec["ratio"] = rec["ours_ms"] / rec["peer_ms"]
            rec["cpu_ratio"] = _cpu_ratio(rows, [k for _, k in mine], [k for _, k in peers])
            rec["paired"] = paired(rows, rec["ours"], rec["peer"], PEER_GOAL)
        if not mine:
            rec["verdict"] = "not measured" if why_not[cls] is None else "not on this CPU"
        elif not peers:
            rec["verdict"] = "win (every peer crashed)" if crashed else "no peer ran"
        else:
            rec["verdict"] = _verdict(rec["ratio"], rec["paired"], PEER_GOAL)
        if rec["ratio"] is not None and not rec["judged"]:
            rec["verdict"] += " (not judged here)"
        out.append(rec)
    if "ours ORT" in rows and "naive ORT" in rows:
        r = rows["ours ORT"]["ms"] / rows["naive ORT"]["ms"]
        p = paired(rows, "ours ORT", "naive ORT", ONNX_GOAL)
        out.append({"variant": variant, "batch": batch, "class": "ONNX in ORT", "ours": "ours ORT",
                    "peer": "naive ORT", "ratio": r, "goal": ONNX_GOAL, "crashed": {}, "judged": True,
                    "cpu_ratio": _cpu_ratio(rows, ["ours ORT"], ["naive ORT"]), "paired": p,
                    "why_not": None, "verdict": _verdict(r, p, ONNX_GOAL)})
    return out


def _verdict(ratio: float, pair: dict | None, goal: float) -> str:
    """From the paired interval when the rounds were kept (met / MISS / within noise), else from the
    ratio of the medians alone."""
    if pair is not None:
        return pair["verdict"]
    return "met" if ratio <= goal else "MISS"


def _cpu_ratio(rows: dict, mine: list, peers: list) -> float | None:
    """Our least process CPU time per inference over the peers' least (the work done: on a loaded
    machine the wall time also holds the time the runtime's threads waited for a core)."""
    a = [rows[k]["cpu_ms"] for k in mine if rows[k].get("cpu_ms")]
    b = [rows[k]["cpu_ms"] for k in peers if rows[k].get("cpu_ms")]
    return min(a) / min(b) if a and b else None


def print_peer_goals(goals: list[dict], flags: set[str]) -> None:
    print(f"\nGoals against the peers (issue: ours ≤ {PEER_GOAL} × the best peer of the same precision class, "
          f"our ONNX in ONNX Runtime ≤ {ONNX_GOAL} × naive), CPU class {cpu_class(flags)}:")
    for cls, why in judgeable(flags).items():
        print(f"  {cls}: {'judged on this CPU' if why is None else 'NOT judged here — ' + why}")
    print("  ratio: of the median times; paired: the median of the round-by-round ratios and its "
          f"distribution-free {CONFIDENCE:.0%} interval (met: all of it within the goal; MISS: all of it over)")
    print("  floor: the model's FLOPs at the rate of a 1×1-conv chain (an estimate; '-' when a row beat it); "
          "arith: our time if only our convolutions and matrix products took any (per-layer counters), "
          "both over the peer's time")
    print(f"  {'model':5} {'b':>2} {'class':11} {'ratio':>7} {'paired [interval]':>22} {'goal':>6} {'floor':>6} "
          f"{'arith':>6} {'CPU ratio':>9}  {'verdict':26} ours / best peer (by wall time)")
    for g in goals:
        r = "-" if g["ratio"] is None else f"{g['ratio']:.3f}"
        p = g.get("paired")
        pr = "-" if not p else f"{p['median']:.3f} [{p['low']:.2f}–{p['high']:.2f}]"
        f = f"{g['floor']:.2f}" if g.get("floor") is not None else "-"
        ar = f"{g['arith_bound']:.2f}" if g.get("arith_bound") is not None else "-"
        c = f"{g['cpu_ratio']:.3f}" if g.get("cpu_ratio") is not None else "-"
        pair = f"{g['ours'] or '-'} / {g['peer'] or '-'}"
        if g["crashed"]:
            pair += "; crashed: " + "; ".join(f"{k} ({v[:90]})" for k, v in g["crashed"].items())
        print(f"  {g['variant'].upper():5} {g['batch']:>2} {g['class']:11} {r:>7} {pr:>22} ≤{g['goal']:.2f} {f:>6} "
              f"{ar:>6} {c:>9}  {g['verdict']:26} {pair}")
