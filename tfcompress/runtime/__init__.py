"""bytes → numbers, without TensorFlow: a device only has numpy, absl-py and ai-edge-litert."""
