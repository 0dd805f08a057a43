"""The runtime-independent export step: torch deploy form -> ONNX (``onnx.py``). The per-runtime
converters live with their runtime, in ``partialdeploy/backends/<runtime>/target.py``."""
