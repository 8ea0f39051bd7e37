"""PNG pictures of reports, for what a person would rather look at than read.

matplotlib is optional (`pip install 'tfcompress[plot]'`) and imported only here.
"""

from tfcompress.errors import TfcompressError
from tfcompress.files import save_atomic

__all__ = ["require_matplotlib", "plot_benchmark"]


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise TfcompressError(
            "--plot needs matplotlib: pip install 'tfcompress[plot]' (or pip install matplotlib).") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_benchmark(report, path) -> None:
    """Latency distributions side by side; accuracy vs size when accuracies exist."""
    plt = require_matplotlib()
    with_accuracy = any(model.accuracy is not None for model in report.models)
    figure, axes = plt.subplots(1, 2 if with_accuracy else 1, figsize=(12 if with_accuracy else 7, 4.5),
                                squeeze=False)
    names = [_short(model.model) for model in report.models]
    latency_axis = axes[0][0]
    latency_axis.boxplot([model.latency_samples_us for model in report.models], showfliers=False)
    latency_axis.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
    latency_axis.set_ylabel("invoke latency (us)")
    latency_axis.set_title(f"Latency, {report.machine['threads']} thread(s), {report.machine['cpu'][:40]}",
                           fontsize=9)
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


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1]
