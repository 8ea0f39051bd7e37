"""Fine-tuning options every training step shares: the learning-rate schedule."""

import numpy as np
import pytest

from tfcompress.data import Dataset
from tfcompress.options import TrainOptions
from tfcompress.transforms.training import fine_tune, fit_targets


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_learning_rate_follows_its_schedule_to_the_last_step(tf_keras, schedule):
    rng = np.random.default_rng(0)
    data = Dataset(rng.random((100, 4), np.float32), rng.integers(0, 3, 100), "arrays")
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(3, activation="softmax")])
    options = TrainOptions(epochs=3, batch_size=25, learning_rate=1e-3, learning_rate_schedule=schedule)
    fine_tune(model, data, fit_targets(model, data, None, ("softmax",)), options, verbose=0)

    config = model.optimizer.get_config()["learning_rate"]
    if schedule == "constant":
        assert config == pytest.approx(1e-3)
        return
    learning_rate = tf_keras.optimizers.schedules.deserialize(config)
    steps = int(model.optimizer.iterations)  # 3 epochs of 4 batches
    assert steps == 12
    by_step = [float(learning_rate(step)) for step in range(steps)]
    assert by_step[0] == pytest.approx(1e-3) and by_step[6] == pytest.approx(5e-4, rel=1e-3)
    assert all(later < earlier for earlier, later in zip(by_step, by_step[1:]))
    assert by_step[-1] < 0.02e-3 and float(learning_rate(steps)) == 0.0
