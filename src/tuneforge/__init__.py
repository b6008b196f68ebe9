"""tuneforge: the whole LLM fine-tuning loop — data, train, evaluate, use, record."""

import logging

__version__ = "0.1.0"

# bitsandbytes (imported by peft when installed) warns at import on CPUs with AVX512-BF16 that it could not fetch an
# optional faster 4-bit kernel from the hub; it falls back to its built-in one, which QLoRA uses correctly. The
# warning fires on every command that imports peft, so it is kept out of the output.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
