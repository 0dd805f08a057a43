"""Targets: one module per runtime behind one interface (mmdeploy-style backend manager).

``get_target(name)`` imports the module lazily; a missing runtime costs nothing until used."""

from partialdeploy.exporters.base import TARGETS, Artifact, ExportContext, Target, get_target

__all__ = ["TARGETS", "Artifact", "ExportContext", "Target", "get_target"]
