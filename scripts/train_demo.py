"""Train the bundled demo checkpoints: small PartialNets (PAT_ch, PAT_sp and PAT_sf with iRPE, i.e.
every block type) on scikit-learn's handwritten digits (1,797 real 8×8 scans that ship inside the
package), upsampled to 64×64 RGB, all on the same stratified split.

    .venv/bin/python scripts/train_demo.py [--epochs 40]                  # demo: embed 16
    .venv/bin/python scripts/train_demo.py --variant narrow --threads 1   # demo_narrow: embed 8
    .venv/bin/python scripts/train_demo.py --variant wide --threads 1     # demo_wide: embed 20

``demo`` writes partialdeploy/data/{demo.safetensors, demo.json, demo_eval.npz, calib/*.png}; the
other variants write only their checkpoint and ``<name>.json`` (they share the held-out split and the
calibration images). ``wide`` is stored in float16 (0.7 MB instead of 1.5 MB); its accuracy is
measured after that rounding, on the weights as shipped. Deterministic: seeded, deterministic
algorithms, a fixed thread count (`--threads`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from partialdeploy.checkpoint import save_safetensors
from partialdeploy.demo import DATA, DEMO_CALIB, DEMO_CKPT, DEMO_EVAL, EVAL_METADATA_KEY, digits_to_uint8
from partialdeploy.images import preprocess
from partialdeploy.models import build_model
from partialdeploy.spec import ArchSpec

SPEC = ArchSpec(family="partialnet", variant=None, embed_dim=16, depths=(1, 1, 2, 1), act="GELU", n_div=4,
                feature_dim=128, num_classes=10, use_channel_attn=True, use_spatial_attn=True, num_heads=4,
                mean=(0.25, 0.25, 0.25), std=(0.35, 0.35, 0.35), img_size=64, crop_ratio=1.0,
                labels=tuple(str(i) for i in range(10)))
# name -> (embed_dim, stored dtype); every variant keeps the depths and block types of the demo
VARIANTS = {"demo": (16, torch.float32), "narrow": (8, torch.float32), "wide": (20, torch.float16)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--variant", choices=sorted(VARIANTS), default="demo")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (results are reproducible for a given count)")
    args = ap.parse_args()
    embed, dtype = VARIANTS[args.variant]
    spec = dataclasses.replace(SPEC, embed_dim=embed)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    d = load_digits()
    imgs = digits_to_uint8(d.images)
    tr_i, te_i = train_test_split(np.arange(len(imgs)), test_size=0.2, random_state=args.seed, stratify=d.target)
    pre = lambda ims: torch.from_numpy(np.stack([preprocess(im, spec.img_size, spec.mean, spec.std, spec.crop_ratio)
                                                 for im in ims]))
    xtr, ytr = pre(imgs[tr_i]), torch.from_numpy(d.target[tr_i])
    xte, yte = pre(imgs[te_i]), torch.from_numpy(d.target[te_i])
    model = build_model(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.02)
    steps = args.epochs * ((len(xtr) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    t0 = time.time()
    for ep in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 64):
            idx = perm[i:i + 64]
            x = xtr[idx]
            # augmentation: random shift by up to 6 px, small brightness jitter
            dx, dy = np.random.randint(-6, 7, 2)
            x = torch.roll(x, shifts=(int(dy), int(dx)), dims=(2, 3))
            x = x * (1 + 0.1 * torch.randn(len(x), 1, 1, 1))
            loss = F.cross_entropy(model(x), ytr[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print(f"epoch {ep + 1}/{args.epochs} loss {loss.item():.3f} test acc {100 * acc:.2f}% "
              f"({time.time() - t0:.0f}s)")
    model.eval()
    if dtype != torch.float32:  # stored rounded: measure the weights as shipped
        model.load_state_dict({k: v.to(dtype).to(v.dtype) for k, v in model.state_dict().items()})
    with torch.no_grad():
        acc = (model(xte).argmax(1) == yte).float().mean().item()
    DATA.mkdir(exist_ok=True)
    ckpt = DEMO_CKPT if args.variant == "demo" else DATA / f"demo_{args.variant}.safetensors"
    save_safetensors(model.to(dtype), spec, ckpt)
    # re-open to add the eval marker in the metadata
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    with safe_open(str(ckpt), "pt") as f:
        meta = dict(f.metadata())
    meta[EVAL_METADATA_KEY] = "digits-test"
    save_file(load_file(str(ckpt)), str(ckpt), metadata=meta)
    if args.variant == "demo":  # the held-out split and calibration images, shared by every variant
        np.savez_compressed(DEMO_EVAL, images=imgs[te_i], labels=d.target[te_i], index=te_i)
        DEMO_CALIB.mkdir(exist_ok=True)
        for old in DEMO_CALIB.glob("*.png"):
            old.unlink()
        rng = np.random.default_rng(args.seed)
        for j, i in enumerate(sorted(rng.choice(tr_i, 100, replace=False))):
            Image.fromarray(imgs[i]).save(DEMO_CALIB / f"digit_{j:03d}_label{d.target[i]}.png")
    info = {"dataset": "scikit-learn load_digits (1,797 8x8 scans), stratified 80/20 split, seed "
                       f"{args.seed}", "train_images": len(tr_i), "test_images": len(te_i),
            "test_accuracy": round(acc, 4), "test_correct": int(round(acc * len(te_i))), "epochs": args.epochs,
            "train_seconds": round(time.time() - t0, 1), "torch": torch.__version__, "threads": args.threads,
            "spec": spec.to_dict(),
            "params": sum(p.numel() for p in model.parameters()), "stored_dtype": str(dtype).replace("torch.", ""),
            "bytes": ckpt.stat().st_size}
    (DATA / f"{ckpt.stem}.json").write_text(json.dumps(info, indent=2) + "\n")
    print(json.dumps({k: v for k, v in info.items() if k != "spec"}, indent=2))


if __name__ == "__main__":
    main()
