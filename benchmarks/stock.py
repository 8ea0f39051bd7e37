"""The stock script tfcompress is timed against: what a user writes without it.

    python benchmarks/stock.py convert MODEL CALIBRATION.npz EVAL.npz OUT.tflite
    python benchmarks/stock.py micro MODEL CALIBRATION.npz EVAL.npz OUT.tflite

`convert`: load the Keras model, TFLiteConverter int8 (500 calibration inputs, float I/O),
accuracy in LiteRT on the eval file. `micro`: the same conversion with int8 I/O at batch 1,
then the eval inputs run through the TFLite Micro interpreter with a generous arena.
Data is preprocessed as tfcompress does by default (uint8 pixels scaled to [0, 1]).
Prints one JSON line: size, accuracy.
"""

import json
import sys

import numpy as np

CALIBRATION_SAMPLES = 500
MICRO_SAMPLES = 100


def load_arrays(path, input_shape):
    stored = np.load(path)
    x = stored["x"]
    x = x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)
    return x.reshape((len(x),) + tuple(input_shape[1:])), stored["y"] if "y" in stored else None


def load_keras(path):
    try:
        import tf_keras

        return tf_keras.models.load_model(path, compile=False)
    except Exception:  # a file only Keras 3 reads
        import keras

        return keras.saving.load_model(path, compile=False)


def convert(model, calibration, *, micro: bool) -> bytes:
    import tensorflow as tf

    if micro:
        spec = tf.TensorSpec((1,) + tuple(model.inputs[0].shape[1:]), tf.float32)
        function = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
        converter = tf.lite.TFLiteConverter.from_concrete_functions([function], model)
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calibration[i : i + 1]] for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if micro:
        converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def litert_accuracy(model_bytes, x, y) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=model_bytes)
    detail, output = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    predictions = []
    for start in range(0, len(x), 250):
        batch = x[start : start + 250]
        interpreter.resize_tensor_input(detail["index"], batch.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], batch)
        interpreter.invoke()
        predictions.append(interpreter.get_tensor(output["index"]).argmax(axis=-1))
    return float(np.mean(np.concatenate(predictions) == y))


def micro_accuracy(model_bytes, x, y) -> float:
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model_bytes, arena_size=8 << 20)
    quantization = interpreter.get_input_details(0)["quantization_parameters"]
    scale, zero_point = quantization["scales"][0], quantization["zero_points"][0]
    hits = 0
    for sample, label in zip(x[:MICRO_SAMPLES], y[:MICRO_SAMPLES]):
        quantized = np.clip(np.round(sample / scale + zero_point), -128, 127).astype(np.int8)
        interpreter.set_input(quantized[np.newaxis], 0)
        interpreter.invoke()
        hits += int(interpreter.get_output(0).argmax() == label)
    return hits / min(len(x), MICRO_SAMPLES)


def main(mode, model_path, calibration_path, eval_path, output_path):
    model = load_keras(model_path)
    input_shape = model.inputs[0].shape
    calibration, _ = load_arrays(calibration_path, input_shape)
    x, y = load_arrays(eval_path, input_shape)
    model_bytes = convert(model, calibration[:CALIBRATION_SAMPLES], micro=mode == "micro")
    with open(output_path, "wb") as handle:
        handle.write(model_bytes)
    accuracy = micro_accuracy(model_bytes, x, y) if mode == "micro" else litert_accuracy(model_bytes, x, y)
    print(json.dumps({"size_bytes": len(model_bytes), "accuracy": accuracy}))


if __name__ == "__main__":
    main(*sys.argv[1:])
