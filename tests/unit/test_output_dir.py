"""Finding the checkpoint to resume from in a run's output folder."""

from __future__ import annotations

import json

from tuneforge.train.output import latest_checkpoint


def _ckpt(root, step, state: str | None):
    d = root / "checkpoints" / f"checkpoint-{step}"
    d.mkdir(parents=True)
    if state is not None:
        (d / "trainer_state.json").write_text(state)
    return d


def test_newest_complete_checkpoint_is_chosen(tmp_path):
    _ckpt(tmp_path, 2, json.dumps({"global_step": 2}))
    newest = _ckpt(tmp_path, 10, json.dumps({"global_step": 10}))
    _ckpt(tmp_path, 12, None)  # still being written: no state yet
    assert latest_checkpoint(tmp_path) == newest


def test_a_truncated_trainer_state_is_not_resumed_from(tmp_path):
    good = _ckpt(tmp_path, 4, json.dumps({"global_step": 4}))
    _ckpt(tmp_path, 6, '{"global_step": 6, "log_hi')  # killed while writing
    assert latest_checkpoint(tmp_path) == good
