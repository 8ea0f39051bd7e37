import gzip

import numpy as np
import pytest

from tfcompress.data import ModelInput, Preprocessing, as_dataset, fit_to_input, fit_to_inputs, load_data
from tfcompress.errors import DataError

from conftest import CALIBRATION


def test_npz_uint8_is_scaled_to_unit_range():
    data = load_data(CALIBRATION)
    assert data.x.dtype == np.float32 and data.x.shape[1:] == (28, 28, 1)
    assert 0.0 <= data.x.min() and data.x.max() <= 1.0 and data.x.max() > 0.9
    assert data.y is not None and len(data.y) == len(data.x)


def test_declared_preprocessing_overrides_the_default():
    raw = np.load(CALIBRATION)["x"][:5].astype(np.float32)
    data = load_data(CALIBRATION, Preprocessing(scale=2.0 / 255.0, offset=-1.0)).take(5)
    np.testing.assert_allclose(data.x, raw * (2.0 / 255.0) - 1.0, atol=1e-6)


def test_npy_has_no_labels(tmp_path):
    np.save(tmp_path / "x.npy", np.ones((3, 4), np.float32))
    data = load_data(tmp_path / "x.npy")
    assert data.y is None and data.x.shape == (3, 4)


def test_an_array_alone_is_data_without_labels_preprocessed_like_a_file():
    raw = np.load(CALIBRATION)["x"][:4]
    data = as_dataset(raw)
    assert data.y is None
    np.testing.assert_array_equal(data.x, load_data(CALIBRATION).x[:4])
    with pytest.raises(DataError, match="x has 1 NaN or infinite values"):
        as_dataset(np.array([[0.0, np.nan]], np.float32))


def test_one_hot_labels_become_indices(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2), np.float32), y=np.eye(3)[[2, 0, 1]])
    np.testing.assert_array_equal(load_data(tmp_path / "d.npz").y, [2, 0, 1])


@pytest.mark.parametrize(
    "y",
    [np.random.default_rng(0).normal(size=(3, 3)), np.array([[1, 1, 0], [0, 1, 1], [1, 0, 0]])],
    ids=["regression targets", "multi-hot rows"],
)
def test_rows_that_are_not_class_distributions_are_not_taken_for_labels(tmp_path, y):
    """Their argmax would read as class labels and make a meaningless accuracy."""
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 2), np.float32), y=y)
    with pytest.raises(DataError, match="3 values per sample that are not one-hot rows.*leave y out"):
        load_data(tmp_path / "d.npz")
    sequences = np.zeros((3, 4, 2), np.float32)  # a sequence regressor's targets: no reshape to labels
    np.savez(tmp_path / "sequences.npz", x=np.zeros((3, 2), np.float32), y=sequences)
    with pytest.raises(DataError, match=r"values of shape \(4, 2\) per sample.*leave y out"):
        load_data(tmp_path / "sequences.npz")
    soft = np.array([[0.1, 0.7, 0.2], [0.9, 0.05, 0.05], [0.0, 0.0, 1.0]])
    np.savez(tmp_path / "soft.npz", x=np.zeros((3, 2), np.float32), y=soft)
    np.testing.assert_array_equal(load_data(tmp_path / "soft.npz").y, [1, 0, 2])


def test_image_folder_one_subfolder_per_class(tmp_path):
    from PIL import Image

    for label, value in (("cat", 10), ("dog", 200)):
        (tmp_path / label).mkdir()
        for index in range(2):
            Image.fromarray(np.full((6, 5), value, np.uint8)).save(tmp_path / label / f"{index}.png")
    data = load_data(tmp_path)
    assert data.x.shape == (4, 6, 5, 1)
    np.testing.assert_array_equal(data.y, [0, 0, 1, 1])
    np.testing.assert_allclose(data.x[3].max(), 200 / 255, atol=1e-6)


def _write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_idx_folder_needs_a_split_and_reads_it(tmp_path):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([1, 2, 3]))
    with pytest.raises(DataError, match="@train or"):
        load_data(tmp_path)
    data = load_data(f"{tmp_path}@test")
    assert data.x.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(data.y, [1, 2, 3])
    np.testing.assert_allclose(data.x[..., 0] * 255, images, atol=1e-3)


def test_truncated_idx_file_is_an_error(tmp_path):
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 3]) + (10).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\0" * 100)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(10))
    with pytest.raises(DataError, match="truncated"):
        load_data(f"{tmp_path}@test")


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x": np.zeros((0, 28, 28, 1), np.uint8)}, "no samples"),
        ({"x": np.array([[np.nan, 1.0]], np.float32)}, "NaN"),
        ({"x": np.array([["a", "b"]])}, "dtype"),
        ({"x": np.zeros((3, 2)), "y": np.zeros(2)}, "3 samples but y has 2"),
    ],
)
def test_bad_data_files_name_the_problem(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_data(tmp_path / "bad.npz")


def test_arrays_not_named_x_are_matched_to_inputs_by_name_or_refused(tmp_path):
    np.savez(tmp_path / "named.npz", images=np.zeros((3, 2)), y=np.zeros(3))
    data = load_data(tmp_path / "named.npz")
    assert fit_to_inputs(data, (ModelInput("images", (None, 2)),)).x.shape == (3, 2)
    with pytest.raises(DataError, match=r"has arrays \['images'\] but no 'x'"):
        fit_to_inputs(data, (ModelInput("pixels", (None, 2)),))
    with pytest.raises(DataError, match="no 'x'"):
        fit_to_input(data, (None, 2))  # what training jobs call: one input, no names


def test_arrays_for_several_inputs_are_bounded_together_before_they_are_read(tmp_path, monkeypatch):
    np.savez(tmp_path / "two.npz", image=np.zeros((100, 10), np.float32), meta=np.zeros((100, 10), np.float32))
    monkeypatch.setenv("TFCOMPRESS_MAX_DATA_BYTES", "6000")  # each array is 4,128 bytes stored
    with pytest.raises(DataError, match=r"two.npz \(all arrays together\) declares an array of 8,256 bytes"):
        load_data(tmp_path / "two.npz")


def test_shape_mismatch_shows_both_shapes_and_reshape_is_opt_in():
    data = load_data(CALIBRATION).take(4)
    flat = data.__class__(data.x.reshape(4, 28, 28), data.y, "flat")
    with pytest.raises(DataError, match=r"\(28, 28\).*\(28, 28, 1\)"):
        fit_to_input(flat, (None, 28, 28, 1))
    assert fit_to_input(flat, (None, 28, 28, 1), reshape=True).x.shape == (4, 28, 28, 1)
