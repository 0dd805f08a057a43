"""Accuracy of every artifact of an export on a labelled held-out set, written beside its manifest as
``accuracy.json`` (schema ``partialdeploy.accuracy/1``, one record per artifact sha256). The export
measures accuracy only for INT8 (its gate); a sweep measures every cell so that fp32, fp16 and INT8
of every variant are compared on the same images.

Each artifact is verified against its manifest and opened through its runtime's runner with the
options its manifest records, as the export gate did; the train form's accuracy on the same images is
the reference (the accuracy drop of a candidate).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from partialdeploy.planner.candidates import ACCURACY, ACCURACY_SCHEMA


@dataclass
class LabelledSet:
    images: object  # np.ndarray, preprocessed for the checkpoint
    labels: object  # np.ndarray of class indices
    name: str  # e.g. "360 held-out test images (demo digits)"
    reference_accuracy: float  # the fp32 train form's accuracy on it


def labelled_set(checkpoint: Path, eval_dir: Path | None) -> LabelledSet | None:
    """The labelled images of a checkpoint: ``eval_dir`` (one folder per class) or, for the bundled demo
    checkpoints, their held-out digits; None when there is neither. Loads the checkpoint safely."""
    from partialdeploy import demo
    from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec
    from partialdeploy.reparam import torch_logits

    ckpt = load_checkpoint(Path(checkpoint))
    spec, _ = resolve_spec(ckpt)
    if eval_dir is not None:
        from partialdeploy.images import load_labelled_folder

        x, y, _, _ = load_labelled_folder(eval_dir, spec.img_size, spec.mean, spec.std, spec.crop_ratio,
                                          labels=spec.labels)
        name = f"{len(y)} labelled images of {Path(eval_dir).name}"
    elif demo.is_demo(ckpt.metadata):
        x, y = demo.eval_set(spec)
        name = f"{len(y)} held-out test images"
    else:
        return None
    ref = torch_logits(load_model(ckpt, spec), x, batch=64)
    return LabelledSet(x, y, name, float((ref.argmax(1) == y).mean()))


def measure_export(export_dir: Path, data: LabelledSet) -> list[dict]:
    """Run every artifact of ``export_dir`` that this machine can run on ``data``; write and return the
    records (atomically; an artifact its runtime cannot run here gets no record)."""
    from partialdeploy import backends
    from partialdeploy.safety import write_json_atomic
    from partialdeploy.verification import runner_logits
    from partialdeploy.integrity import verified_export

    _, base, arts = verified_export(Path(export_dir))
    records = []
    for a in arts:
        cls = backends.backend_of_target(a.target).runner_class()
        if not cls.is_available():
            continue
        with cls(base / a.path, **cls.artifact_options(a, "latency")) as r:
            logits = runner_logits(r)(data.images)
        records.append({"sha256": a.sha256, "target": a.target, "precision": a.precision, "path": a.path,
                        "accuracy": float((logits.argmax(1) == data.labels).mean()), "n": int(len(data.labels)),
                        "set": data.name, "reference_accuracy": data.reference_accuracy})
    write_json_atomic(Path(export_dir) / ACCURACY,
                      json.dumps({"schema": ACCURACY_SCHEMA, "records": records}, indent=1) + "\n")
    return records
