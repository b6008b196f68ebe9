"""Small learnable preference data for the stage tests: the chosen answer is always kind, the rejected one unkind,
about many different animals, so a held-out split asks about animals the run never saw."""

from __future__ import annotations

import json
from pathlib import Path

ANIMALS = ["cat", "dog", "bird", "fish", "frog", "bear", "duck", "cow", "pig", "fox", "owl", "bee", "ant", "hen",
           "goat", "lion", "mouse", "horse", "sheep", "wolf", "deer", "crab", "seal", "bat"]


def write_pairs(path: Path, n: int = 48) -> Path:
    rows = []
    for i in range(n):
        a = ANIMALS[i % len(ANIMALS)]
        rows.append({"instruction": f"Tell me about the {a}.", "chosen": f"The {a} was happy and kind to everyone.",
                     "rejected": f"The {a} was sad and mean to everyone.", "id": i})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def write_kto(path: Path, n: int = 48) -> Path:
    """The same preference as unpaired rows: kind answers desirable, unkind ones undesirable (alternating)."""
    rows = []
    for i in range(n):
        a = ANIMALS[i % len(ANIMALS)]
        kind = i % 2 == 0
        answer = f"The {a} was happy and kind to everyone." if kind else f"The {a} was sad and mean to everyone."
        rows.append({"instruction": f"Tell me about the {a}.", "output": answer, "label": kind})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def write_prompts(path: Path, n: int = 32) -> Path:
    """Prompt-only rows (no answer) for the RL stages, about many different animals."""
    rows = [{"instruction": f"Tell me a story about the {ANIMALS[i % len(ANIMALS)]}.", "id": i} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path
