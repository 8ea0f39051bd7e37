"""Runs one recipe over many models for a build pipeline: in parallel, sharded, cached, resumable.

    python tools/compress_models.py --input_dir models --recipe mobile_int8 \
        --output_dir out --cache_dir ~/.cache/tfcompress-ci --jobs 2

Writes out/NAME/ (the recipe's outputs), out/logs/NAME.log, out/summary.json and
out/summary.md (append it to $GITHUB_STEP_SUMMARY). Exit 0: every model passed its
budgets; 1: a budget was broken; 2: a model could not be processed (the others
still finish). Run the same command again after an interruption: finished models
are kept. Data comes from --train/--calibration/--eval, else the recipe, else a
tfcompress-data.yaml beside the models.

On many machines (docs/pipelines.md): --cache_dir s3://bucket/prefix (or gs://, file://)
shares the cache; each job takes its shard from --shard_index/--num_shards or from its
engine (TFCOMPRESS_SHARD_INDEX/TFCOMPRESS_NUM_SHARDS from a GitHub Actions matrix,
Kubernetes JOB_COMPLETION_INDEX, SLURM arrays, GitLab CI parallel); then
`--merge out0,out1 --output_dir out` joins the shards' outputs into one.
"""

from absl import app, flags

from tfcompress.cli import run_tool
from tfcompress.pipeline import batch, merge, shards

_INPUT_DIR = flags.DEFINE_string("input_dir", None, "Folder of models (.h5, .keras, SavedModel folders).")
_INPUTS = flags.DEFINE_string("inputs", None, "Or: a glob of models, e.g. 'models/**/*.h5' (quote it).")
_RECIPE = flags.DEFINE_string(
    "recipe",
    "mobile_int8",
    "A built-in recipe name (mobile_int8, mobile_float16, "
    "mcu_int8, mcu_int4, deep_compression, deep_compression_mcu) or a recipe YAML file.",
)
_OUTPUT_DIR = flags.DEFINE_string("output_dir", None, "Where outputs, logs and the summaries go.")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir",
    None,
    "Content-addressed cache shared between runs (optional): a folder, or s3://bucket/prefix, gs://..., "
    "file://... shared between machines (pip install 'tfcompress[remote]'; credentials from the environment).",
)
_JOBS = flags.DEFINE_integer("jobs", 1, "Models processed at once (one process each).", lower_bound=1)
_SHARD_INDEX = flags.DEFINE_integer(
    "shard_index", None, "This job's shard (0-based); default: from the CI engine's environment, else 0.", lower_bound=0
)
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards",
    None,
    "How many shards the models are split into; default: from the environment, else 1.",
    lower_bound=1,
)
_MERGE = flags.DEFINE_list(
    "merge", None, "Instead of running: join these shard output folders (comma-separated) into --output_dir."
)
_DATA = {
    role: flags.DEFINE_string(role, None, f"{role.capitalize()} data for every model (over the recipe's).")
    for role in ("train", "val", "calibration", "eval")
}
_TRUST = flags.DEFINE_boolean("trust_model_code", False, "Allow Lambda layers (their stored code runs).")
_CUSTOM_OBJECTS = flags.DEFINE_string("custom_objects", None, "Python file defining the models' custom layers.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}", exitcode=2)
    if _OUTPUT_DIR.value is None:
        raise app.UsageError("--output_dir is required.", exitcode=2)
    result = merge.merge_outputs(_MERGE.value, _OUTPUT_DIR.value) if _MERGE.value else _run_shard()
    counts = result.to_dict()["counts"]
    print(
        f"{f'merged {len(_MERGE.value)} shards: ' if _MERGE.value else ''}{counts['passed']} passed, "
        f"{counts['failed']} failed a budget, {counts['error']} errors in {result.seconds:.1f} s; "
        f"summary: {_OUTPUT_DIR.value}/summary.md"
    )
    return result.exit_code


def _run_shard() -> batch.BatchResult:
    models = batch.find_models(_INPUT_DIR.value, _INPUTS.value)
    shard = shards.resolve_shard(_SHARD_INDEX.value, _NUM_SHARDS.value)
    options = batch.BatchOptions(
        recipe=_RECIPE.value,
        output_dir=_OUTPUT_DIR.value,
        cache_dir=_CACHE_DIR.value,
        jobs=_JOBS.value,
        data={role: holder.value for role, holder in _DATA.items() if holder.value is not None},
        run_flags=_run_flags(),
    )
    print(f"{_which_models(models, shard)}, recipe {_RECIPE.value}, {_JOBS.value} at a time", flush=True)
    return batch.run_batch(models, options, progress=lambda line: print(line, flush=True), shard=shard)


def _which_models(models: list, shard) -> str:
    if shard.count == 1:
        return f"{len(models)} model{'s' * (len(models) != 1)}"
    return f"{len(shard.pick(models))} of {len(models)} models ({shard.describe()})"


def _run_flags() -> tuple:
    return (("--trust_model_code",) if _TRUST.value else ()) + (
        (f"--custom_objects={_CUSTOM_OBJECTS.value}",) if _CUSTOM_OBJECTS.value else ()
    )


if __name__ == "__main__":
    run_tool(main)
