"""One batch output from the outputs of its shards, as if one machine had run it.

Each shard's summary.json names its shard and the whole batch's models, so the merge can
tell a shard run twice, a shard missing, and a model missing or produced twice, and
refuses all four. The merged folder appears whole (built under a temporary name).
"""

import json
import shutil
from pathlib import Path

from tfcompress._io import limits
from tfcompress._io.files import place_folder, remove_stale, temporary_name
from tfcompress.errors import DataError, OutputError
from tfcompress.pipeline import batch
from tfcompress.pipeline.shards import ONE_MACHINE

__all__ = ["merge_outputs"]


def merge_outputs(shard_outputs: list, output_dir) -> batch.BatchResult:
    """Copies every shard's NAME/ folders and logs into `output_dir`, with one summary.json/.md."""
    output_dir = Path(output_dir)
    summaries = [_summary(Path(folder)) for folder in shard_outputs]
    _check_shards(summaries, shard_outputs)
    where = {}
    for folder, summary in zip(shard_outputs, summaries):
        for row in summary["models"]:
            if row["name"] in where:
                raise DataError(
                    f"{row['name']} is in both {where[row['name']][0]} and {folder}; merge each shard once."
                )
            where[row["name"]] = (Path(folder), row)
    names = summaries[0]["batch"]
    missing = [name for name in names if name not in where]
    if missing:
        raise DataError(f"No shard output has {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}.")
    _check_new_folder(output_dir)
    staging = temporary_name(output_dir)
    remove_stale(output_dir.parent, output_dir.name)
    try:
        (staging / "logs").mkdir(parents=True)
        for name in names:
            folder, row = where[name]
            if (folder / name).is_dir():
                shutil.copytree(folder / name, staging / name)
            if (folder / "logs" / f"{name}.log").is_file():
                shutil.copyfile(folder / "logs" / f"{name}.log", staging / "logs" / f"{name}.log")
        slowest = max(summary["seconds"] for summary in summaries)  # the shards ran at once
        result = batch.BatchResult(tuple(where[name][1] for name in names), slowest)
        batch.write_summaries(staging, summaries[0]["recipe"], result, ONE_MACHINE, names)
        place_folder(staging, output_dir)
    except OSError as error:
        raise OutputError(f"Cannot write {output_dir}: {error.strerror or error}.") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _summary(folder: Path) -> dict:
    path = limits.check_input_file(folder / "summary.json", "A shard's summary", DataError)
    limits.TEXT_BYTES.check(path.stat().st_size, path, DataError)
    try:
        summary = json.loads(path.read_text())
        if not (
            all(_plain_name(name) for name in summary["batch"])
            and isinstance(summary["shard"]["index"], int)
            and isinstance(summary["shard"]["count"], int)
            and isinstance(summary["seconds"], (int, float))
            and all(_plain_name(row["name"]) for row in summary["models"])
        ):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        raise DataError(
            f"{path} is not a shard summary of tools/compress_models.py (this version writes `shard` and `batch`)."
        ) from None
    return summary


def _plain_name(name) -> bool:
    """An output folder name as the batch makes them: no path separator, not . or .."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _check_shards(summaries: list, folders: list) -> None:
    first = summaries[0]
    for folder, summary in zip(folders, summaries):
        if summary["recipe"] != first["recipe"] or summary["batch"] != first["batch"]:
            raise DataError(f"{folder} ran another batch (recipe or models differ from {folders[0]}).")
        if summary["shard"]["count"] != first["shard"]["count"]:
            raise DataError(
                f"{folder} was split into {summary['shard']['count']} shards, {folders[0]} into "
                f"{first['shard']['count']}."
            )
    indices = sorted(summary["shard"]["index"] for summary in summaries)
    expected = list(range(first["shard"]["count"]))
    if indices != expected:
        missing = sorted(set(expected) - set(indices))
        twice = sorted({index for index in indices if indices.count(index) > 1})
        raise DataError(
            "The shard outputs do not make one batch: "
            + "; ".join(
                part
                for part in (
                    f"shard {', '.join(map(str, missing))} missing" if missing else "",
                    f"shard {', '.join(map(str, twice))} given twice" if twice else "",
                )
                if part
            )
            + "."
        )


def _check_new_folder(folder: Path) -> None:
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise OutputError(f"{folder} exists and is not an empty folder; give a new --output_dir for the merge.")
