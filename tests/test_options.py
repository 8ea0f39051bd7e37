"""Options declared once: the CLI flags, the recipe schema and the API keywords all come from the
dataclass fields, and renamed options keep working with a warning."""

import pytest
from absl import flags

from tfcompress import cli
from tfcompress.export.tflite import ConvertOptions
from tfcompress.options import (
    MicroOptions,
    TrainOptions,
    define_flags,
    from_flags,
    gather,
    recipe_schema,
    settable_fields,
)
from tfcompress.pipeline import recipe
from tfcompress.transforms.prune import PruneOptions


def _parsed(cls, *args, **define):
    flag_values = flags.FlagValues()
    holders = define_flags(flag_values, cls, **define)
    flag_values(["test", *args])
    return {name: holder.value for name, holder in holders.items()}


def test_a_flag_parses_to_the_same_options_as_the_api_keyword():
    values = _parsed(
        ConvertOptions,
        "--precision",
        "int8",
        "--io_type",
        "int8",
        "--keep_float",
        "dense,conv2d",
        "--input_range",
        "-1,1",
        "--calibration_samples",
        "20",
    )
    assert from_flags(ConvertOptions, values) == ConvertOptions(
        precision="int8",
        io_type="int8",
        keep_float=("dense", "conv2d"),
        input_range=(-1.0, 1.0),
        calibration_samples=20,
    )
    (from_api,) = gather(
        {
            "precision": "int8",
            "io_type": "int8",
            "keep_float": ["dense", "conv2d"],
            "input_range": [-1, 1],
            "calibration_samples": 20,
        },
        (ConvertOptions, None),
    )
    assert from_api == from_flags(ConvertOptions, values)
    values = _parsed(PruneOptions, "--layer_sparsity", "dense=0.9,conv2d=0.5")
    assert from_flags(PruneOptions, values).layer_sparsity == {"dense": 0.9, "conv2d": 0.5}


def test_a_command_may_have_its_own_defaults():
    values = _parsed(TrainOptions, defaults=TrainOptions(epochs=10, learning_rate=1e-3))
    assert from_flags(TrainOptions, values) == TrainOptions(epochs=10, learning_rate=1e-3)


def test_every_settable_field_has_help_and_every_recipe_key_is_a_flag():
    for command in cli._COMMANDS.values():
        for _, options_class, only, _ in command.option_groups():
            for field, _, _ in settable_fields(options_class, only):
                assert field.metadata["help"].strip(), field.name
    flag_names = {
        flag for name, command in cli._COMMANDS.items() for flag in cli._define_flags(name, command, flags.FlagValues())
    }
    for kind, (schema, _) in recipe._STEPS.items():
        assert set(schema) - {"student"} <= flag_names, kind


def test_unknown_keywords_and_bad_values_are_refused():
    with pytest.raises(TypeError, match="precisoin"):
        gather({"precisoin": "int8"}, (ConvertOptions, None))
    with pytest.raises(Exception, match="precision must be one of"):
        gather({"precision": "int4"}, (ConvertOptions, None))


def test_renamed_options_still_work_with_a_warning():
    with pytest.warns(FutureWarning, match="per_channel_dense is deprecated.*per_tensor_dense=False"):
        (options,) = gather({"per_channel_dense": True}, (ConvertOptions, ConvertOptions(per_tensor_dense=True)))
    assert options.per_tensor_dense is False
    with pytest.warns(FutureWarning, match="--target is deprecated.*--npu"):
        options = from_flags(MicroOptions, _parsed(MicroOptions, "--target", "ethos-u55-128"))
    assert options.npu == "ethos-u55-128"
    assert recipe_schema(MicroOptions)["target"] is recipe_schema(MicroOptions)["npu"] is str
