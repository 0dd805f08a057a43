"""PyTorch eager runner: wraps any ``torch.nn.Module`` (train-form or deploy-form baselines) or a
TorchScript file, so eager PyTorch can be profiled next to the exported artifacts.

    TorchRunner(module=model, input_shape=(1, 3, 224, 224)).load()
    open_runner("model.ts", target="torch")  # torch.jit.load

Options: ``module``, ``input_shape`` (default (None, 3, 224, 224): batch dynamic),
``input_name`` ("input"), ``output_name`` ("logits"), ``profile_layers`` (per-block times: for a
model built here, between the boundaries its family names; else forward hooks on modules named like
``stages.N.blocks.M``), ``taps`` (every block boundary as an
extra output: forward hooks on the modules the model's family names, ``Family.tap_modules``).
"""

from __future__ import annotations

import re
import time

import numpy as np

from partialdeploy.errors import RuntimeUnavailable, UserError, first_line
from partialdeploy.backends.runner import BOUNDARY_TAPS, LAYER_TIMES, Runner, TensorMeta

_BLOCKISH = re.compile(r"^(stages|layers|features)\.\d+(\.blocks\.\d+)?$|^(patch_embed|stem|head|avgpool_pre_head|"
                       r"classifier)$")


class TorchRunner(Runner):
    name = "torch"
    layer_source = "forward hooks"
    capabilities = frozenset({LAYER_TIMES, BOUNDARY_TAPS})
    _taps: dict = {}
    requires = ("torch",)
    dist = "torch"

    def load(self) -> "TorchRunner":
        try:
            import torch
        except ImportError as e:
            raise RuntimeUnavailable("the PyTorch runner needs torch: pip install torch") from e
        t0 = time.perf_counter()
        module = self.options.get("module")
        if module is None:
            if self.path is None or not self.path.exists():
                raise UserError(f"TorchRunner needs module= or an existing TorchScript file, got {self.path}")
            try:
                module = torch.jit.load(str(self.path), map_location="cpu")
            except Exception as e:
                if _is_checkpoint(self.path):
                    raise UserError(f"{self.path} is a training checkpoint (weights), not a TorchScript module: "
                                    f"export it first (`partialdeploy export {self.path} -o dist/`) and profile "
                                    "the export (`partialdeploy profile dist/`)") from None
                raise UserError(f"cannot load {self.path} as TorchScript: {first_line(e, 200)}") from e
        if not isinstance(module, torch.nn.Module):
            raise UserError(f"TorchRunner needs a torch.nn.Module, got {type(module).__name__}")
        self.module = module.eval()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        self._torch = torch
        self.load_time_s = time.perf_counter() - t0
        self._hooks = []
        self._acc: dict[str, float] = {}
        self._runs = 0
        if self.options.get("profile_layers"):
            if getattr(self.module, "spec", None) is not None:
                self._install_block_clock()
            else:
                self._install_hooks()
        if self.options.get("taps"):
            self._install_taps()
        return self

    def _install_block_clock(self) -> None:
        """Per-block times of a model built here: a clock read when the forward starts and when each
        boundary the model's family names is reached; a block's time is the time since the boundary
        before it (the head: until the forward returns), so every layer of every family is counted."""
        from partialdeploy import families
        from partialdeploy.analysis.blocknames import HEAD

        marks: list[tuple[str, float]] = []

        def start(_m, _i):
            marks.clear()
            marks.append(("", time.perf_counter()))

        def done(_m, _i, _o):
            marks.append((HEAD, time.perf_counter()))
            for (_, t0), (name, t1) in zip(marks, marks[1:]):
                self._acc[name] = self._acc.get(name, 0.0) + (t1 - t0)

        self._hooks.append(self.module.register_forward_pre_hook(start))
        for name, m in families.get(self.module.spec.family).tap_modules(self.module).items():
            self._hooks.append(m.register_forward_hook(lambda _m, _i, _o, name=name: marks.append(
                (name, time.perf_counter()))))
        self._hooks.append(self.module.register_forward_hook(done))

    def _install_taps(self) -> None:
        spec = getattr(self.module, "spec", None)
        if spec is None:
            raise UserError("boundary taps need a model built by partialdeploy (its family names the blocks)")
        from partialdeploy import families

        self._taps, self._tapped = families.get(spec.family).tap_modules(self.module), {}
        for name, m in self._taps.items():
            def keep(_m, _i, out, name=name):
                self._tapped[name] = out.detach().clone().numpy()

            self._hooks.append(m.register_forward_hook(keep))

    def boundaries(self) -> list[str]:
        return list(self._taps)

    def _install_hooks(self) -> None:
        starts: dict[str, float] = {}
        for name, m in self.module.named_modules():
            if not _BLOCKISH.match(name) or (name.count(".") == 1 and any(
                    n.startswith(name + ".blocks.") for n, _ in self.module.named_modules())):
                continue

            def pre(_m, _inp, name=name):
                starts[name] = time.perf_counter()

            def post(_m, _inp, _out, name=name):
                dt = time.perf_counter() - starts.pop(name, time.perf_counter())
                self._acc[name] = self._acc.get(name, 0.0) + dt

            self._hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]

    def inputs(self) -> list[TensorMeta]:
        shape = tuple(self.options.get("input_shape") or (None, 3, 224, 224))
        return [TensorMeta(self.options.get("input_name", "input"), shape, "float32")]

    def outputs(self) -> list[TensorMeta]:
        return [TensorMeta(self.options.get("output_name", "logits"), (None, None), "float32")]

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        args = [torch.from_numpy(np.ascontiguousarray(v)) for v in feed.values()]
        with torch.inference_mode():
            y = self.module(*args)
        self._runs += 1
        if isinstance(y, (tuple, list)):
            names = [o.name for o in self.outputs()]
            out = {names[i] if i < len(names) else f"output_{i}": t.numpy() for i, t in enumerate(y)}
        else:
            out = {self.outputs()[0].name: y.numpy()}
        if self._taps:
            out.update(self._tapped)
            self._tapped = {}
        return out

    def layer_times(self) -> list[dict] | None:
        if not self._acc or not self._runs:
            return None
        return [{"name": k, "op": "module", "kernel": "torch", "time_ms": v * 1e3 / self._runs}
                for k, v in self._acc.items()]

    def close(self) -> None:
        for h in getattr(self, "_hooks", []):
            h.remove()
        self._hooks = []
        self.module = None


def _is_checkpoint(path) -> bool:
    """A torch.save zip (data.pkl, no TorchScript code/constants) or a safetensors file: weights only."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = {n.split("/", 1)[-1] for n in z.namelist()}
        return "data.pkl" in names and "constants.pkl" not in names and not any(n.startswith("code/") for n in names)
    except (OSError, zipfile.BadZipFile):
        return str(path).endswith((".safetensors", ".ckpt"))
