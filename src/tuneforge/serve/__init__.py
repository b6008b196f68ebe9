"""`tuneforge serve`: an OpenAI-compatible HTTP server for a base model and its fine-tuned adapters and runs.

Modules: `settings` (what a server serves), `catalog` (model ids → artifacts), `pool` (loaded models, LRU, one
lock per set of weights), `decoding` (request → engine settings), `schemas` (openai-python's shapes), `errors`
(OpenAI's error body), `sse` (streaming), `routes_models` / `routes_chat` (the endpoints), `auth` (where keys will
be checked), `app` (create_app), `run` (uvicorn). Generation itself is `tuneforge.infer.engine.Engine`.
"""

from tuneforge.serve.settings import ServeSettings

__all__ = ["ServeSettings"]
