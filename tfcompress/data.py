"""Data files → arrays a model can take: calibration, training and evaluation sets.

Preprocessing is declared, not guessed: uint8 data is scaled to [0, 1] (the sample
models are trained that way), other data is used as stored, and `input_scale` /
`input_offset` override both. Each Dataset records what was applied, and reports show it.
A model with several inputs takes one array per input: an `.npz` names them by input name, or
`x0`, `x1`, ... in the model's input order; a fitted Dataset holds them as a tuple in that order.
Only numpy is needed here (Pillow for image folders), so the TensorFlow-free benchmark path can load its eval data too.
"""

import dataclasses
import gzip
import warnings
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np

from tfcompress._io import limits
from tfcompress.errors import DataError, one_line

__all__ = [
    "Dataset",
    "ModelInput",
    "Preprocessing",
    "per_input",
    "one_or_tuple",
    "concatenated",
    "keras_inputs",
    "fit_to_inputs",
    "noise",
    "load_data",
    "as_dataset",
    "input_data",
    "load_raw",
    "sample_shape",
    "fit_to_input",
    "check_sample_shape",
]

_IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Inputs `x` (float32, preprocessed) and optional integer class labels `y`.

    `x` is one array for a model with one input; for several, a tuple of arrays in the model's
    input order once fitted (`fit_to_inputs`), and a dict name → array as read from a file."""

    x: object
    y: Optional[np.ndarray]
    source: str
    preprocessing: Optional[dict] = None  # what was applied to the stored values (Preprocessing.applied)

    def __len__(self):
        return len(per_input(self.x)[0])

    def take(self, count: Optional[int]) -> "Dataset":
        """The first `count` samples: deterministic, so calibration is repeatable."""
        if count is None or count >= len(self):
            return self
        y = None if self.y is None else self.y[:count]
        return dataclasses.replace(self, x=_each(self.x, lambda x: x[:count]), y=y)


@dataclasses.dataclass(frozen=True)
class ModelInput:
    """One input of a model, as data is matched to it: by name, else by position."""

    name: str
    shape: tuple  # batch first, None for any size


def keras_inputs(model) -> tuple:
    """The ModelInputs of a functional Keras model, in its order."""
    return tuple(ModelInput(name, tuple(tensor.shape)) for name, tensor in zip(model.input_names, model.inputs))


def per_input(x) -> tuple:
    """The arrays of `x`, one per model input."""
    if isinstance(x, dict):
        return tuple(x.values())
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def one_or_tuple(arrays):
    """Arrays in the form `x` and outputs take: the array itself when there is one, else a tuple."""
    arrays = tuple(arrays)
    return arrays[0] if len(arrays) == 1 else arrays


def concatenated(first, second):
    """The samples of `second` after those of `first`, input by input (two arrays, or two tuples)."""
    return one_or_tuple(np.concatenate(pair) for pair in zip(per_input(first), per_input(second)))


def _each(x, function):
    """`function` applied to every array of `x`, keeping its form (array, tuple or dict)."""
    if isinstance(x, dict):
        return {name: function(array) for name, array in x.items()}
    if isinstance(x, (tuple, list)):
        return tuple(function(array) for array in x)
    return function(x)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """x_model = x_stored * scale + offset; scale None means 1/255 for uint8, else 1."""

    scale: Optional[float] = None
    offset: float = 0.0

    def apply(self, x: np.ndarray) -> np.ndarray:
        scale = self._scale(x.dtype)
        return (x.astype(np.float32) * np.float32(scale) + np.float32(self.offset)).astype(np.float32)

    def dataset(self, x, y, source: str) -> "Dataset":
        """Stored arrays → a Dataset of model inputs, with what was applied recorded (per input
        when there are several: uint8 images and float features are scaled differently)."""
        if isinstance(x, (dict, tuple, list)):
            named = x.items() if isinstance(x, dict) else ((f"x{i}", array) for i, array in enumerate(x))
            applied = {"per_input": {name: self.applied(array.dtype) for name, array in named}}
            return Dataset(_each(x, self.apply), y, source, applied)
        return Dataset(self.apply(x), y, source, self.applied(x.dtype))

    def applied(self, stored_dtype) -> dict:
        """What `apply` does to data stored as `stored_dtype`: reports record it, as a model trained on
        other scaling gives plausible-looking but wrong numbers."""
        return {
            "stored_dtype": np.dtype(stored_dtype).name,
            "scale": self._scale(stored_dtype),
            "offset": self.offset,
            "default_scale": self.scale is None,
        }

    def _scale(self, stored_dtype) -> float:
        if self.scale is not None:
            return self.scale
        return 1.0 / 255.0 if np.dtype(stored_dtype) == np.uint8 else 1.0


def noise(shape, seed: int = 0) -> np.ndarray:
    """Seeded uniform noise in [0, 1), float32: the inputs used where no data is given (and said so)."""
    return np.random.default_rng(seed).uniform(0.0, 1.0, tuple(shape)).astype(np.float32)


def load_data(spec, preprocessing: Preprocessing = Preprocessing()) -> Dataset:
    """Loads `.npz` (arrays `x`, optional `y`), `.npy`, an image folder, or IDX files.

    An IDX folder (e.g. Debian's /usr/share/datasets/fashion-mnist) holds two splits:
    name one as `FOLDER@train` or `FOLDER@test`.
    """
    x, y = load_raw(spec)
    return preprocessing.dataset(x, _labels(y, spec), str(spec))


def sample_shape(spec) -> Optional[tuple]:
    """The shape of a data file's samples, after every check `load_data` makes but without the
    preprocessing (a float copy of a large uint8 file costs seconds); None for one array per input."""
    x, y = load_raw(spec)
    _labels(y, spec)
    return None if isinstance(x, dict) else tuple(x.shape[1:])


def as_dataset(data, preprocessing: Preprocessing = Preprocessing()) -> Dataset:
    """What the API accepts as data: a file spec, a `Dataset`, arrays `(x, y)`, an array `x` (no
    labels), or a tf.data dataset.

    Arrays and datasets go through the same preprocessing as files. A tf.data dataset
    (of `(x, y)` elements or batches) is read into memory once: training here shuffles
    and batches arrays itself.
    """
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple) and len(data) == 2:
        x, y = _as_arrays(data[0]), np.asarray(data[1])
        _check_arrays(x, y, "the (x, y) arrays")
        return preprocessing.dataset(x, _labels(y, "the (x, y) arrays"), "arrays")
    if isinstance(data, (np.ndarray, list, dict)):
        x, source = _as_arrays(data), "array" if isinstance(data, np.ndarray) else "arrays"
        _check_arrays(x, None, f"the x {source}")
        return preprocessing.dataset(x, None, source)
    if hasattr(data, "as_numpy_iterator"):
        return as_dataset(_tf_data_arrays(data), preprocessing)
    return load_data(data, preprocessing)


def input_data(
    data, inputs, preprocessing: Preprocessing = Preprocessing(), *, reshape: bool = False
) -> Optional[Dataset]:
    """Data as the API accepts it (`as_dataset`), checked against a model's inputs (`ModelInput`s,
    or the one input's shape); None stays None."""
    if data is None:
        return None
    dataset = as_dataset(data, preprocessing)
    if inputs and isinstance(inputs[0], ModelInput):
        return fit_to_inputs(dataset, inputs, reshape=reshape)
    return fit_to_input(dataset, inputs, reshape=reshape)


def _as_arrays(x):
    """The API's x: an array, or a list (model order) or dict (input names) of arrays, one per input."""
    if isinstance(x, dict):
        return {str(name): np.asarray(array) for name, array in x.items()}
    if isinstance(x, list):
        return tuple(np.asarray(array) for array in x)
    return np.asarray(x)


def _tf_data_arrays(dataset) -> tuple:
    elements = list(dataset.as_numpy_iterator())
    if not elements or not isinstance(elements[0], tuple) or len(elements[0]) != 2:
        raise DataError("A tf.data dataset passed as data must yield (x, y) pairs or batches of them.")
    batched = len(dataset.element_spec[0].shape) > 0 and dataset.element_spec[0].shape[0] is None
    join = np.concatenate if batched else np.stack
    return join([x for x, _ in elements]), join([y for _, y in elements])


def load_raw(spec):
    """The stored arrays (x, y or None), checked but not preprocessed."""
    path_text, _, split = str(spec).partition("@")
    path = Path(path_text)
    if not path.exists():
        raise DataError(f"Data file not found: {path}. Pass a .npz, .npy, image folder or IDX folder.")
    limits.check_input_file(path, "Data file", DataError, folder_ok=True)
    if path.is_dir():
        x, y = _load_folder(path, split)
    elif path.suffix == ".npz":
        x, y = _load_npz(path)
    elif path.suffix == ".npy":
        x, y = _load_npy(path), None
    else:
        raise DataError(
            f"Unsupported data file {path}: expected .npz (arrays x, y), .npy, an image folder "
            "or a folder of IDX files."
        )
    _check_arrays(x, y, path)
    return x, y


def fit_to_inputs(data: Dataset, inputs, *, reshape: bool = False) -> Dataset:
    """Checks `data` against a model's inputs (`ModelInput`s) and orders its arrays as they are:
    arrays named by input name, else `x0`, `x1`, ... (or given as a list) in the model's order."""
    if len(inputs) == 1:
        if isinstance(data.x, dict):
            data = dataclasses.replace(data, x=_arrays_by_input(data, inputs)[0])
        return fit_to_input(data, inputs[0].shape, reshape=reshape)
    arrays = _arrays_by_input(data, inputs)
    fitted = []
    for array, model_input in zip(arrays, inputs):
        part = fit_to_input(
            Dataset(array, None, f"{data.source} ('{model_input.name}')"), model_input.shape, reshape=reshape
        )
        fitted.append(part.x)
    return dataclasses.replace(data, x=tuple(fitted))


def _arrays_by_input(data: Dataset, inputs) -> tuple:
    names = [model_input.name for model_input in inputs]
    wanted = f"one array per input, named by input ({', '.join(names)}) or x0 to x{len(names) - 1} in that order"
    if isinstance(data.x, dict):
        for keys in (names, [f"x{i}" for i in range(len(names))]):
            if all(key in data.x for key in keys):
                return tuple(data.x[key] for key in keys)
        if len(names) == 1:
            _refuse_unnamed(data)
        raise DataError(f"Data {data.source} has arrays {sorted(data.x)}; the model has {len(names)} inputs: {wanted}.")
    arrays = per_input(data.x)
    if len(arrays) != len(names):
        raise DataError(
            f"Data {data.source} has {len(arrays)} input array(s); the model has {len(names)} inputs: {wanted}."
        )
    return arrays


def fit_to_input(data: Dataset, input_shape, *, reshape: bool = False) -> Dataset:
    """Checks `data` against a model input shape (batch first, None for any size).

    With `reshape`, samples holding the same number of values are reshaped (e.g.
    N×28×28 → N×28×28×1); otherwise a mismatch is an error showing both shapes.
    """
    if isinstance(data.x, dict):
        _refuse_unnamed(data)
    arrays = per_input(data.x)
    if len(arrays) != 1:
        raise DataError(
            f"Data {data.source} holds {len(arrays)} input arrays, but the model has one input; pass one x array."
        )
    data = dataclasses.replace(data, x=arrays[0])
    wanted = tuple(input_shape[1:])
    have = tuple(data.x.shape[1:])
    check_sample_shape(have, input_shape, data.source, reshape=reshape)
    if _shape_matches(have, wanted):
        return data
    return dataclasses.replace(data, x=data.x.reshape((len(data),) + wanted))


def _refuse_unnamed(data: Dataset) -> None:
    raise DataError(
        f"{data.source} has arrays {sorted(data.x)} but no 'x'. Save inputs as x (and labels as y): "
        "np.savez(path, x=..., y=...); for a model with several inputs, one array per input named by input."
    )


def check_sample_shape(have: tuple, input_shape, source, *, reshape: bool = False) -> None:
    """The one mismatch message, for stored samples of shape `have` and a model input (batch first)."""
    wanted = tuple(input_shape[1:])
    if _shape_matches(have, wanted):
        return
    if reshape and None not in wanted and int(np.prod(have)) == int(np.prod(wanted)):
        return
    raise DataError(
        f"Data {source} has samples of shape {have}, but the model expects {wanted}. "
        "Pass data of the model's input shape (or --reshape_data when only the layout differs)."
    )


def _shape_matches(have, wanted) -> bool:
    return len(have) == len(wanted) and all(w is None or w == h for h, w in zip(have, wanted))


def _load_npz(path: Path):
    try:
        _check_npz_headers(path)
        with np.load(path, allow_pickle=False) as archive:
            y = archive["y"] if "y" in archive.files else None
            if "x" in archive.files:
                return archive["x"], y
            inputs = [name for name in archive.files if name != "y"]
            if not inputs:
                raise DataError(
                    f"{path} has arrays {sorted(archive.files)} but no 'x'. "
                    "Save inputs as x (and labels as y): np.savez(path, x=..., y=...)."
                )
            return {name: archive[name] for name in inputs}, y
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"Cannot read {path} as .npz: {one_line(error)}") from None


