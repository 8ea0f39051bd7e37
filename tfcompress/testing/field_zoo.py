"""Architectures users bring, for the coverage suite (benchmarks/coverage.py) and its fast subset in the tests.

Each builder takes a Keras module (tf_keras, or Keras 3) and returns a small model with seeded
random weights: Keras applications at a small input, recurrent, attention, 1-D and 3-D nets,
autoencoders, regression and multi-label heads, several inputs or outputs, nested models.
`FIELD_MODELS` maps a name to (builder, what the output is, whether it is small enough for a
microcontroller), and `sample_inputs` makes inputs each model accepts.
"""

import dataclasses

import numpy as np

from tfcompress.data import one_or_tuple

__all__ = ["FieldModel", "FIELD_MODELS", "FAST_SUBSET", "build_field_model", "sample_inputs", "settle_batch_norm"]

VOCABULARY = 50


@dataclasses.dataclass(frozen=True)
class FieldModel:
    build: object  # keras module → model
    task: str  # what runtime.task should read from it ("logits": only with --task)
    micro: bool  # small enough, and meant, for a microcontroller
    tokens: bool = False  # int32 token ids in (an Embedding first)


def _application(name, **kwargs):
    def build(keras):
        return getattr(keras.applications, name)(weights=None, **kwargs)

    return build


def _image_net(body, shape=(32, 32, 3), head="softmax", classes=10):
    def build(keras):
        inputs = keras.Input(shape)
        x = body(keras, keras.layers, inputs)
        if head is not None:
            x = keras.layers.Dense(classes, activation=head)(x)
        return keras.Model(inputs, x)

    return build


def _conv_stack(keras, layers, x, activation="relu"):
    x = layers.Conv2D(8, 3, padding="same", activation=activation)(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(16, 3, padding="same", activation=activation)(x)
    return layers.GlobalAveragePooling2D()(x)


def _hard_swish_stack(keras, layers, x):
    x = layers.Conv2D(8, 3, padding="same")(x)
    x = layers.Multiply()([x, layers.ReLU(6.0)(layers.Rescaling(1.0, offset=3.0)(x))])
    x = layers.Rescaling(1 / 6)(x)
    return layers.GlobalAveragePooling2D()(x)


def _sequence_net(make_recurrent, return_sequences=False, head="softmax"):
    def build(keras):
        inputs = keras.Input((20, 8))
        x = make_recurrent(keras.layers, return_sequences)(inputs)
        if return_sequences:
            return keras.Model(inputs, keras.layers.Dense(8)(x))
        return keras.Model(inputs, keras.layers.Dense(5, activation=head)(x))

    return build


def _transformer_block(keras):
    layers = keras.layers
    inputs = keras.Input((16, 32))
    attended = layers.MultiHeadAttention(num_heads=2, key_dim=16)(inputs, inputs)
    x = layers.LayerNormalization()(layers.Add()([inputs, attended]))
    ffn = layers.Dense(32)(layers.Dense(64, activation="gelu")(x))
    x = layers.LayerNormalization()(layers.Add()([x, ffn]))
    return keras.Model(inputs, layers.Dense(4, activation="softmax")(layers.GlobalAveragePooling1D()(x)))


def _text_classifier(keras):
    layers = keras.layers
    inputs = keras.Input((24,), dtype="int32")
    x = layers.Embedding(VOCABULARY, 16)(inputs)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(layers.Dense(16, activation="relu")(x)))


def _conv1d_kws(keras):
    layers = keras.layers
    inputs = keras.Input((49, 10))
    x = layers.Conv1D(16, 3, activation="relu")(inputs)
    x = layers.Conv1D(16, 3, dilation_rate=2, activation="relu")(x)
    x = layers.GlobalMaxPooling1D()(x)
    return keras.Model(inputs, layers.Dense(12, activation="softmax")(x))


def _conv3d(keras):
    layers = keras.layers
    inputs = keras.Input((8, 16, 16, 1))
    x = layers.Conv3D(4, 3, activation="relu")(inputs)
    x = layers.MaxPooling3D()(x)
    x = layers.GlobalAveragePooling3D()(x)
    return keras.Model(inputs, layers.Dense(4, activation="softmax")(x))


