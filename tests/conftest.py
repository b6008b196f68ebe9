"""Shared test fixtures. Every test runs offline; tests needing ../shared skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tuneforge.utils.paths import shared_dir  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _tuneforge_home(tmp_path_factory):
    """Keep the cache/registry of the test session out of the user's home, but reuse a dequantized GGUF cache."""
    if "TUNEFORGE_HOME" not in os.environ:
        os.environ["TUNEFORGE_HOME"] = str(tmp_path_factory.mktemp("tfhome"))
    yield


@pytest.fixture(scope="session")
def shared() -> Path:
    d = shared_dir()
    if d is None:
        pytest.skip("../shared (real demo models and data) is absent; set TUNEFORGE_SHARED to run this test")
    return d


@pytest.fixture(scope="session")
def tiny_model_dir(shared) -> Path:
    """656K-parameter real Llama (TinyStories) for fast tests."""
    return shared / "models" / "tinystories-656k"


@pytest.fixture(scope="session")
def smollm2_gguf(shared) -> Path:
    return shared / "models" / "smollm2-135m-instruct-q4_1-gguf" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def demo_data(shared) -> Path:
    return shared / "data"