def _load_npy(path: Path):
    try:
        with open(path, "rb") as handle:
            _check_array_header(handle, path.stat().st_size, path)
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"Cannot read {path} as .npy: {one_line(error)}") from None


def _check_npz_headers(path: Path) -> None:
    """Each member's declared array must fit in what the member holds, and the members, one by one
    and together (every array is read for a model with several inputs), in the limits."""
    with zipfile.ZipFile(path) as archive:
        total = 0
        for member in archive.infolist():
            where = f"{path} ({member.filename})"
            limits.DATA_BYTES.check(member.file_size, where, DataError)
            total += member.file_size
            limits.DATA_BYTES.check(total, f"{path} (all arrays together)", DataError)
            if member.file_size > (1 << 20):
                limits.COMPRESSION_RATIO.check(
                    member.file_size // max(member.compress_size, 1), where, DataError, unit=": 1"
                )
            if member.filename.endswith(".npy"):
                with archive.open(member) as handle:
                    _check_array_header(handle, member.file_size, where)


def _check_array_header(handle, stored_bytes: int, where) -> None:
    """Reads only the .npy header: an array that declares more bytes than the file stores is
    refused before numpy allocates it."""
    version = np.lib.format.read_magic(handle)
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = reader(handle, max_header_size=10_000)
    if dtype.hasobject:
        raise DataError(
            f"{where} stores Python objects (a pickle), which tfcompress does not load; save numeric arrays."
        )
    declared = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if declared > stored_bytes:
        raise DataError(
            f"{where} declares an array of shape {shape} ({declared:,} bytes) but stores only "
            f"{stored_bytes:,} bytes; the file is truncated or forged."
        )
    limits.DATA_BYTES.check(declared, where, DataError)


