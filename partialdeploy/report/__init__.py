"""Profile reports after they are measured: read back, rendered, merged, compared, gated.

* :mod:`~partialdeploy.report.schema` — load and validate a report (schema ``partialdeploy.profile/1``),
  its rows typed;
* :mod:`~partialdeploy.report.file` — where a report lands (one writer at a time, never an empty run
  over a real report);
* :mod:`~partialdeploy.report.markdown`, :mod:`~partialdeploy.report.html` (+ ``svg``) — renderers;
  :mod:`~partialdeploy.report.text` — cells and inert text they share;
* :mod:`~partialdeploy.report.merge` — several devices' reports as one;
* :mod:`~partialdeploy.report.regression` — the latency gate of ``report compare`` (fails closed);
* :mod:`~partialdeploy.report.junit` — JUnit XML and Markdown summaries of the latency and parity gates.
"""
