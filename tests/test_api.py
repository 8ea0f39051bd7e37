"""The public API: `tfcompress.NAME` is what the docs say, however the modules got loaded."""

import importlib
import inspect

import tfcompress


def test_public_names_are_the_functions_even_after_their_modules_load():
    for name in tfcompress.__all__:
        if name != "__version__":
            importlib.import_module(tfcompress._API[name])
    for name in tfcompress.__all__:
        assert not inspect.ismodule(getattr(tfcompress, name)), name
