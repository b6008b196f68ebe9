"""The dataset doctor (`tuneforge data check`): what is wrong with a dataset before training on it.

Modules, each importing only those listed before it (no cycles; tests/unit/data/test_doctor_layout.py checks it):

- `text`: prompt / answer of a record, normalization, scripts, suspicious characters, diversity measures
- `minhash`: exact groups and MinHash + LSH near-duplicate pairs
- `result`: `CheckOptions`, `Finding`, `Loaded`, `CheckResult`
- `content`, `duplicates`, `lengths`, `distribution`: the checks, each returning findings (and statistics)
- `check`: `check_dataset(target, opts)` loads the data and runs every check
- `report`, `fix`: write a `CheckResult` as report files, or a cleaned copy of the data

This file imports nothing, so importing one module does not load the others.
"""
