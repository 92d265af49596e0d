import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts from a cleared Keras session and fixed seeds.

    `free_memory=False` skips clear_session's gc.collect(), which costs about
    0.3 s a test on these machines.
    """
    keras.backend.clear_session(free_memory=False)
    keras.utils.set_random_seed(0)
    yield
