"""What the dataset doctor works on and hands back: options, the loaded dataset, findings and the result.

Plain dataclasses with no logic beyond summaries, so every other doctor module can import them without a cycle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneforge.data.catalog import LoadResult
from tuneforge.data.records import Record
from tuneforge.data.sources import RawRow

SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


@dataclass
class CheckOptions:
    against: str | None = None  # a test set to check leakage against
    model: str | None = None  # token lengths under this model's tokenizer + chat template
    template: str = "auto"
    cutoff: int | None = None  # count rows longer than this many tokens
    near_threshold: float = 0.8  # Jaccard similarity of character n-grams
    dataset_info: str | None = None  # registry for registered names (else $TUNEFORGE_DATASET_INFO)
    format: str = "auto"
    examples: int = 5
    prompts: bool = False  # rows are prompts for reinforcement (a conversation may end with the user)


@dataclass
class Finding:
    check: str
    severity: str  # "error" | "warning" | "info"
    count: int
    summary: str
    examples: list[dict] = field(default_factory=list)


@dataclass
class Loaded:
    """A dataset as the doctor sees it: loader output plus the raw rows of its local files."""

    target: str
    result: LoadResult
    files: list[Path]
    raw: list[RawRow] | None  # None for hub datasets
    bom_files: list[str]

    @property
    def records(self) -> list[Record]:
        return self.result.records


@dataclass
class CheckResult:
    dataset: dict
    findings: list[Finding]
    stats: dict
    lengths: dict  # {"unit", "prompt": [...], "answer": [...]} for charts
    loaded: Loaded
    drops: dict[str, dict[str, str]] = field(default_factory=dict)  # kind -> {source: reason}, used by --fix

    def summary(self) -> dict:
        """JSON-ready summary (no per-row arrays)."""
        return {"dataset": self.dataset, "findings": [asdict(f) for f in self.findings], "stats": self.stats}

    def count(self, check: str) -> int:
        return sum(f.count for f in self.findings if f.check == check)
