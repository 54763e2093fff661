"""vision: datasets, models, training engine and predictors for detection and segmentation."""

__version__ = "0.1.0"
