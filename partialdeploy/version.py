"""The package version, in a module of its own: the modules that record it (manifests, reports, bundles)
import it from here, not from the package's lazy API facade."""

__version__ = "0.1.0"
