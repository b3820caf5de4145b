"""Shared fixtures for the segloss tests.

Any test that takes a ``device`` argument runs once per entry of
``helpers.DEVICES``: ["cpu"], plus "cuda" (marked ``cuda``) when a GPU is
available, so that the CUDA cases run by themselves on a GPU machine.
"""

import pytest
import torch

from helpers import DEVICES


def pytest_generate_tests(metafunc):
    if "device" in metafunc.fixturenames:
        metafunc.parametrize(
            "device",
            [pytest.param(d, marks=[pytest.mark.cuda] if d == "cuda" else [], id=d)
             for d in DEVICES],
        )


@pytest.fixture
def gen():
    """A CPU generator with a fixed seed: every test draws the same data each run."""
    return torch.Generator().manual_seed(20240601)


@pytest.fixture(autouse=True)
def _restore_torch_state():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
