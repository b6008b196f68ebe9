"""Batch collation: dynamic padding for plain samples, position-id batches for packed ones."""

from __future__ import annotations

import torch

from tuneforge.data.render import IGNORE


class PadCollator:
    """Pads to the longest sample of the batch (right padding; labels padded with -100).

    With `packed=True` each item carries `position_ids`; no attention mask is returned so the model builds the
    block-diagonal causal mask from the restarting position ids. Padding then forms its own short block whose
    labels are ignored.
    """

    def __init__(self, pad_token_id: int, packed: bool = False, pad_to_multiple_of: int | None = None):
        self.pad = pad_token_id
        self.packed = packed
        self.multiple = pad_to_multiple_of

    def _target_len(self, longest: int) -> int:
        if self.multiple:
            return -(-longest // self.multiple) * self.multiple
        return longest

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        n = self._target_len(max(len(it["input_ids"]) for it in items))
        ids = torch.full((len(items), n), self.pad, dtype=torch.long)
        labels = torch.full((len(items), n), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(items), n), dtype=torch.long)
        pos = torch.zeros((len(items), n), dtype=torch.long)
        for b, it in enumerate(items):
            k = len(it["input_ids"])
            ids[b, :k] = torch.tensor(it["input_ids"])
            labels[b, :k] = torch.tensor(it["labels"])
            mask[b, :k] = 1
            if self.packed:
                pos[b, :k] = torch.tensor(it["position_ids"])
                pos[b, k:] = torch.arange(n - k)
        batch = {"input_ids": ids, "labels": labels,
                 "n_real": torch.tensor([len(it["input_ids"]) for it in items])}
        if self.packed:
            batch["position_ids"] = pos
        else:
            batch["attention_mask"] = mask
        return batch
