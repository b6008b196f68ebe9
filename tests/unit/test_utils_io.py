"""The atomic writer gives files the permissions a plain write would, not mkstemp's owner-only 0600."""

from __future__ import annotations

import os
import stat

from tuneforge.utils.io import atomic_write_json, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_file_follows_the_umask_and_an_existing_one_keeps_its_mode(tmp_path):
    old = os.umask(0o022)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
        atomic_write_text(tmp_path / "new.txt", "hello")
        assert _mode(tmp_path / "new.txt") == _mode(plain) == 0o644
        os.umask(0o077)
        atomic_write_json(tmp_path / "private.json", {"a": 1})
        assert _mode(tmp_path / "private.json") == 0o600
        os.chmod(tmp_path / "new.txt", 0o640)
        atomic_write_text(tmp_path / "new.txt", "again")  # replacing keeps the file's own mode
        assert _mode(tmp_path / "new.txt") == 0o640 and (tmp_path / "new.txt").read_text() == "again"
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    finally:
        os.umask(old)
