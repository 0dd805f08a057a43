"""The deterministic weight recipe used for the ECA-ResNet fixtures (too large to commit as
safetensors): every tensor is a function of its key name and shape, with integer hashing only (no
torch RNG), so the official code (outside the repository) and our tests fill identical weights.
See tests/fixtures/official/README.md."""
import math
import zlib
import numpy as np

M64 = (1 << 64) - 1


def uniform(key: str, n: int) -> np.ndarray:
    seed = np.uint64(zlib.crc32(key.encode()))
    idx = np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = idx * np.uint64(0x9E3779B97F4A7C15) + seed * np.uint64(0xBF58476D1CE4E5B9) + np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def fill_state_dict(sd: dict) -> dict:
    import torch
    out = {}
    for k, v in sd.items():
        prefix = k.rsplit(".", 1)[0]
        leaf = k.rsplit(".", 1)[-1]
        bn = f"{prefix}.running_var" in sd
        n = v.numel()
        if not v.is_floating_point():
            out[k] = torch.full_like(v, 1000) if leaf == "num_batches_tracked" else v.clone()
            continue
        u = uniform(k, n)
        z = (u - 0.5) * math.sqrt(12.0)
        if bn and leaf == "weight":
            a = 0.5 + u
        elif bn and leaf == "bias":
            a = 0.2 * z
        elif leaf == "running_mean":
            a = 0.3 * z
        elif leaf == "running_var":
            a = 0.4 + 1.6 * u
        elif leaf == "gamma":
            a = 0.5 + u
        elif leaf == "lookup_table_bias":
            a = z
        elif v.dim() >= 2:
            a = z / math.sqrt(max(1, int(np.prod(v.shape[1:]))))
        elif leaf == "weight":  # LayerNorm
            a = 1.0 + 0.3 * z
        else:  # biases of conv / linear / LayerNorm
            a = 0.1 * z
        out[k] = torch.from_numpy(a.reshape(tuple(v.shape))).to(v.dtype)
    return out
