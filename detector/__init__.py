"""Vigil's runtime: data schema, preprocessing, the VAE, scoring, thresholds and model artifacts.

Everything the detector needs lives here; the training job imports from this package,
never the reverse. The names below are loaded on first use, so that reading data files
(detector.table, detector.csvdata) or the daemon's settings does not import JAX.
"""

from importlib import import_module

_WHERE = {
    "ArtifactError": "artifact", "TrainedModel": "artifact", "load": "artifact", "save": "artifact",
    "VAE": "model", "ModelConfig": "model", "Scaler": "preprocessing", "Scorer": "scoring", "Scores": "scoring",
    "top_sensors": "scoring", "Persistence": "threshold", "Threshold": "threshold", "calibrate": "threshold",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'detector' has no attribute {name!r}")
    return getattr(import_module(f"detector.{_WHERE[name]}"), name)
