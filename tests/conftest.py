"""Shared test fixtures and the CI guards.

Every test runs offline. Tests needing ../shared skip with a reason when it is absent — except in CI, where
`.ci/run` sets the guards below so that nothing can pass by skipping:
  TUNEFORGE_REQUIRE_SHARED=1  the `shared` fixture fails instead of skipping;
  TUNEFORGE_REQUIRE_PG=1      tests marked `postgres` fail when TUNEFORGE_TEST_PG_URL is not set;
  TUNEFORGE_FAIL_ON_SKIP=1    any other skip is reported as a failure (tests marked `gpu` may still skip).
Every test under tests/integration/ and every test using the SmolLM2 GGUF is marked `slow` here, so
`pytest -m "not slow"` is the fast local loop.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tuneforge.utils import paths  # noqa: E402

pytest_plugins = ("pytester",)  # tests/unit/test_ci_guards.py runs these hooks in a throwaway session

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
SLOW_FIXTURES = {"smollm2_gguf"}  # a test that loads SmolLM2 spends tens of seconds on it


def _guard_on(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def pytest_collection_modifyitems(config, items):
    """Mark slow, as data: everything under tests/integration/ and every test that loads SmolLM2."""
    for item in items:
        in_integration = INTEGRATION_DIR in Path(str(item.path)).resolve().parents
        if in_integration or SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres") and _guard_on("TUNEFORGE_REQUIRE_PG"):
        from tuneforge.registry.testing import PG_ENV, pg_url

        if not pg_url():
            pytest.fail(f"TUNEFORGE_REQUIRE_PG=1 but {PG_ENV} is not set: the PostgreSQL registry tests would skip. "
                        "Run `eval \"$(bash .ci/postgres.sh)\"` first (CI: .ci/run does).", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """With TUNEFORGE_FAIL_ON_SKIP=1 a skip (not an xfail, not a `gpu` test) is reported as a failure."""
    report = yield
    if report.skipped and not hasattr(report, "wasxfail") and _guard_on("TUNEFORGE_FAIL_ON_SKIP") \
            and not item.get_closest_marker("gpu"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = (f"skipped, and TUNEFORGE_FAIL_ON_SKIP=1 forbids skips ({reason}). "
                           "CI must run every test: provide what the test needs.")
    return report


@pytest.fixture(scope="session", autouse=True)
def _tuneforge_home(tmp_path_factory):
    """Keep the cache/registry of the test session out of the user's home, but reuse a dequantized GGUF cache."""
    if "TUNEFORGE_HOME" not in os.environ:
        os.environ["TUNEFORGE_HOME"] = str(tmp_path_factory.mktemp("tfhome"))
    yield


@pytest.fixture
def fresh_install(monkeypatch):
    """Hide the shared demo folder: TUNEFORGE_SHARED unset and shared_dir() → None wherever it was imported."""
    import sys

    import tuneforge.cli  # noqa: F401  (imports every module that binds shared_dir, so all of them get patched)

    monkeypatch.delenv("TUNEFORGE_SHARED", raising=False)
    original = paths.shared_dir
    for module in list(sys.modules.values()):
        if module is not None and module.__name__.startswith("tuneforge") \
                and getattr(module, "shared_dir", None) is original:
            monkeypatch.setattr(module, "shared_dir", lambda: None)
    assert paths.shared_dir() is None


@pytest.fixture(scope="session")
def shared() -> Path:
    d = paths.shared_dir()
    if d is None:
        msg = "../shared (real demo models and data) is absent; set TUNEFORGE_SHARED to the folder"
        if _guard_on("TUNEFORGE_REQUIRE_SHARED"):
            pytest.fail(f"TUNEFORGE_REQUIRE_SHARED=1 but {msg} (CI must not skip these tests)", pytrace=False)
        pytest.skip(f"{msg} to run this test")
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


# --- shared fixtures of the inference / export tests (engine, chat/generate/export CLI, doctor) ---------------------


@pytest.fixture(scope="module")
def one_thread():
    """A 656K model runs fastest on one thread; on a shared CPU more threads only wait for each other.
    Use it per module: `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir) -> str:
    """The 656K TinyStories model as the string a user passes to --model / Engine.load."""
    return str(tiny_model_dir)
