"""Quantization-aware training with tfmot, keeping what tfmot cannot quantize in float.

`tfmot.quantization.keras.quantize_model` refuses a whole model for one layer it has
no quantize config for (a BatchNormalization after an activation, LayerNormalization,
a `tf.*` call), and for any model nested in another (model-optimization#1089, #628,
#1139). tfcompress plans every layer first, flattens nested models, annotates only
the layers tfmot can handle, and lists the rest: they train in float and the int8
converter calibrates them afterwards. The collaborative variants keep what an earlier
step made: pruned zeros (PQAT), shared cluster values (CQAT), or both (PCQAT).
"""

import dataclasses
from typing import Optional

import numpy as np

from tfcompress import _keras
from tfcompress.errors import OptionError, PreflightError
from tfcompress.options import WEIGHT_BITS, option
from tfcompress.transforms.cluster import MAX_CLUSTERS, is_clustered, kernel_of
from tfcompress.transforms.graph import flatten_nested, is_graph_model

__all__ = [
    "LayerPlan",
    "plan_qat",
    "apply_qat",
    "as_default_scheme",
    "check_clusters_kept",
    "QatOptions",
    "is_quantize_aware",
    "has_low_bit_weights",
    "PRESERVE",
    "QUANTIZE",
    "FOLD",
    "KEEP_FLOAT",
    "FLATTEN",
    "REFUSE",
]

QUANTIZE = "quantize"
FOLD = "fold"  # BatchNormalization folded into the layer before it
KEEP_FLOAT = "keep float"
FLATTEN = "flatten"  # a nested model: its layers are planned one by one
REFUSE = "refuse"

_FOLDS_INTO = ("Conv2D", "DepthwiseConv2D", "Dense")
_QAT_LAYERS = ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2")
_OP_LAYERS = ("TFOpLambda", "SlicingOpLambda", "Lambda")
PRESERVE = (None, "sparsity", "clusters", "both")


@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """What QAT does with one layer, and why."""

    name: str
    layer_type: str
    action: str
    reason: str = ""
    fix: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def plan_qat(model) -> tuple:
    """One LayerPlan per layer (nested models expanded), in graph order."""
    if not is_graph_model(model):
        return (
            LayerPlan(
                model.name,
                type(model).__name__,
                REFUSE,
                "a subclassed model: tfmot quantizes only Sequential and Functional models",
                "rebuild it as a Functional model: tf_keras.Model(inputs, outputs)",
            ),
        )
    keras = _keras.tf_keras()
    registry = _registry()
    plans = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model) and is_graph_model(layer):
            plans.append(
                LayerPlan(
                    layer.name,
                    type(layer).__name__,
                    FLATTEN,
                    "a model inside the model: tfmot cannot quantize it as one layer",
                    "none needed: tfcompress flattens it before QAT",
                )
            )
            plans.extend(plan_qat(layer))
        elif isinstance(layer, keras.Model):
            plans.append(
                LayerPlan(
                    layer.name,
                    type(layer).__name__,
                    KEEP_FLOAT,
                    "a subclassed model inside the model: its layers cannot be seen",
                    "rebuild it as a Functional model: tf_keras.Model(inputs, outputs)",
                )
            )
        else:
            plans.append(_plan_layer(layer, registry, keras))
    return tuple(plans)