def _load_folder(path: Path, split: str):
    if any((path / name).exists() for names in _IDX_FILES.values() for name in names):
        if split not in _IDX_FILES:
            raise DataError(
                f"{path} holds IDX files of several splits. Received: split={split!r}; "
                f"name one as {path}@train or {path}@test."
            )
        images, labels = (path / name for name in _IDX_FILES[split])
        return _read_idx(images), _read_idx(labels)
    return _load_image_folder(path)


def _read_idx(path: Path) -> np.ndarray:
    """Reads an (optionally gzipped) IDX file: magic, dims, big-endian sizes, uint8 data."""
    limit = limits.DATA_BYTES.value
    try:
        limits.check_input_file(path, "IDX file", DataError)
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as handle:
            raw = handle.read(limit + 1)  # a gzip bomb stops here
    except (OSError, EOFError) as error:
        raise DataError(f"Cannot read IDX file {path}: {one_line(error)}") from None
    limits.DATA_BYTES.check(len(raw), path, DataError)
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file (bad magic number).")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, found {data.size} values.")
    data = data.reshape(dims)
    return data[..., np.newaxis] if ndim == 3 else data


def _load_image_folder(path: Path):
    classes = sorted(p for p in path.iterdir() if p.is_dir())
    if not classes:
        raise DataError(f"{path} has no class sub-folders. An image folder needs one sub-folder per class.")
    try:
        from PIL import Image
    except ImportError:
        raise DataError("Reading an image folder needs Pillow: pip install pillow") from None
    images, labels, pixels = [], [], 0
    for label, folder in enumerate(classes):
        for file in sorted(folder.iterdir()):
            if file.suffix.lower() in _IMAGE_SUFFIXES:
                array = _read_image(file, Image)
                pixels += array.size
                limits.DATA_BYTES.check(pixels * 4, path, DataError)
                images.append(array[..., np.newaxis] if array.ndim == 2 else array)
                labels.append(label)
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        raise DataError(f"Images in {path} differ in size {sorted(shapes)}; resize them to one size first.")
    if not images:
        return np.zeros((0,), np.uint8), None
    return np.stack(images), np.asarray(labels, np.int64)


