"""No nesting of wrappers and models around a Lambda runs its code without --trust_model_code.

Random nestings of TimeDistributed, nested Sequential and nested functional models around
a Lambda that writes a marker file, saved by Keras 2 (.h5) and Keras 3 (.keras and .h5):
loading must refuse every one before Keras sees it, and the marker must never appear.
With the trust flag the same files do run the Lambda, which proves the marker works.
"""

import random

import pytest

from tfcompress import keras_io
from tfcompress.errors import TfcompressError, UnsafeModelError

import hostile_cases

_FORMATS = (("keras2", ".h5"), ("keras3", ".keras"), ("keras3", ".h5"))
_NESTINGS = 210
_TRUSTED_EVERY = 30  # also load every 30th with the trust flag: its Lambda must run


def _random_kinds(rng: random.Random) -> list:
    return [rng.choice(("td", "seq", "func")) for _ in range(rng.randint(1, 4))]


@pytest.mark.parametrize("flavour,suffix", _FORMATS, ids=[f"{f}{s}" for f, s in _FORMATS])
def test_random_nestings_never_run_lambda_code(flavour, suffix, tmp_path):
    rng = random.Random(f"{flavour}{suffix}")
    for index in range(_NESTINGS // len(_FORMATS)):
        folder = tmp_path / str(index)
        folder.mkdir()
        kinds = _random_kinds(rng)
        path = hostile_cases.nested_lambda_model(folder, kinds, flavour, f"model{suffix}")
        with pytest.raises(UnsafeModelError):
            keras_io.load_model(path)
        assert not (folder / hostile_cases.MARKER).exists(), f"{kinds} {flavour}{suffix}: the Lambda ran"
        if index % _TRUSTED_EVERY == 0:
            try:
                keras_io.load_model(path, trust_model_code=True)
            except TfcompressError:  # a trusted Keras 3 Lambda loads, then has no tf_keras translation
                pass
            assert (folder / hostile_cases.MARKER).exists(), f"{kinds} {flavour}{suffix}: trusted, yet no marker"
