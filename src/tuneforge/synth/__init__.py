"""Synthetic training data (`tuneforge data synth`), for when real rows are few.

- `self_instruct`: new rows from seed examples and a generator model (Wang et al., 2023), filtered as the paper
  filters them (`filters`); `seeds` reads the seed rows and what they share (a task, labels, a system message).
- `templates`: the cross product (or a seeded sample) of prompt templates with slot values; answers from the
  template or a generator.
- `generators`: the generator, a local model through `infer.Engine` or an OpenAI-compatible endpoint.
- `rows`: output rows (alpaca or OpenAI messages) with their origin in a `source` column; `report`: what was kept
  and dropped, and why, plus the dataset doctor's findings on the result.

It sits beside `sweep` in the layering: it uses `infer` (and `stages.judge`'s endpoint client) and `data`.
"""
