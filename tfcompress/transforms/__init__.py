"""Keras model → Keras model: the training-time compression steps."""
