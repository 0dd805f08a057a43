"""The runtime-independent export step: torch deploy form -> ONNX (``onnx.py``), and the exact graph forms of
that ONNX a runtime's converter may start from (``onnx_forms.py``). The per-runtime
converters live with their runtime, in ``partialdeploy/backends/<runtime>/target.py``."""
