"""Eval tests run tiny models on a shared CPU: one torch thread is much faster than several competing ones."""

import pytest


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
