"""Run and model registry: every train / eval / export run with its config, datasets, metrics, evals and artifacts.

Runners record through `tuneforge.registry.api.RunRecorder`; the CLI reads through `queries`, `compare` and
`lineage`. Storage is SQLAlchemy (`store.py`): SQLite by default, any URL via $TUNEFORGE_REGISTRY_URL. See
docs/registry.md.
"""
