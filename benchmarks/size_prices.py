"""Does the allocation chain's size price predict the gzip of the file `auto --train` writes?

The chain (tfcompress/transforms/allocation.py) ranks per-layer moves by the bytes they save,
priced before any fine-tuning. Two pricings of the scanned kernels are held against the
measured gzip of every model `benchmarks/shrink.py` wrote (auto's fine-tuned probes, read from
`results/shrink/MODEL*.auto.json`, and the hand-picked recipes of `results/shrink.json`; the
uniform ones also prune layers the scan leaves out):

- entropy formula (what auto used before): a bit of entropy for where the zeros are, plus
  log2(clusters), or 8 for int8, per kept weight;
- deflated kernels (what auto uses now, tfcompress/transforms/kernel_bytes.py): each layer's
  kernel pruned and clustered one-shot, quantized as the converter stores it, and deflated.

The rest of the file (other tensors, the flatbuffer) is the same for every setting of a model,
so a good price is a straight line to the gzip with slope 1: what counts is the slope, the
scatter around the line, and how often two settings are ranked the wrong way round. No training:
about a minute.

    python benchmarks/size_prices.py
"""

import itertools
import json
import math

import numpy as np
from absl import app

from tfcompress.plots import require_matplotlib
from tfcompress.transforms.kernel_bytes import kernel_bytes

import render
from shrink_recipes import HAND_PICKED

MODELS = ("lenet_300_100", "lenet5", "dscnn")
PRICINGS = ("entropy formula", "deflated kernels")
CLOSE = 0.005  # closer settings are not counted as ranked: one recipe's seeds move its gzip by 0.3%


def main(argv):
    del argv
    import tf_keras

    shrink_rows = render.stored_result("shrink", {"rows": []})["rows"]
    models = []
    for name in MODELS:
        model = tf_keras.models.load_model(render.ROOT / f"sample_models/{name}.h5", compile=False)
        settings, layers = _measured_settings(name, shrink_rows)
        prices = _Prices(model)
        rows = [
            {
                "setting": label,
                "gzip_bytes": gzip,
                "entropy formula": round(sum(prices.formula(layer, sparsity, clusters) for layer in layers)),
                "deflated kernels": sum(prices.deflated(layer, sparsity, clusters) for layer in layers),
            }
            for sparsity, clusters, gzip, label in settings
        ]
        models.append({"model": name, "rows": rows, "fits": {p: _fit(rows, p) for p in PRICINGS}})
        print(name, {p: models[-1]["fits"][p] for p in PRICINGS}, flush=True)
    render.write_result("size_prices", {"benchmark": "size_prices", "close": CLOSE, "models": models})
    _plot(models, render.RESULTS / "size_prices.png")
    render.render_all()


def _measured_settings(name: str, shrink_rows: list) -> tuple:
    """([(sparsity by layer, clusters by layer, gzip bytes, label)] of each distinct file shrink measured,
    the scanned layers)."""
    settings, layers = {}, set()
    for path in sorted((render.RESULTS / "shrink").glob(f"{name}.*auto.json")):
        report = json.loads(path.read_text())
        layers.update(scan["name"] for scan in report["search"]["scans"])
        for candidate in report["candidates"]:
            if candidate["name"].startswith("pruned+clustered") and candidate["gzip_bytes"]:
                sparsity, clusters = {}, {}
                for step in candidate["training"]:
                    sparsity.update(step.get("prune", {}).get("layer_sparsity", {}))
                    clusters.update(step.get("cluster", {}).get("layer_clusters", {}))
                label = f"auto {candidate['name'].split(':')[0].removeprefix('pruned+clustered ')}"
                settings[label, candidate["gzip_bytes"]] = (sparsity, clusters, candidate["gzip_bytes"], label)
    for row in shrink_rows:
        if row["model"] == name and row["how"] == "hand-picked":
            sparsity, clusters = HAND_PICKED[name][row["setting"]]
            label = f"hand-picked {row['setting']}"
            settings[label, row["gzip_bytes"]] = (sparsity, clusters, row["gzip_bytes"], label)
    return list(settings.values()), sorted(layers)


class _Prices:
    """Both pricings of a layer at its notches, each (layer, notches) deflated once."""

    def __init__(self, model):
        self.model, self.deflated_bytes = model, {}

    def formula(self, layer, sparsity: dict, clusters: dict) -> float:
        s, k = sparsity.get(layer, 0.0), clusters.get(layer)
        weights = int(np.prod(self.model.get_layer(layer).kernel.shape))
        return weights * (_entropy(s) + (1 - s) * math.log2(k or 256)) / 8

    def deflated(self, layer, sparsity: dict, clusters: dict) -> int:
        s, k = float(sparsity.get(layer, 0.0)), clusters.get(layer)
        if (layer, s, k) not in self.deflated_bytes:
            table = kernel_bytes(self.model.get_layer(layer), [s] if s else [], [k] if k else [])
            self.deflated_bytes[layer, s, k] = table[s, k]
        return self.deflated_bytes[layer, s, k]


def _fit(rows: list, pricing: str) -> dict:
    """gzip ≈ a + slope × price: the slope, the residuals' spread, rank agreement, wrong-way pairs."""
    price = np.array([row[pricing] for row in rows], dtype=float)
    gzip = np.array([row["gzip_bytes"] for row in rows], dtype=float)
    slope, intercept = np.polyfit(price, gzip, 1)
    residuals = gzip - (intercept + slope * price)
    pairs = [
        (a, b)
        for a, b in itertools.combinations(range(len(rows)), 2)
        if abs(gzip[a] - gzip[b]) > CLOSE * min(gzip[a], gzip[b])
    ]
    wrong = sum((price[a] - price[b]) * (gzip[a] - gzip[b]) <= 0 for a, b in pairs)
    return {
        "settings": len(rows),
        "slope": round(float(slope), 3),
        "residual_sd": round(float(residuals.std())),
        "residual_max": round(float(np.abs(residuals).max())),
        "spearman": round(float(np.corrcoef(_ranks(price), _ranks(gzip))[0, 1]), 3),
        "pairs": len(pairs),
        "wrong_way_pairs": int(wrong),
    }


def _ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def _entropy(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def _plot(models: list, path) -> None:
    """gzip against each pricing, a panel per model."""
    plt = require_matplotlib()
    figure, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.5))
    for axis, measured in zip(axes, models):
        gzip = np.array([row["gzip_bytes"] for row in measured["rows"]])
        for pricing, marker in zip(PRICINGS, ("x", "o")):
            price = np.array([row[pricing] for row in measured["rows"]])
            fit = measured["fits"][pricing]
            axis.scatter(price, gzip, marker=marker, label=f"{pricing} (slope {fit['slope']:.2f})")
        axis.set_title(measured["model"], fontsize=10)
        axis.set_xlabel("priced bytes of the scanned kernels")
        axis.set_ylabel("gzip of the .tflite (B)")
        axis.legend(fontsize=7)
    figure.suptitle("The chain's size price against the file's gzip (benchmarks/size_prices.py)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    app.run(main)
