"""The `vigil` command line: wires the detector and training packages together."""

__version__ = "0.1.0"
