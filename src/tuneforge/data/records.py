"""The canonical record every data format is converted into, and every later step consumes."""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant", "tool", "function_call", "observation")


@dataclass
class Record:
    """One training example after format conversion.

    Chat data fills `messages`; plain text (stage pt) fills `text` and leaves `messages` empty. Preference data keeps
    the shared conversation in `messages` and the competing final assistant turns in `chosen` / `rejected`.
    `tools` is the list of tool schemas (JSON-schema dicts, bare `{"name", "description", "parameters"}` or OpenAI's
    `{"type": "function", "function": {...}}`) the conversation may call, parsed at load time; None when there are
    none. Tool calls are `function_call` turns whose content is JSON `{"name", "arguments"}` (a list for several), and
    tool results are `observation` (or `tool`) turns.
    `source` is "path:line" so every later error can point at the row.
    """

    messages: list[dict] = field(default_factory=list)
    text: str | None = None
    tools: list[dict] | None = None
    chosen: list[dict] | None = None
    rejected: list[dict] | None = None
    label: bool | None = None
    source: str = ""
    extra: dict = field(default_factory=dict)

    def location(self) -> tuple[str | None, int | None]:
        """(file, line) of `source` ("path:line"); the line is None when the source names no line."""
        path, _, line = self.source.rpartition(":")
        if line.isdigit():
            return path or None, int(line)
        return self.source or None, None

    def normalized(self) -> dict:
        """Content-only view used for fingerprints and duplicate checks (no source, no extra columns)."""
        # the fields themselves, not a deep copy (asdict): callers only serialize it, and this runs once per row
        return {"messages": self.messages, "text": self.text, "tools": self.tools, "chosen": self.chosen,
                "rejected": self.rejected, "label": self.label}
