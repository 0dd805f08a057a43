"""Profiling and engine builds on an edge device over SSH, with nothing installed there but Python,
numpy and the runtime.

Two sides, one package:

* the **local side** (``hosts``, ``ssh``, ``payload``, ``session``, ``profile``, ``engine``) validates
  the host argument, drives the system OpenSSH client as subprocesses with argument lists (one
  ControlMaster connection per device, ``BatchMode=yes``, host keys checked), builds the job, pushes
  it, reads the device's answers as untrusted input and cleans up;
* the **device side** (``agent``, ``device``, ``probe``, ``sustained``) travels in a zipapp built
  from the installed package (``payload.build``) together with the torch-free modules it needs
  (profiling, runners, records, verify). It only reads the device's settings, never changes them.

``docs/architecture.md`` ("Remote devices") describes the protocol and the security model.
"""
