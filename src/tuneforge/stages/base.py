"""The Stage plug-in: what one training stage needs (data kind, parameters, model head) and does (prepare, build).

A stage is one module with one subclass of `Stage`, registered in `tuneforge.stages.STAGES`. The runner knows no
stage by name: it asks the configured stage to check the records, render them into model-ready items, load the
model with the right head, collate batches and build the Trainer. Everything else (output folder, checkpoints,
resume, evaluation schedule, registry, plots) is the runner's and is the same for every stage.

Data kinds (what a record must carry): `text` (plain text, or conversations read as text), `chat` (conversations
with an assistant answer), `pairwise` (a prompt with a chosen and a rejected answer), `unpaired` (a conversation
labelled desirable or undesirable, KTO), `prompt` (a prompt; an answer, when present, is the label column).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from tuneforge.config.schema import params_error
from tuneforge.data.records import Record
from tuneforge.utils.errors import ConfigError, DataError

KIND_DESCRIPTIONS = {
    "text": "plain text",
    "chat": "conversations",
    "pairwise": "pairwise preference data (chosen/rejected)",
    "unpaired": "KTO data (conversations labelled desirable/undesirable)",
    "prompt": "prompts",
}


class StageParams(BaseModel):
    """A stage's own parameters, written beside `type` under `stage:` (`stage: {type: dpo, beta: 0.1}`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def record_kind(rec: Record) -> str:
    """The data kind a record carries (the most specific one)."""
    if rec.chosen is not None or rec.rejected is not None:
        return "pairwise"
    if rec.label is not None:
        return "unpaired"
    if rec.text is not None and not rec.messages:
        return "text"
    if rec.messages and rec.messages[-1]["role"] not in ("assistant", "function_call"):
        return "prompt"
    return "chat"



def item_tokens(item: dict) -> int:
    """Tokens of one model-ready item: every token-id list it holds (`input_ids`, or both sides of a pair)."""
    return sum(len(v) for k, v in item.items() if k.endswith("ids") and k != "position_ids")

@dataclass
class Prepared:
    """Model-ready items of one split and the counts a user should see (RenderStats.as_dict() keys)."""

    items: list[dict]
    stats: dict


class Stage:
    """Base class of a training stage. Subclasses set the class attributes and implement `prepare` and `build`."""

    name: ClassVar[str]
    description: ClassVar[str]
    accepts: ClassVar[tuple[str, ...]]  # data kinds this stage trains on (record_kind values)
    Params: ClassVar[type[StageParams]] = StageParams
    needs_chat_template: ClassVar[bool] = True
    packable: ClassVar[bool] = False  # data.packing applies (single sequences with labels)
    generative: ClassVar[bool] = True  # the result is a causal LM (eval.classification, preview prompts apply)
    metrics: ClassVar[tuple[str, ...]] = ("eval_loss",)  # what an evaluation logs (train.load_best may name them)
    auto_metric: ClassVar[str] = "eval_loss"  # train.load_best: auto
    lr_scale: ClassVar[float] = 1.0  # auto learning rate = the method's SFT rate × this
    # Items are dicts of token-id lists (and numbers), so `data.cache` stores them as Arrow and training reads them
    # memory-mapped; else they stay Python objects and are prepared in every run.
    cacheable: ClassVar[bool] = False
    # `prepare` of a slice of the rows gives that slice's items: rows render in parallel (`data.num_proc`).
    row_independent: ClassVar[bool] = False

    @property
    def trains_on_prompts(self) -> bool:
        """Rows without an answer load as prompts for this stage (instead of failing as incomplete)."""
        return "prompt" in self.accepts

    def params(self, section) -> StageParams:
        """Validate the keys written beside `type` under `stage:`; unknown keys get "did you mean"."""
        raw = dict(getattr(section, "model_extra", None) or {})
        try:
            return self.Params(**raw)
        except ValidationError as err:
            raise ConfigError(params_error(err, "stage", f"stage {self.name}", self.Params.model_fields)) from None

    def check_records(self, records: list[Record]) -> None:
        """Refuse rows of a kind this stage cannot train on, before anything renders or loads (file:line)."""
        for rec in records:
            kind = record_kind(rec)
            if kind in self.accepts or (kind == "chat" and "text" in self.accepts):
                continue
            from tuneforge.stages import stages_accepting

            others = ", ".join(stages_accepting(kind)) or "none yet"
            wanted = " or ".join(KIND_DESCRIPTIONS[k] for k in self.accepts)
            raise DataError(f"this is {KIND_DESCRIPTIONS[kind]}: stage {self.name} trains on {wanted}; stages for "
                            f"this data: {others}", file=rec.location()[0],
                            hint=f"set stage to one of: {others}, or point data at {wanted} "
                                 f"(first such row: {rec.source})")

    def prepare(self, records: list[Record], tok, data_cfg, params: StageParams) -> Prepared:
        raise NotImplementedError

    def render_for_preview(self, records: list[Record], tok, data_cfg, params: StageParams):
        """→ (list of Rendered with the trained tokens labelled, RenderStats.as_dict()); `data preview` shows them."""
        raise NotImplementedError

    def check_plan(self, cfg, params: StageParams, batch_size: int, world_size: int) -> None:
        """Refuse a run that cannot work once the batch size is known (auto resolved), before any model loads."""

    def sequences_per_item(self, params: StageParams) -> int:
        """Batch slots one prepared item fills (an RL prompt fills one per sampled completion); the step count of
        an epoch is items × this / global batch."""
        return 1

    def load_model(self, src, *, dtype: str, device: str, revision: str | None, tok, quantization=None):
        """The model this stage trains; a causal LM unless the stage needs another head. `quantization`: a
        transformers quantization config the method asks for (QLoRA), or None."""
        from tuneforge.models.load import load_model

        return load_model(src, dtype=dtype, device=device, revision=revision, quantization=quantization)

    def collators(self, tok, data_cfg, params: StageParams):
        """(train collator, eval collator)."""
        raise NotImplementedError

    def build(self, *, model, tok, train_items, val_items, args, callbacks, counter, params: StageParams, data_cfg,
              out_dir):
        """The Trainer for this stage (a TuneforgeTrainer subclass, so real tokens are counted the same way)."""
        raise NotImplementedError