def apply_qat(model, preserve=None, weight_bits: int = 8, layer_bits: Optional[dict] = None):
    """(QAT model ready to train, plan). Layers planned `keep float` are left unwrapped.

    `preserve` "sparsity", "clusters" or "both" picks tfmot's collaborative scheme, so
    fine-tuning keeps the zeros of a pruned model and the shared values of a clustered one.
    `weight_bits` 4 trains int4 weights (tfmot's n-bit scheme: per-channel for convolutions,
    per-tensor for Dense); `layer_bits` keeps named layers at another width.
    """
    options = QatOptions(preserve=preserve, weight_bits=weight_bits, layer_bits=dict(layer_bits or {}))
    plans = plan_qat(model)
    if is_quantize_aware(model):
        raise OptionError(
            f"Model '{model.name}' is already quantization-aware; fine-tune it as it is, "
            "or start QAT from the float model."
        )
    refused = [plan for plan in plans if plan.action == REFUSE]
    if refused:
        raise PreflightError(f"QAT cannot handle {refused[0].name}: {refused[0].reason}; {refused[0].fix}.")
    tfmot = _keras.tfmot()
    flat = flatten_nested(model)
    quantized_names = {plan.name for plan in plans if plan.action in (QUANTIZE, FOLD)}
    _check_preservable(flat, quantized_names, preserve)
    layer_bits = _named_layer_bits(flat, options.layer_bits, quantized_names)
    annotate = tfmot.quantization.keras.quantize_annotate_layer

    def annotate_supported(layer):
        return annotate(layer) if layer.name in quantized_names else layer

    annotated = _keras.tf_keras().models.clone_model(flat, clone_function=annotate_supported)
    annotated.set_weights(flat.get_weights())
    scheme = _n_bit_scheme(options.weight_bits, layer_bits) if options.low_bit else _scheme(preserve)
    with tfmot.quantization.keras.quantize_scope(_layer_classes(flat)):
        return tfmot.quantization.keras.quantize_apply(annotated, scheme), plans


def _layer_classes(model) -> dict:
    """The model's layer classes by name: quantize_apply rebuilds the model from its config, and a
    class Keras does not register (ConvNeXt's LayerScale, a user's own layer) came back as its name."""
    return {type(layer).__name__: type(layer) for layer in model.layers}


def _n_bit_scheme(weight_bits: int, layer_bits: dict):
    """tfmot's n-bit scheme (symmetric weights, per channel for convolutions, per tensor for Dense;
    8-bit activations) whose registry gives the layers in `layer_bits` their own width. Through the
    registry, not per-layer annotations: tfmot folds a BatchNormalization only into a layer without
    its own quantize config. A registry is built for each layer: tfmot's n-bit registries share
    their per-layer-type settings, so the one built last sets the width of every other."""
    n_bit = _keras.tfmot().quantization.keras.experimental.default_n_bit

    class LayerWidths(n_bit.DefaultNBitQuantizeRegistry):
        def get_quantize_config(self, layer):
            bits = int(layer_bits.get(layer.name, weight_bits))
            registry = n_bit.DefaultNBitQuantizeRegistry(num_bits_weight=bits, num_bits_activation=8)
            return registry.get_quantize_config(layer)

    class Scheme(n_bit.DefaultNBitQuantizeScheme):
        def get_quantize_registry(self):
            return LayerWidths(num_bits_weight=weight_bits, num_bits_activation=8)

    return Scheme(num_bits_weight=weight_bits, num_bits_activation=8)


def _named_layer_bits(model, layer_bits: dict, quantized_names: set) -> dict:
    """`layer_bits` by layer name; `first` and `last` name the first and last quantized layers with
    weights (what usually stays at 8 bits), unless a layer has that name."""
    weighted = [layer.name for layer in model.layers if layer.name in quantized_names and kernel_of(layer) is not None]
    aliases = {"first": weighted[:1], "last": weighted[-1:]}
    named = {}
    for name, bits in layer_bits.items():
        for target in [name] if name in quantized_names else aliases.get(name, [name]):
            named[target] = bits
    unknown = sorted(set(named) - quantized_names)
    if unknown:
        raise OptionError(
            f"layer_bits names {', '.join(unknown)}, which QAT does not quantize here; "
            f"name one of {', '.join(weighted[:12])}, or first or last."
        )
    return named


def _scheme(preserve):
    tfmot = _keras.tfmot()
    if preserve is None:
        return tfmot.quantization.keras.default_8bit.Default8BitQuantizeScheme()
    if preserve == "sparsity":
        return tfmot.quantization.keras.collab_opts.Default8BitPrunePreserveQuantizeScheme()
    # tfmot exports the cluster-preserving scheme (CQAT, PCQAT) under experimental only.
    return tfmot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(preserve_sparsity=preserve == "both")


