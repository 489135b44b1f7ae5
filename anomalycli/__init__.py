"""anomalycli: find defective parts in images, from the command line or from Python."""

from importlib import metadata

try:
    __version__ = metadata.version("anomalycli")  # one place: pyproject.toml's, as installed
except metadata.PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
