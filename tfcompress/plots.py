"""PNG pictures of reports, for what a person would rather look at than read.

matplotlib is optional (`pip install 'tfcompress[plot]'`) and imported only here.
"""

from tfcompress._io.files import save_atomic
from tfcompress.errors import TfcompressError

__all__ = [
    "INSTALL_HINT",
    "require_matplotlib",
    "matplotlib_installed",
    "plot_benchmark",
    "plot_sensitivity",
    "plot_candidates",
]

INSTALL_HINT = "pip install 'tfcompress[plot]'"


def matplotlib_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise TfcompressError(f"--plot needs matplotlib: {INSTALL_HINT} (or pip install matplotlib).") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_benchmark(report, path) -> None:
    """Latency distributions side by side; accuracy vs size when accuracies exist."""
    plt = require_matplotlib()
    with_accuracy = any(model.accuracy is not None for model in report.models)
    figure, axes = plt.subplots(1, 2 if with_accuracy else 1, figsize=(12 if with_accuracy else 7, 4.5), squeeze=False)
    names = [_short(model.model) for model in report.models]
    latency_axis = axes[0][0]
    latency_axis.boxplot([model.latency_samples_us for model in report.models], showfliers=False)
    latency_axis.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
    latency_axis.set_ylabel("invoke latency (us)")
    latency_axis.set_title(f"Latency, {report.machine['threads']} thread(s), {report.machine['cpu'][:40]}", fontsize=9)
    if with_accuracy:
        size_axis = axes[0][1]
        for name, model in zip(names, report.models):
            if model.accuracy is not None:
                size_axis.scatter(model.size_bytes / 1024, model.accuracy * 100)
                size_axis.annotate(name, (model.size_bytes / 1024, model.accuracy * 100), fontsize=8)
        size_axis.set_xlabel("size (KiB)")
        size_axis.set_ylabel("accuracy (%)")
        size_axis.set_title("Accuracy vs size", fontsize=9)
    figure.tight_layout()
    save_atomic(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


def plot_sensitivity(report, path) -> None:
    """Each int8 op's error in graph order: RMSE per quantization step, and SQNR."""
    plt = require_matplotlib()
    labels = [f"{report.row_name(layer)} ({layer.kind})" if layer.kind else layer.layer[:40] for layer in report.layers]
    positions = range(len(labels))
    figure, (rmse_axis, sqnr_axis) = plt.subplots(1, 2, figsize=(11, 0.32 * len(labels) + 1.6), sharey=True)
    rmse = [layer.rmse_over_scale for layer in report.layers]
    rmse_axis.barh(
        positions, rmse, color=["tab:red" if value > 2 * report.rounding_only else "tab:blue" for value in rmse]
    )
    rmse_axis.axvline(report.rounding_only, color="gray", linestyle="--", linewidth=1)
    rmse_axis.set_yticks(list(positions), labels, fontsize=8)
    rmse_axis.invert_yaxis()
    rmse_axis.set_xlabel("RMSE / quantization step (dashed: rounding alone; red: over twice that)")
    sqnr_axis.barh(positions, [layer.sqnr_db for layer in report.layers], color="tab:green")
    sqnr_axis.set_xlabel("SQNR (dB, higher is better)")
    figure.suptitle(f"int8 sensitivity per layer: {_short(report.model)}", fontsize=10)
    figure.tight_layout()
    save_atomic(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


_JUDGED_BY = {
    "accuracy_drop": ("accuracy drop vs float (pt)", 1),
    "relative_error": ("error relative to Keras (%)", 100),
}


def plot_candidates(candidates, chosen, path, title: str, measure: str = "accuracy_drop") -> None:
    """The budget's measure (accuracy drop, or relative error) vs gzip size of every candidate `tfcompress
    auto` measured; the Pareto front joined."""
    plt = require_matplotlib()
    figure, axis = plt.subplots(figsize=(8, 5))
    label, scale = _JUDGED_BY[measure]
    measured = [c for c in candidates if getattr(c, measure) is not None]
    for candidate in measured:
        marker = "*" if candidate is chosen else "o"
        axis.scatter(
            candidate.gzip_bytes / 1024,
            getattr(candidate, measure) * scale,
            marker=marker,
            s=160 if candidate is chosen else 40,
            color="tab:red" if candidate is chosen else "tab:blue",
        )
        axis.annotate(
            candidate.name[:40],
            (candidate.gzip_bytes / 1024, getattr(candidate, measure) * scale),
            fontsize=7,
            xytext=(4, 2),
            textcoords="offset points",
        )
    front = sorted((c for c in measured if c.pareto), key=lambda c: c.gzip_bytes)
    axis.plot(
        [c.gzip_bytes / 1024 for c in front], [getattr(c, measure) * scale for c in front], color="gray", linewidth=1
    )
    axis.set_xscale("log")
    axis.set_xlabel("size after gzip (KiB, log scale)")
    axis.set_ylabel(label)
    axis.set_title(title, fontsize=10)
    figure.tight_layout()
    save_atomic(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


def plot_layer_scan(scans, path, model_name: str, measure: str = "accuracy_drop") -> None:
    """Each layer pruned alone (left) and clustered alone (right), one-shot: where its accuracy gives way
    (`measure` "relative_error": where its outputs do)."""
    plt = require_matplotlib()
    if measure == "accuracy_drop":
        loss = "accuracy drop, no fine-tuning (pt)"
    else:
        loss = "relative error of the outputs, no fine-tuning (%)"
    figure, (pruned, clustered) = plt.subplots(1, 2, figsize=(11, 4.5))  # clustering drops are far smaller
    for scan in scans:
        label = f"{scan.name} ({scan.weights:,} weights)"
        pruned.plot([s * 100 for s in scan.prune_drop], list(scan.prune_drop.values()), marker="o", label=label)
        counts = sorted(scan.cluster_drop)
        clustered.plot(counts, [scan.cluster_drop[k] for k in counts], marker="o", label=label)
    pruned.set_xlabel("sparsity of the layer alone (%)")
    pruned.set_ylabel(loss)
    clustered.set_xscale("log", base=2)
    clustered.set_xticks(counts, [str(count) for count in counts])
    clustered.invert_xaxis()
    clustered.set_ylabel(loss)
    clustered.set_xlabel("clusters of the layer alone")
    for axis in (pruned, clustered):
        axis.axhline(0, color="gray", linewidth=0.5)
    pruned.legend(fontsize=7)
    figure.suptitle(f"{model_name}: per-layer sensitivity", fontsize=10)
    figure.tight_layout()
    save_atomic(path, lambda tmp: figure.savefig(tmp, dpi=110, format="png"))
    plt.close(figure)


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]