def _read_image(file: Path, Image) -> np.ndarray:
    """One image, its dimensions checked from the header before the pixels are decoded."""
    limits.check_input_file(file, "Image", DataError)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                limits.IMAGE_PIXELS.check(
                    image.width * image.height, f"{file} ({image.width}x{image.height})", DataError, unit="pixels"
                )
                return np.asarray(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise DataError(f"{file}: {one_line(error)}") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise DataError(f"{file} is not a readable image ({one_line(error)}); remove it from the folder.") from None


def _check_arrays(x, y, path) -> None:
    """Every input array holds numbers, finite, with as many samples as the others and the labels."""
    if isinstance(x, (dict, tuple)):
        named = x.items() if isinstance(x, dict) else ((f"x{i}", array) for i, array in enumerate(x))
        counts = set()
        for name, array in named:
            _check_arrays(array, y, f"{path} ('{name}')")
            counts.add(len(array))
        if len(counts) > 1:
            raise DataError(f"{path}: the input arrays hold different numbers of samples {sorted(counts)}.")
        return
    if x.size == 0 or len(x) == 0:
        raise DataError(f"{path} holds no samples (x has shape {x.shape}).")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: x has dtype {x.dtype}; expected numbers (uint8 images or float32 values).")
    if np.issubdtype(x.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(x)))
        if bad:
            raise DataError(f"{path}: x has {bad} NaN or infinite values; clean the data first.")
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: x has {len(x)} samples but y has {len(y)} labels.")


