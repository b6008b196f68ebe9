"""Sweep grids: `--grid KEY=V1,V2` parsing, cell names, cell configs built through the override mechanism, method
switches that drop the base method's foreign keys, and invalid cells named before anything trains."""

from __future__ import annotations

import pytest

from tuneforge.config.load import load_config
from tuneforge.sweep.grid import (build_cell, cell_name, describe_dropped, parse_grid, plan_cells, split_values,
                                  switch_method)
from tuneforge.utils.errors import ConfigError


def _cfg(tmp_path, *overrides):
    (tmp_path / "d.jsonl").write_text("{}\n")
    return load_config(None, [f"data.train={tmp_path / 'd.jsonl'}", *overrides])


def test_parse_grid_keeps_order_dedupes_values_and_keeps_bracketed_lists():
    grid = parse_grid(["method.type=lora, ia3,lora", "train.learning_rate=1e-4,2e-4",
                       "method.target_modules=[q_proj,v_proj],all-linear"])
    assert list(grid) == ["method.type", "train.learning_rate", "method.target_modules"]
    assert grid["method.type"] == ["lora", "ia3"]
    assert parse_grid(["method=ia3,dora"]) == {"method.type": ["ia3", "dora"]}  # as `method: ia3` in a config
    assert grid["train.learning_rate"] == ["1e-4", "2e-4"]
    assert grid["method.target_modules"] == ["[q_proj,v_proj]", "all-linear"]
    assert split_values("a,{b: 1, c: 2},,d") == ["a", "{b: 1, c: 2}", "d"]


@pytest.mark.parametrize("items, message", [
    (["method.type"], "is not KEY=V1,V2"),
    (["=lora"], "has no key"),
    (["train.learning_rate="], "has no values"),
    (["method.type=lora", "method=ia3"], "given twice"),
    (["data.train=a.jsonl,b.jsonl"], "cannot vary it"),
    (["output.dir=a,b"], "cannot vary it"),
    (["data.seed=1,2"], "shuffled once"),
])
def test_parse_grid_errors_say_what_to_do(items, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_grid(items)
    assert err.value.hint


def test_cell_names_are_stable_filesystem_safe_and_unique():
    assert cell_name(500, {}) == "n500"
    assert cell_name(500, {"method.type": "ia3", "train.learning_rate": "1e-4"}) == \
        "n500-method.type=ia3-train.learning_rate=1e-4"
    odd = {"method.target_modules": "[q_proj, v_proj]"}
    name = cell_name(8, odd)
    assert name == cell_name(8, dict(odd)) and "/" not in name and " " not in name and "[" not in name
    assert name != cell_name(8, {"method.target_modules": "[q_proj,_v_proj]"})  # same characters once replaced
    long = cell_name(8, {f"train.key{i}": "x" * 20 for i in range(8)})
    assert len(long) <= 90


def test_a_cell_applies_its_values_like_cli_overrides(tmp_path):
    base = _cfg(tmp_path, "method.type=lora", "method.r=4", "train.epochs=1")
    cell = build_cell(base, 16, {"train.learning_rate": "1e-3", "method.r": "8"})
    assert cell.cfg.train.learning_rate == pytest.approx(1e-3)
    assert cell.cfg.method.type == "lora" and cell.cfg.method.params["r"] == 8
    assert cell.cfg.train.epochs == 1 and cell.dropped == []
    assert base.method.params["r"] == 4  # the base config is not changed


def test_switching_method_drops_the_keys_the_new_method_does_not_accept(tmp_path):
    base = _cfg(tmp_path, "method.type=lora", "method.r=4", "method.target_modules=[q_proj,v_proj]")
    ia3 = build_cell(base, 16, {"method.type": "ia3"})
    assert ia3.cfg.method.type == "ia3" and ia3.dropped == ["r"]
    assert ia3.cfg.method.params == {"target_modules": ["q_proj", "v_proj"]}  # ia3 accepts target_modules
    assert describe_dropped(ia3, "lora") == \
        "method ia3 starts from its defaults: dropped method.r (set for lora in the base config)"
    dora = build_cell(base, 16, {"method.type": "dora"})
    assert dora.dropped == [] and dora.cfg.method.params["r"] == 4
    prompt = build_cell(base, 16, {"method.type": "prompt", "method.num_virtual_tokens": "4"})
    assert sorted(prompt.dropped) == ["r", "target_modules"]
    assert prompt.cfg.method.params == {"num_virtual_tokens": 4}


def test_a_key_the_cell_sets_again_is_not_reported_dropped(tmp_path):
    base = _cfg(tmp_path, "method.type=lora", "method.r=4", "method.alpha=8")
    adalora = build_cell(base, 16, {"method.type": "adalora", "method.alpha": "16"})
    assert adalora.dropped == ["r"] and adalora.cfg.method.params["alpha"] == 16


def test_older_nested_method_section_switches_too(tmp_path):
    section = {"type": "lora", "lora": {"r": 16, "target_modules": "all-linear"}}
    assert switch_method(section, "ia3") == ({"type": "ia3", "target_modules": "all-linear"}, ["r"])


def test_plan_is_sizes_times_grid_product_in_order(tmp_path):
    base = _cfg(tmp_path, "method.type=lora", "method.r=4")
    grid = parse_grid(["method.type=lora,ia3", "train.learning_rate=1e-3,5e-3"])
    cells = plan_cells(base, [4, 8], grid)
    assert [c.name for c in cells[:4]] == [
        "n4-method.type=lora-train.learning_rate=1e-3", "n4-method.type=lora-train.learning_rate=5e-3",
        "n4-method.type=ia3-train.learning_rate=1e-3", "n4-method.type=ia3-train.learning_rate=5e-3"]
    assert [c.size for c in cells] == [4] * 4 + [8] * 4
    assert [c.name for c in plan_cells(base, [4, 8], {})] == ["n4", "n8"]


@pytest.mark.parametrize("grid, message", [
    (["method.type=lora,nosuch"], r"sweep cell n4-method.type=nosuch \(method.type=nosuch\): method: unknown method"),
    (["method.type=lora,ia3", "method.r=8"], r"sweep cell n4-method.type=ia3-method.r=8 .*method.r is a parameter "
                                             r"of method lora"),
    (["method.type=prompt", "data.packing=true"],
     "sweep cell n4-method.type=prompt-data.packing=true .*virtual tokens"),
    (["train.learning_rate=fast"], "sweep cell n4-train.learning_rate=fast .*train.learning_rate"),
    (["train.nosuch=1"], "unknown key 'train.nosuch'"),
])
def test_an_invalid_cell_is_named_with_the_reason(tmp_path, grid, message):
    base = _cfg(tmp_path, "method.type=lora", "method.r=4")
    with pytest.raises(ConfigError, match=message) as err:
        plan_cells(base, [4], parse_grid(grid))
    assert err.value.hint


def test_the_sweep_signature_ignores_settings_left_at_their_defaults():
    from types import SimpleNamespace

    from tuneforge.sweep.runner import signature

    pool = SimpleNamespace(fingerprint="abc")
    base = ["model.name=tinystories-656k", "data.train=x.jsonl"]
    plain = signature(load_config(None, base), pool)
    assert signature(load_config(None, [*base, "train.distributed=auto", "train.optim=adamw"]), pool) == plain
    assert signature(load_config(None, [*base, "train.optim=sgd"]), pool) != plain
    assert signature(load_config(None, base), SimpleNamespace(fingerprint="other")) != plain