def _mlp(widths, outputs, head, batch_norm_first=False, features=16):
    def build(keras):
        layers = keras.layers
        inputs = keras.Input((features,))
        x = layers.BatchNormalization()(inputs) if batch_norm_first else inputs
        for width in widths:
            x = layers.Dense(width, activation="relu")(x)
        return keras.Model(inputs, layers.Dense(outputs, activation=head)(x))

    return build


def _dense_autoencoder(keras):
    layers = keras.layers
    inputs = keras.Input((64,))
    x = inputs
    for width in (32, 8, 32):
        x = layers.Dense(width)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
    return keras.Model(inputs, layers.Dense(64)(x))


def _conv_autoencoder(keras):
    layers = keras.layers
    inputs = keras.Input((28, 28, 1))
    x = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(8, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(1, 3, strides=2, padding="same", activation="sigmoid")(x)
    return keras.Model(inputs, x)


def _unet_lite(keras):
    layers = keras.layers
    inputs = keras.Input((32, 32, 3))
    down = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(layers.MaxPooling2D()(down))
    x = layers.Concatenate()([layers.UpSampling2D()(x), down])
    return keras.Model(inputs, layers.Conv2D(3, 1, activation="softmax")(x))


def _two_inputs(keras):
    layers = keras.layers
    image, features = keras.Input((16, 16, 1), name="image"), keras.Input((8,), name="features")
    x = layers.Flatten()(layers.Conv2D(4, 3, activation="relu")(image))
    x = layers.Concatenate()([x, layers.Dense(8, activation="relu")(features)])
    return keras.Model([image, features], layers.Dense(3, activation="softmax")(x))


def _two_outputs(keras):
    layers = keras.layers
    inputs = keras.Input((16,))
    x = layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, [layers.Dense(4, activation="softmax")(x), layers.Dense(1)(x)])


def _nested(keras):
    layers = keras.layers
    inner = keras.Sequential(
        [keras.Input((28, 28, 1)), layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D()], name="features"
    )
    inputs = keras.Input((28, 28, 1))
    x = layers.GlobalAveragePooling2D()(inner(inputs))
    return keras.Model(inputs, layers.Dense(10, activation="softmax")(x))


def _time_distributed(keras):
    layers = keras.layers
    inputs = keras.Input((10, 12))
    x = layers.TimeDistributed(layers.Dense(8, activation="relu"))(inputs)
    return keras.Model(inputs, layers.Dense(2, activation="softmax")(layers.Flatten()(x)))


def _dot_attention(keras):
    layers = keras.layers
    inputs = keras.Input((12, 16))
    x = layers.Attention()([inputs, inputs])
    return keras.Model(inputs, layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling1D()(x)))


def _leaky_prelu(keras, layers, x):
    x = layers.LeakyReLU(0.1)(layers.Conv2D(8, 3)(x))
    x = layers.PReLU()(layers.Conv2D(8, 3)(x))
    return layers.GlobalAveragePooling2D()(x)


def _regularized(keras, layers, x):
    x = layers.GaussianNoise(0.1)(x)
    x = layers.SpatialDropout2D(0.2)(layers.Conv2D(8, 3, activation="relu")(x))
    return layers.Dropout(0.3)(layers.GlobalAveragePooling2D()(x))


