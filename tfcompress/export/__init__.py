"""Keras model → bytes: the converter settings for every precision, calibration, LUT compression, C sources."""
