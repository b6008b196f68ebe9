"""Typed run configuration: one YAML file per run, sections model / data / method / train / output / eval.

Every section forbids unknown keys, so a typo is an error (config.load turns it into a "did you mean" message).
`auto` values are resolved later by config.auto from the dataset size and the method.
"""

from __future__ import annotations

from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Auto = Literal["auto"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    name: str = Field("smollm2-135m-instruct", description="alias, local folder, .gguf file or hub id")
    revision: str | None = None
    template: str = Field("auto", description="chat template: auto (the tokenizer's own) or a named one")
    dtype: str = Field("auto", description="auto (fp32 on CPU, bf16/fp16 on GPU), float32, bfloat16, float16")
    device: str = "auto"


class DatasetEntry(Section):
    name: str | None = Field(None, description="a name registered in dataset_info.json")
    path: str | None = Field(None, description="a local file / folder, or a hub dataset id")
    format: Literal["auto", "alpaca", "sharegpt", "openai", "text", "pairwise", "kto"] = "auto"
    columns: dict[str, str] | None = None
    tags: dict[str, str] | None = None
    ratio: float | None = Field(None, gt=0)
    max_samples: int | None = Field(None, gt=0)
    split: str = "train"

    @model_validator(mode="after")
    def _one_source(self):
        if bool(self.name) == bool(self.path):
            raise ValueError("give exactly one of 'name' (registered dataset) or 'path' (file, folder or hub id)")
        return self


class DataSection(Section):
    train: list[DatasetEntry] = Field(default_factory=list)
    eval: list[DatasetEntry] = Field(default_factory=list)
    dataset_info: str | None = Field(None, description="dataset_info.json (file or folder) resolving names")
    mix: Literal["concat", "interleave"] = "concat"
    max_samples: int | None = Field(None, gt=0)
    val_size: float = Field(0.0, ge=0, description="fraction (<1) or count (>=1) held out for validation")
    seed: int = 42
    cutoff_len: int = Field(1024, ge=8)
    mask: Literal["assistant", "last", "all"] = Field(
        "assistant", description="which tokens get loss: every assistant turn, only the last assistant turn, or "
                                 "all tokens including the prompt (= train on prompt)")
    packing: bool = False
    on_error: Literal["raise", "skip"] = "raise"
    on_long_answer: Literal["cut", "drop"] = Field(
        "cut", description="an answer longer than cutoff_len: cut its end (it then never learns to stop there) or "
                           "drop the row; either way the count is reported as answer_cut")

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _coerce(cls, v):
        """Allow `train: alpaca_en_demo` or `train: [a.json, b.json]` shorthands."""
        if v is None:
            return []
        items = v if isinstance(v, list) else [v]
        out = []
        for item in items:
            if isinstance(item, str):
                looks_like_file = "/" in item or "." in item.rsplit("/", 1)[-1]
                out.append({"path": item} if looks_like_file else {"name": item})
            else:
                out.append(item)
        return out


class LoraParams(Section):
    r: int = Field(8, ge=1)
    alpha: float | None = Field(None, description="default 2*r")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: Union[str, list[str]] = Field("all-linear", description="'all-linear' or module names")
    use_rslora: bool = False
    use_dora: bool = False
    modules_to_save: list[str] | None = None


class FreezeParams(Section):
    trainable_layers: int = Field(2, description="train the last N decoder layers (negative: the first N)")
    trainable_modules: list[str] | None = Field(None, description="name patterns to train instead of layers")
    train_embeddings: bool = False


class MethodSection(Section):
    type: Literal["full", "freeze", "lora"] = "lora"
    lora: LoraParams = Field(default_factory=LoraParams)
    freeze: FreezeParams = Field(default_factory=FreezeParams)


class TrainSection(Section):
    epochs: Union[float, Auto] = "auto"
    max_steps: int = Field(-1, description="stop after N optimizer steps (overrides epochs when > 0)")
    batch_size: Union[int, Auto] = "auto"
    grad_accum: int = Field(1, ge=1)
    learning_rate: Union[float, Auto] = "auto"
    lr_scheduler: str = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = 1.0
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: Union[bool, Auto] = "auto"
    group_by_length: bool = True
    logging_steps: int = Field(1, ge=1)
    save_steps: int = Field(0, ge=0, description="checkpoint every N steps (0: at each epoch end)")
    save_total_limit: int = Field(2, ge=1)
    resume: Union[Literal["auto", "never"], str] = Field("auto", description="auto | never | a checkpoint path")
    num_workers: int = 0

    @field_validator("epochs", "learning_rate")
    @classmethod
    def _positive(cls, v):
        if v != "auto" and v <= 0:
            raise ValueError("must be > 0 or 'auto'")
        return v

    @field_validator("batch_size")
    @classmethod
    def _pos_int(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return v


class OutputSection(Section):
    dir: str = Field("runs/{run_name}", description="output folder; {run_name} is filled in")
    run_name: str | None = None
    overwrite: bool = Field(False, description="allow writing into a non-empty folder that is not a resumable run")
    tensorboard: bool = True
    plot: bool = True


class ClassificationEval(Section):
    labels: list[str]
    mode: Literal["score", "generate"] = "score"
    data: str | None = Field(None, description="file to evaluate on (default: the validation split)")
    max_samples: int | None = 200


class EvalSection(Section):
    classification: ClassificationEval | None = None
    preview_prompts: list[str] = Field(default_factory=list,
                                       description="prompts answered before and after training")
    max_new_tokens: int = 64


class RunConfig(Section):
    stage: Literal["pt", "sft"] = "sft"
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    method: MethodSection = Field(default_factory=MethodSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    tags: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _needs_data(self):
        if not self.data.train:
            raise ValueError("data.train is empty: name at least one dataset (a file path or a registered name)")
        return self