def _check_preservable(model, quantized_names, preserve) -> None:
    """Preserving what is not there is a mistake in the pipeline: say which step is missing."""
    if preserve is None:
        return
    kernels = [kernel_of(layer) for layer in model.layers if layer.name in quantized_names]
    kernels = [kernel for kernel in kernels if kernel is not None]
    if preserve in ("sparsity", "both") and not any(np.any(kernel == 0.0) for kernel in kernels):
        raise OptionError(
            f"preserve={preserve!r} keeps pruned zeros, but no kernel of '{model.name}' has any; "
            "run `tfcompress prune` first."
        )
    if preserve in ("clusters", "both") and not any(is_clustered(kernel) for kernel in kernels):
        raise OptionError(
            f"preserve={preserve!r} keeps shared weight values, but no kernel of '{model.name}' is "
            f"clustered (≤ {MAX_CLUSTERS} distinct values); run `tfcompress cluster` first."
        )


def as_default_scheme(qat_model, float_model):
    """A collaborative (PQAT/CQAT/PCQAT) model re-expressed in tfmot's default QAT scheme.

    The collaborative wrappers rebuild their cluster tables from the kernel when a file
    is loaded, before its weights are read, so their `.h5` files do not load again
    ("weight count mismatch"). After training their kernels already hold the preserved
    values, so the default scheme with the same kernels and learned ranges saves, loads
    and converts to the same int8 model.
    """
    default_model, _ = apply_qat(float_model)
    for target, trained in zip(default_model.layers, qat_model.layers):  # same graph, same order
        source = {_weight_key(w, trained): w for w in trained.weights}
        target.set_weights([source[_weight_key(w, target)].numpy() for w in target.weights])
    return default_model


def _weight_key(weight, layer) -> str:
    """The weight's name without its layer's: "quantize_layer_1/quantize_layer_1_min:0" → "/_min:0"."""
    return weight.name.replace(layer.name, "")


def check_clusters_kept(clustered_model, qat_model) -> None:
    """After CQAT/PCQAT, no kernel may hold more distinct values than the clustered model gave it.

    LUT compression (`micro --compress lut`) counts on it: k values need log2(k) index
    bits. tfmot's cluster-preserving QAT has been seen to break it, so it is checked.
    """
    before, after = _distinct_kernel_values(clustered_model), _distinct_kernel_values(qat_model)
    grown = {
        name: (before[name], after[name])
        for name in before
        if name in after and before[name] <= MAX_CLUSTERS and after[name] > before[name]
    }
    if grown:
        details = ", ".join(f"{name} {old} → {new}" for name, (old, new) in grown.items())
        raise PreflightError(
            f"Cluster-preserving QAT did not keep the shared values ({details} distinct values). "
            "Convert the clustered model without QAT, or cluster again after QAT."
        )


def _distinct_kernel_values(model) -> dict:
    """Layer name → distinct values of its kernel; QAT wrappers are looked through."""
    counts = {}
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        kernel = kernel_of(inner)
        if kernel is not None:
            counts[inner.name] = len(np.unique(kernel))
    return counts


@dataclasses.dataclass(frozen=True)
class QatOptions:
    preserve: Optional[str] = option(
        None, "Keep what prune/cluster made: sparsity (PQAT), clusters (CQAT), both (PCQAT).", choices=PRESERVE[1:]
    )
    weight_bits: int = option(
        8,
        "Bits per Conv2D, DepthwiseConv2D and Dense weight: 8, or 4 (int4 weights, two per byte in the .tflite; "
        "activations stay 8-bit).",
    )
    layer_bits: dict[str, float] = option(
        {},
        "Per-layer weight bits over --weight_bits: NAME=8,... (first and last: the first and last "
        "layers with weights, which usually stay at 8 bits).",
    )

    def __post_init__(self):
        if self.preserve not in PRESERVE:
            raise OptionError(
                f"preserve must be one of sparsity, clusters, both (or None). Received: preserve={self.preserve!r}"
            )
        for name, bits in {"weight_bits": self.weight_bits, **self.layer_bits}.items():
            if bits not in WEIGHT_BITS:
                raise OptionError(
                    f"{name} must be 8 or 4 bits (what LiteRT and TFLite Micro run). Received: {name}={bits}"
                )
        if self.preserve is not None and self.low_bit:
            raise OptionError(
                "preserve works with 8-bit weights only: tfmot's sparsity- and cluster-preserving schemes have "
                "no 4-bit form. Drop --preserve, or use --weight_bits 8."
            )

    @property
    def low_bit(self) -> bool:
        """Whether any layer trains with fewer than 8 weight bits."""
        return min([self.weight_bits, *self.layer_bits.values()]) < 8


