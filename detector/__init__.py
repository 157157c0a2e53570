"""Vigil's runtime: data schema, preprocessing, the VAE, scoring, thresholds and model artifacts.

Everything the detector needs lives here; the training job imports from this package,
never the reverse.
"""

from detector.artifact import ArtifactError, TrainedModel, load, save
from detector.model import VAE, ModelConfig
from detector.preprocessing import Scaler
from detector.scoring import Scorer, Scores, top_sensors
from detector.threshold import Persistence, Threshold, calibrate

__all__ = [
    "ArtifactError", "ModelConfig", "Persistence", "Scaler", "Scorer", "Scores", "Threshold",
    "TrainedModel", "VAE", "calibrate", "load", "save", "top_sensors",
]
