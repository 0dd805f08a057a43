"""Targets: one converter per export target behind one interface.

``get_target(name)`` imports the module lazily; a missing runtime costs nothing until used. Which
targets exist is declared by the backends (partialdeploy/backends/)."""

from partialdeploy.exporters.base import Artifact, ExportContext, Target, get_target

__all__ = ["Artifact", "ExportContext", "Target", "get_target"]
