"""Helpers shared by the target modules: quiet converters, and (re-exported from
partialdeploy.verification, where they live) the parity gate and static-batch padding. numpy only."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings

from partialdeploy.errors import first_line  # noqa: F401  (re-exported for the target modules)
from partialdeploy.verification import (parity_gates, run_padded, runner_logits,  # noqa: F401  (one place)
                                        static_batch)


@contextlib.contextmanager
def quiet():
    """Silence converters while they work: warnings, stdout/stderr chatter (torch.onnx prints whole
    graphs on failure, coremltools prints version warnings and progress bars), log records below ERROR."""
    root = logging.getLogger()
    old = root.level
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(old)