def _labels(y, path: Path) -> Optional[np.ndarray]:
    """Class indices; one-hot rows (or rows of class probabilities) are turned into indices."""
    if y is None:
        return None
    y = np.asarray(y)
    if y.ndim > 2:
        raise DataError(_not_labels(path, f"values of shape {y.shape[1:]} per sample"))
    if y.ndim == 2 and y.shape[1] > 1:
        if not _class_rows(y):
            raise DataError(_not_labels(path, f"{y.shape[1]} values per sample that are not one-hot rows"))
        return np.argmax(y, axis=1).astype(np.int64)
    y = y.reshape(len(y))
    if not np.issubdtype(y.dtype, np.integer):
        if not np.issubdtype(y.dtype, np.floating) or not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataError(_not_labels(path, f"{y.dtype} values"))
    if len(y) and y.min() < 0:
        raise DataError(f"{path}: y holds the negative label {int(y.min())}; class labels start at 0.")
    return y.astype(np.int64)


def _class_rows(y: np.ndarray) -> bool:
    """Whether each row is a class distribution (one-hot, smoothed or soft labels): regression targets
    or multi-hot rows are not, and their argmax would be a meaningless label."""
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        return False
    rows = y.astype(np.float64)
    return bool(np.all(np.isfinite(rows)) and rows.min() >= 0 and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3))


def _not_labels(path, held: str) -> str:
    return (
        f"{path}: y must hold integer class labels (or one-hot rows); got {held}. For a regression, "
        "multi-label or reconstruction model leave y out: its outputs are measured against the Keras model's, "
        "and training steps fine-tune towards them."
    )
