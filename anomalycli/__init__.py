"""anomalycli: find defective parts in images, from the command line or from Python."""

__version__ = "0.1.0"