def _depthwise_separable(keras, layers, x):
    x = layers.SeparableConv2D(16, 3, padding="same", activation="relu")(x)
    x = layers.DepthwiseConv2D(3, strides=2, padding="same")(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    return layers.GlobalAveragePooling2D()(x)


def _zoo(name):
    def build(keras):
        from tfcompress.testing import zoo

        return zoo.build(name, keras)

    return build


FIELD_MODELS = {
    "MobileNet 0.25": FieldModel(
        _application("MobileNet", input_shape=(32, 32, 3), alpha=0.25, classes=10), "softmax", True
    ),
    "MobileNetV2 0.35": FieldModel(
        _application("MobileNetV2", input_shape=(32, 32, 3), alpha=0.35, classes=10), "softmax", True
    ),
    "MobileNetV3Small": FieldModel(
        _application("MobileNetV3Small", input_shape=(32, 32, 3), classes=10), "softmax", False
    ),
    "MobileNetV3Large": FieldModel(
        _application("MobileNetV3Large", input_shape=(32, 32, 3), classes=10), "softmax", False
    ),
    "EfficientNetB0": FieldModel(_application("EfficientNetB0", input_shape=(32, 32, 3), classes=10), "softmax", False),
    "EfficientNetV2B0": FieldModel(
        _application("EfficientNetV2B0", input_shape=(32, 32, 3), classes=10), "softmax", False
    ),
    "ResNet50": FieldModel(_application("ResNet50", input_shape=(32, 32, 3), classes=10), "softmax", False),
    "ResNet50V2": FieldModel(_application("ResNet50V2", input_shape=(32, 32, 3), classes=10), "softmax", False),
    "DenseNet121": FieldModel(_application("DenseNet121", input_shape=(32, 32, 3), classes=10), "softmax", False),
    "NASNetMobile": FieldModel(_application("NASNetMobile", input_shape=(32, 32, 3), classes=10), "softmax", False),
    "ConvNeXtTiny": FieldModel(_application("ConvNeXtTiny", input_shape=(32, 32, 3), classes=10), "softmax", False),
    "Xception": FieldModel(_application("Xception", input_shape=(71, 71, 3), classes=10), "softmax", False),
    "InceptionV3": FieldModel(_application("InceptionV3", input_shape=(75, 75, 3), classes=10), "softmax", False),
    "VGG16": FieldModel(_application("VGG16", input_shape=(32, 32, 3), classes=10), "softmax", False),
    # tf_keras's RegNet head applies no activation: its outputs are class logits.
    "RegNetX002": FieldModel(_application("RegNetX002", input_shape=(32, 32, 3), classes=10), "logits", False),
    "ResNet-8 (MLPerf Tiny)": FieldModel(_zoo("resnet8"), "softmax", True),
    "DS-CNN (MLPerf Tiny)": FieldModel(_zoo("dscnn"), "softmax", True),
    "LeNet-5": FieldModel(_zoo("lenet5"), "softmax", True),
    "LSTM classifier": FieldModel(
        _sequence_net(lambda layers, seq: layers.LSTM(16, return_sequences=seq)), "softmax", False
    ),
    "LSTM sequence regression": FieldModel(
        _sequence_net(lambda layers, seq: layers.LSTM(16, return_sequences=seq), return_sequences=True),
        "regression",
        False,
    ),
    "GRU classifier": FieldModel(
        _sequence_net(lambda layers, seq: layers.GRU(16, return_sequences=seq)),
        "softmax",
        True,  # unrolled for int8, no WHILE left
    ),
    "SimpleRNN classifier": FieldModel(
        _sequence_net(lambda layers, seq: layers.SimpleRNN(16, return_sequences=seq)),
        "softmax",
        True,  # unrolled for int8, no WHILE left
    ),
    "Bidirectional LSTM": FieldModel(
        _sequence_net(lambda layers, seq: layers.Bidirectional(layers.LSTM(8, return_sequences=seq))), "softmax", False
    ),
    "Conv1D keyword spotter": FieldModel(_conv1d_kws, "softmax", True),
    "Conv3D video net": FieldModel(_conv3d, "softmax", False),
    "Transformer block (MHA + LayerNorm + GELU)": FieldModel(_transformer_block, "softmax", False),
    "Embedding text classifier": FieldModel(_text_classifier, "softmax", True, tokens=True),
    "Dot-product attention": FieldModel(_dot_attention, "softmax", False),
    "TimeDistributed Dense": FieldModel(_time_distributed, "softmax", True),
    "GELU MLP": FieldModel(_mlp([32, 16], 4, "softmax"), "softmax", False),
    "swish CNN": FieldModel(
        _image_net(lambda keras, layers, x: _conv_stack(keras, layers, x, "swish")), "softmax", True
    ),
    "hard-swish CNN": FieldModel(_image_net(_hard_swish_stack), "softmax", True),
    "LeakyReLU/PReLU CNN": FieldModel(_image_net(_leaky_prelu), "softmax", True),
    "Dropout/noise CNN": FieldModel(_image_net(_regularized), "softmax", True),
    "Separable/depthwise CNN": FieldModel(_image_net(_depthwise_separable, shape=(96, 96, 1)), "softmax", True),
    "jet-tagging MLP (hls4ml)": FieldModel(_mlp([64, 32, 32], 5, "softmax"), "softmax", True),
    "BatchNorm-first MLP": FieldModel(_mlp([32], 4, "softmax", batch_norm_first=True), "softmax", True),
    "regression head": FieldModel(_mlp([32, 16], 1, None), "regression", True),
    "sigmoid binary head": FieldModel(_mlp([16], 1, "sigmoid"), "sigmoid", True),
    "sigmoid multi-label head": FieldModel(_mlp([32], 6, "sigmoid"), "sigmoid", True),
    "logits classifier (no softmax)": FieldModel(_mlp([32], 10, None), "logits", True),
    "dense autoencoder (anomaly detection)": FieldModel(_dense_autoencoder, "reconstruction", True),
    "conv autoencoder": FieldModel(_conv_autoencoder, "sigmoid", True),
    "U-Net-lite segmentation": FieldModel(_unet_lite, "softmax", True),
    "nested Sequential in Functional": FieldModel(_nested, "softmax", True),
    "two inputs": FieldModel(_two_inputs, "softmax", True),
    "two outputs": FieldModel(_two_outputs, "softmax", True),
}

# One of each kind of output and structure, fast enough for the test suite.
FAST_SUBSET = (
    "LeNet-5",
    "LSTM classifier",
    "Embedding text classifier",
    "regression head",
    "sigmoid multi-label head",
    "dense autoencoder (anomaly detection)",
    "conv autoencoder",
    "nested Sequential in Functional",
    "logits classifier (no softmax)",
)


def build_field_model(name: str, keras, seed: int = 0):
    """The named architecture with seeded random weights."""
    keras.utils.set_random_seed(seed)
    return FIELD_MODELS[name].build(keras)


def sample_inputs(name: str, model, count: int, seed: int = 0):
    """Inputs the model accepts: token ids for an Embedding net, else uniform values in [0, 1); a tuple
    of one array per input for a model with several."""
    rng = np.random.default_rng(seed)
    arrays = []
    for tensor in model.inputs:
        shape = (count,) + tuple(tensor.shape[1:])
        if FIELD_MODELS[name].tokens:
            arrays.append(rng.integers(0, VOCABULARY, shape).astype(np.float32))
        else:
            arrays.append(rng.uniform(0, 1, shape).astype(np.float32))
    return one_or_tuple(arrays)


def sample_arrays(name: str, model, count: int, seed: int = 0) -> dict:
    """`sample_inputs` as the arrays of an .npz: `x`, or one per input named by the input."""
    inputs = sample_inputs(name, model, count, seed)
    if not isinstance(inputs, tuple):
        return {"x": inputs}
    return dict(zip((tensor.name.split(":")[0] for tensor in model.inputs), inputs))


def settle_batch_norm(model, inputs) -> None:
    """Sets every BatchNormalization's moving statistics to those of `inputs`, as training would have.

    With the initial statistics (mean 0, variance 1), the activations of a deep random-weight
    network shrink layer by layer until the output is the same for every input, and per-channel
    scales of 1e-12 follow: nothing like a trained model, and TFLite Micro aborts on them.
    """
    norms = [layer for layer in _all_layers(model) if type(layer).__name__ == "BatchNormalization"]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.momentum = 0.0
    if norms:  # each layer normalizes by the batch's statistics and keeps them
        model(list(inputs) if isinstance(inputs, tuple) else inputs, training=True)
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)
