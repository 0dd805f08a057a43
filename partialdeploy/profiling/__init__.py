"""Latency profiling of exported artifacts (numpy only: runtimes come in through the runners, torch
never). One module per concern:

* :mod:`~partialdeploy.profiling.settings` — what a run is asked (``Settings``, ``--batch``), which
  runner can measure which mode, how an artifact is opened for it (the report schema: ``report.schema``);
* :mod:`~partialdeploy.profiling.source` — what to profile (an export directory, a manifest or a
  model file, checked against its manifest) and where the report goes;
* :mod:`~partialdeploy.profiling.timed` — the timed blocks of one case;
* :mod:`~partialdeploy.profiling.layers` — the per-layer pass, layers mapped to the family's blocks;
* :mod:`~partialdeploy.profiling.results` — report assembly: header, statistics, warnings;
* :mod:`~partialdeploy.profiling.memory`, :mod:`~partialdeploy.profiling.envinfo` — resident memory
  and the environment fingerprint;
* :mod:`~partialdeploy.profiling.profiler` — ``Profiler`` (the order of it all), ``profile``,
  ``exit_code``.

The device side of ``profile --remote`` ships this package (``remote/payload.py``).
"""
