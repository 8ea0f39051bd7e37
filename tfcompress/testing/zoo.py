"""The reference architectures behind the sample models and the benchmarks.

Every builder takes the Keras module to build with (tf_keras, or Keras 3 for the
Keras 3 sample files), and every model takes 28×28×1 float inputs in [0, 1] and ends
in a 10-way softmax, so one data file serves them all.
"""

__all__ = ["ARCHITECTURES", "build"]

INPUT_SHAPE = (28, 28, 1)
CLASSES = 10


def lenet_300_100(keras):
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Flatten(),
            layers.Dense(300, activation="relu"),
            layers.Dense(100, activation="relu"),
            layers.Dense(CLASSES, activation="softmax"),
        ],
        name="lenet_300_100",
    )


def lenet5(keras):
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input(INPUT_SHAPE),
            layers.Conv2D(6, 5, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(16, 5, activation="relu"),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dense(120, activation="relu"),
            layers.Dense(84, activation="relu"),
            layers.Dense(CLASSES, activation="softmax"),
        ],
        name="lenet5",
    )


def dscnn(keras, filters=64, blocks=4):
    """DS-CNN as in the MLPerf Tiny keyword-spotting model: a strided conv, then
    depthwise-separable blocks (depthwise 3×3 + pointwise 1×1, each with BatchNorm)."""
    layers = keras.layers
    inputs = keras.Input(INPUT_SHAPE)
    x = layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for _ in range(blocks):
        x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
        x = layers.Conv2D(filters, 1, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU()(x)
    x = layers.Dropout(0.4)(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="dscnn")


def resnet8(keras):
    """The MLPerf Tiny image-classification ResNet-8: three residual stacks of 16, 32
    and 64 filters, the last two strided with a 1×1 projection shortcut."""
    layers = keras.layers
    inputs = keras.Input(INPUT_SHAPE)
    x = layers.Conv2D(16, 3, padding="same")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for filters, strides in ((16, 1), (32, 2), (64, 2)):
        y = layers.Conv2D(filters, 3, strides=strides, padding="same")(x)
        y = layers.BatchNormalization()(y)
        y = layers.ReLU()(y)
        y = layers.Conv2D(filters, 3, padding="same")(y)
        y = layers.BatchNormalization()(y)
        shortcut = x if strides == 1 else layers.Conv2D(filters, 1, strides=strides)(x)
        x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(CLASSES, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet8")


def mobilenetv2_035(keras, size=32):
    """MobileNetV2 (alpha 0.35, random init) on 32×32: the resize to its smallest
    supported input happens inside the model, so it takes the common 28×28×1 input."""
    inputs = keras.Input(INPUT_SHAPE)
    resized = keras.layers.Resizing(size, size)(inputs)
    backbone = keras.applications.MobileNetV2(input_tensor=resized, alpha=0.35, weights=None, classes=CLASSES)
    return keras.Model(inputs, backbone.output, name="mobilenetv2_035")


ARCHITECTURES = {
    "lenet_300_100": lenet_300_100,
    "lenet5": lenet5,
    "dscnn": dscnn,
    "resnet8": resnet8,
    "mobilenetv2_035": mobilenetv2_035,
}


def build(name: str, keras):
    """Builds the named architecture with the given Keras module."""
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {name!r}. Expected one of {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[name](keras)
