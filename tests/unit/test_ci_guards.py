"""The CI guards of tests/conftest.py, run in a throwaway pytest session: CI cannot pass by skipping, and
`-m "not slow"` leaves out the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneforge.utils import paths

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
GUARDS = ("TUNEFORGE_REQUIRE_SHARED", "TUNEFORGE_REQUIRE_PG", "TUNEFORGE_FAIL_ON_SKIP")


@pytest.fixture
def session(pytester, monkeypatch):
    """A pytester folder holding the project's conftest, with every guard off and no PostgreSQL configured."""
    for name in GUARDS + ("TUNEFORGE_TEST_PG_URL",):
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest(CONFTEST.read_text(encoding="utf-8"))
    pytester.makeini("[pytest]\naddopts = --strict-markers\nmarkers =\n    slow\n    gpu\n    postgres\n")
    return pytester


def test_shared_fixture_skips_locally_but_fails_when_required(session, monkeypatch):
    monkeypatch.setattr(paths, "shared_dir", lambda: None)
    session.makepyfile(test_needs_shared="def test_x(shared):\n    assert shared\n")
    session.runpytest_inprocess().assert_outcomes(skipped=1)

    monkeypatch.setenv("TUNEFORGE_REQUIRE_SHARED", "1")
    result = session.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*TUNEFORGE_REQUIRE_SHARED=1 but ../shared*absent*"])


def test_postgres_tests_fail_without_a_server_when_required(session, monkeypatch):
    session.makepyfile(test_pg="""
        import pytest

        @pytest.mark.postgres
        def test_registry_on_postgres():
            pytest.skip("no server")
    """)
    session.runpytest_inprocess().assert_outcomes(skipped=1)

    monkeypatch.setenv("TUNEFORGE_REQUIRE_PG", "1")
    result = session.runpytest_inprocess()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*TUNEFORGE_REQUIRE_PG=1 but TUNEFORGE_TEST_PG_URL is not set*"])


def test_fail_on_skip_turns_skips_into_failures_except_gpu_and_xfail(session, monkeypatch):
    session.makepyfile(test_skips="""
        import pytest

        def test_skipped():
            pytest.skip("something is missing")

        @pytest.mark.gpu
        def test_needs_cuda():
            pytest.skip("no CUDA")

        @pytest.mark.xfail(reason="known")
        def test_known_bug():
            assert False
    """)
    session.runpytest_inprocess().assert_outcomes(skipped=2, xfailed=1)

    monkeypatch.setenv("TUNEFORGE_FAIL_ON_SKIP", "1")
    result = session.runpytest_inprocess()
    result.assert_outcomes(failed=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines(["*TUNEFORGE_FAIL_ON_SKIP=1 forbids skips (something is missing)*"])


def test_not_slow_leaves_out_integration_and_smollm2_tests(session):
    session.mkpydir("integration")
    (session.path / "integration" / "test_train.py").write_text("def test_trains():\n    pass\n")
    session.makepyfile(test_unit="""
        import pytest

        def test_fast():
            pass

        def test_uses_smollm2(smollm2_gguf):
            pass

        @pytest.mark.slow
        def test_marked_by_hand():
            pass
    """)
    result = session.runpytest_inprocess("-m", "not slow", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, deselected=3)
