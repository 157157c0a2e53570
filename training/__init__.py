"""Vigil's offline side: the training job, evaluation and reports. Imports from `detector`."""
