"""Trains the sample models on Fashion-MNIST and writes them, with small data files,
into sample_models/; see --help. Needs Debian's dataset-fashion-mnist."""

import json

from absl import app, flags

from tfcompress.cli import run_tool
from tfcompress.testing import sample_models

_DATA_DIR = flags.DEFINE_string(
    "data_dir",
    "/usr/share/datasets/fashion-mnist",
    "Folder with the Fashion-MNIST IDX files (apt-get install dataset-fashion-mnist).",
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "sample_models", "Where the models and data go.")
_ONLY = flags.DEFINE_list("only", None, "Build only these models (default: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for weights and shuffling.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}", exitcode=2)
    written = sample_models.make_sample_models(_DATA_DIR.value, _OUTPUT_DIR.value, only=_ONLY.value, seed=_SEED.value)
    print(json.dumps(written, indent=1))


if __name__ == "__main__":
    run_tool(main)