def is_quantize_aware(model) -> bool:
    """Whether tfmot's QAT wrappers are already in the model (a `tfcompress qat` output)."""
    return any(type(layer).__name__ in _QAT_LAYERS for layer in getattr(model, "layers", ()))


def has_low_bit_weights(model) -> bool:
    """Whether a QAT model trained some weights at fewer than 8 bits (the converter must pack them)."""
    configs = (getattr(layer, "quantize_config", None) for layer in getattr(model, "layers", ()))
    return any(config.get_config().get("num_bits_weight", 8) < 8 for config in configs if config is not None)


def _plan_layer(layer, registry, keras) -> LayerPlan:
    kind = type(layer).__name__
    if isinstance(layer, keras.layers.BatchNormalization):
        producer = _producer(layer)
        if producer is not None and type(producer).__name__ in _FOLDS_INTO and _is_linear(producer):
            return LayerPlan(layer.name, kind, FOLD, f"folded into {producer.name}")
        return LayerPlan(layer.name, kind, KEEP_FLOAT, _unfoldable_reason(producer), _refold_fix(layer, producer))
    if registry.supports(layer):
        return LayerPlan(layer.name, kind, QUANTIZE)
    if kind in _QAT_LAYERS:
        return LayerPlan(layer.name, kind, QUANTIZE, "already quantization-aware")
    if kind in _OP_LAYERS:
        return LayerPlan(
            layer.name,
            kind,
            KEEP_FLOAT,
            "a tf.* call or Lambda has no tfmot quantize config",
            "use the equivalent Keras layer (Cropping2D, Reshape, ReLU, ...) to quantize it in QAT",
        )
    return LayerPlan(
        layer.name,
        kind,
        KEEP_FLOAT,
        f"tfmot has no quantize config for {kind}",
        "none needed: it trains in float and int8 conversion calibrates it (pass --calibration)",
    )


def _unfoldable_reason(producer) -> str:
    where = (
        "the model input"
        if producer is None
        else f"{producer.name} ({type(producer).__name__}"
        + (")" if _is_linear(producer) else f", activation={producer.get_config()['activation']})")
    )
    return (
        f"BatchNormalization after {where}: tfmot folds it only right after a Conv2D, "
        "DepthwiseConv2D or Dense without activation"
    )


def _refold_fix(layer, producer) -> str:
    if producer is None:
        return (
            f"none needed: there is no Conv2D/Dense before {layer.name} to fold it into; QAT trains it in "
            "float and int8 conversion calibrates it"
        )
    if type(producer).__name__ in _FOLDS_INTO:
        return f"give {producer.name} activation=None and put the activation after {layer.name}"
    return f"move {layer.name} right after the Conv2D/Dense before it (before the activation)"


def _registry():
    tfmot = _keras.tfmot()
    del tfmot  # the registry module below is importable only after tfmot itself
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import default_8bit_quantize_registry

    return default_8bit_quantize_registry.Default8BitQuantizeRegistry()


def _producer(layer):
    """The one layer feeding `layer`, or None (model input, several inputs)."""
    inbound = layer._inbound_nodes[0].inbound_layers if layer._inbound_nodes else None
    if isinstance(inbound, list) or inbound is None or type(inbound).__name__ == "InputLayer":
        return None
    return inbound


def _is_linear(layer) -> bool:
    return layer.get_config().get("activation") in (None, "linear")
