"""tuneforge: the whole LLM fine-tuning loop — data, train, evaluate, use, record."""

__version__ = "0.1.0"
