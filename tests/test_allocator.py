import os
import subprocess
import sys

import pytest

CALL = "from segany.allocator import tune_allocator; print(tune_allocator(), tune_allocator())"


def run_with(env_value):
    env = {k: v for k, v in os.environ.items() if k != "SEGANY_TUNE_MALLOC"}
    if env_value is not None:
        env["SEGANY_TUNE_MALLOC"] = env_value
    return subprocess.run([sys.executable, "-c", CALL], env=env, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_allocator_is_tuned_once_on_glibc():
    assert run_with(None).split() == ["True", "True"]


def test_allocator_tuning_can_be_turned_off():
    assert run_with("0").split() == ["False", "False"]
