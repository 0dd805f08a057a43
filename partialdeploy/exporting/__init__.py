"""The export, by step (docs/architecture.md, "The flow"): ``request`` (what to export, checked before
any work), ``load`` (checkpoint, train form, real images), ``deploy`` (deploy form and its ONNX, each
gated), ``targets`` (per target: convert, verify, tune), ``manifest`` (place the artifacts, write
``manifest.json`` last), ``run`` (``run_export``: the steps in order). Beside them the helpers only an
export needs: ``onnx`` (torch -> ONNX, and the ``onnx`` target), ``onnx_forms`` (exact graph forms of
that ONNX a converter may start from), ``export_dir`` (whose folder it is),
``check_images`` (what the gates judge on), ``int8fallback`` (the INT8 loop every INT8 target runs:
keep the most sensitive blocks in float until the gate holds).

Not named ``export``: ``partialdeploy.export`` is the API function (an imported submodule would
shadow it).
"""
