"""Recipe files: the built-in ones load, and every mistake names its key and line."""

import pytest

from tfcompress.errors import RecipeError
from tfcompress.pipeline import recipe as recipes

from conftest import SAMPLE_MODELS


def test_builtin_recipes_load_and_are_named():
    names = set(recipes.builtin_recipes())
    assert {
        "mobile_int8",
        "mobile_float16",
        "mcu_int8",
        "mcu_int4",
        "deep_compression",
        "deep_compression_mcu",
    } <= names
    for name in names:
        loaded = recipes.load_recipe(name)
        assert loaded.name == name and loaded.steps and loaded.description
    deep = recipes.load_recipe("deep_compression")
    assert [step.kind for step in deep.steps] == ["prune", "cluster", "convert"]
    assert deep.steps[1].options["preserve_sparsity"] is True


def _error(text) -> str:
    with pytest.raises(RecipeError) as caught:
        recipes.parse_recipe(text, "r.yaml")
    return str(caught.value)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("steps:\n  - convert: {}\nbudget:\n  max_size_bytes: 3\n", "r.yaml line 3: unknown key 'budget'"),
        ("steps:\n  - convert: {}\n  - squash: {}\n", "r.yaml line 3: unknown step 'squash'"),
        (
            "steps:\n  - prune:\n      target_sparsity: 0.5\n      sparsity: 0.9\n  - convert: {}\n",
            "r.yaml line 4: unknown option 'sparsity' for step prune",
        ),
        ("steps:\n  - prune:\n      epochs: two\n", "line 3: prune.epochs must be int; got 'two'"),
        ("steps:\n  - convert: {precision: int4}\n", "line 2: convert.precision must be one of"),
        ("steps:\n  - convert: {per_tensor_dense: 1}\n", "line 2: convert.per_tensor_dense must be bool"),
        ("steps:\n  - convert: {}\nbudgets:\n  max_size_bytes: -1\n", "line 4: budget 'max_size_bytes' must be"),
        ("steps:\n  - convert: {}\nbudgets:\n  max_accuracy_drop: -101\n", "at least -100; got -101"),
        ("steps:\n  - convert: {}\nbudgets:\n  max_flash: 3\n", "line 4: unknown budget 'max_flash'"),
        (
            "steps:\n  - convert: {}\nbudgets:\n  max_arena_bytes: 9000\n",
            "line 4: budget 'max_arena_bytes' needs a micro step",
        ),
        (
            "steps:\n  - convert: {}\n  - prune: {}\n",
            "line 3: prune changes the Keras model, so it must come before convert",
        ),
        ("steps:\n  - benchmark: {}\n", "line 2: benchmark measures a .tflite"),
        ("steps:\n  - convert: {}\n  - convert: {}\n", "line 3: a recipe has at most one convert step"),
        ("steps: []\n", "line 1: 'steps' must be a list"),
        ("steps:\n  - convert: {eval: 3}\n", "line 2: eval must be a data path"),
        ("steps:\n  - convert: {keep_float: conv2d}\n", "line 2: convert.keep_float must be a list"),
        ("steps:\n  - convert:\n      input_range: [0, one]\n", "line 3: convert.input_range must be a number"),
        ("steps:\n  - convert: {\n", "r.yaml line 3: not valid YAML"),
        ("steps:\n  - prune: {unlabeled: u.npz}\n", "line 2: unknown option 'unlabeled' for step prune"),
        ("steps:\n  - distill: {augment: [rotate]}\n", "line 2: distill.augment must be one of shift, flip, mixup"),
        ("steps:\n  - prune:\n      layer_sparsity: {dense: high}\n", "line 3: prune.layer_sparsity must be a number"),
        ("steps:\n  - convert: {output_task: image}\n", "line 2: convert.output_task must map names to values"),
        ("steps:\n  - convert: {output_task: {image: pixels}}\n", "convert.output_task must be one of auto, softmax"),
    ],
)
def test_validation_errors_name_the_key_and_its_line(text, expected):
    assert expected in _error(text)


def test_data_paths_are_relative_to_the_recipe_and_options_typed(tmp_path):
    (tmp_path / "recipe.yaml").write_text(
        "name: mine\nsteps:\n  - lowrank: {energy: 1, val: data/test.npz}\n  - convert: {precision: float16}\n"
        "data:\n  train: data/train.npz\n  calibration: /abs/calib.npz\n  eval: idx@test\n"
    )
    loaded = recipes.load_recipe(tmp_path / "recipe.yaml")
    assert loaded.steps[0].options == {"energy": 1.0}  # an int where a float goes is a float
    assert loaded.steps[0].data == {"val": str(tmp_path / "data" / "test.npz")}
    assert loaded.data == {
        "train": str(tmp_path / "data" / "train.npz"),
        "calibration": "/abs/calib.npz",
        "eval": str(tmp_path / "idx") + "@test",
    }
    assert loaded.to_dict()["steps"][1] == {"step": "convert", "options": {"precision": "float16"}, "data": {}}


def test_unknown_recipe_names_the_built_in_ones():
    with pytest.raises(RecipeError, match="no built-in recipe of that name; built-in recipes: deep_compression"):
        recipes.load_recipe("mobile_int4")


def test_folder_data_defaults_beside_the_models(tmp_path):
    assert recipes.folder_data(SAMPLE_MODELS / "lenet5.h5")["eval"] == str(
        SAMPLE_MODELS / "data" / "fashion_mnist_eval.npz"
    )
    assert recipes.folder_data(tmp_path / "model.h5") == {}
    (tmp_path / recipes.DATA_DEFAULTS_FILE).write_text("calibration: c.npz\ntest: t.npz\n")
    with pytest.raises(RecipeError, match=r"tfcompress-data.yaml line 2: unknown data role 'test'"):
        recipes.folder_data(tmp_path / "model.h5")


def test_a_negative_accuracy_budget_asks_for_a_gain_as_auto_may_write_it():
    parsed = recipes.parse_recipe("steps:\n  - convert: {}\nbudgets:\n  max_accuracy_drop: -1.8\n", "r.yaml")
    assert parsed.budgets == {"max_accuracy_drop": -1.8}
