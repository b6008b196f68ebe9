"""Typed run configuration: one YAML file per run, sections model / data / method / train / output / eval.

Every section forbids unknown keys, so a typo is an error (config.load turns it into a "did you mean" message).
`auto` values are resolved later by config.auto from the dataset size and the method.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuneforge.utils.errors import ConfigError

Auto = Literal["auto"]

# transformers' SchedulerType values (kept here: config imports nothing above utils; a unit test compares them).
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt", "reduce_lr_on_plateau", "cosine_with_min_lr", "cosine_warmup_with_min_lr",
                 "warmup_stable_decay", "greedy")
# Metrics that eval.classification logs (under eval_cls/) and train.load_best may name.
CLASSIFICATION_METRICS = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "n_unparseable")


def did_you_mean(value: str, choices) -> str:
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.5)
    return f" — did you mean '{close[0]}'?" if close else ""


def pick_plugin(table: dict, key, kind: str):
    """`table[key]` (a MethodSection / StageSection or its type); an unknown name is a ConfigError with "did you
    mean" and the choices (`kind`: "method", "stage")."""
    name = getattr(key, "type", key)
    if name not in table:
        raise ConfigError(f"{kind}: unknown {kind} '{name}'{did_you_mean(str(name), table)}",
                          hint=f"choose one of: {', '.join(table)}")
    return table[name]


def params_error(err, section: str, owner: str, valid) -> str:
    """A plug-in's parameter ValidationError as one line per problem: `section.key: …`, with "did you mean" for an
    unknown key (`owner` names the plug-in, e.g. "stage dpo")."""
    lines = []
    valid = sorted(valid)
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            lines.append(f"{section}.{key}: unknown key for {owner}{did_you_mean(key, valid)} "
                         f"(valid: {', '.join(valid) or 'none'})")
        else:
            lines.append(f"{section}.{key}: {e['msg']}")
    return "; ".join(lines)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSection(Section):
    name: str = Field("smollm2-135m-instruct", description="alias, local folder, .gguf file or hub id")
    revision: str | None = Field(None, description="hub revision (branch, tag or commit) of a hub model")
    template: str = Field("auto", description="chat template: auto (the tokenizer's own) or a named one")
    dtype: str = Field("auto", description="auto (fp32 on CPU, bf16/fp16 on GPU), float32, bfloat16, float16")
    device: str = Field("auto", description="auto (cuda > mps > cpu), cpu, cuda, cuda:1, mps")


class DatasetEntry(Section):
    name: str | None = Field(None, description="a name registered in dataset_info.json")
    path: str | None = Field(None, description="a local file / folder, or a hub dataset id")
    format: Literal["auto", "alpaca", "sharegpt", "openai", "text", "pairwise", "kto"] = Field(
        "auto", description="row format; auto detects it from the columns")
    columns: dict[str, str] | None = Field(None, description="rename columns: {canonical name: column in the file}")
    tags: dict[str, str] | None = Field(None, description="sharegpt keys: role_tag, content_tag, user_tag, ...")
    ratio: float | None = Field(None, gt=0, description="mixing weight of this dataset")
    max_samples: int | None = Field(None, gt=0, description="use at most N rows of this dataset")
    split: str = Field("train", description="split of a hub dataset")

    @model_validator(mode="after")
    def _one_source(self):
        if bool(self.name) == bool(self.path):
            raise ValueError("give exactly one of 'name' (registered dataset) or 'path' (file, folder or hub id)")
        return self


class DataSection(Section):
    train: list[DatasetEntry] = Field(default_factory=list, description="datasets to train on (paths or names)")
    eval: list[DatasetEntry] = Field(default_factory=list, description="validation datasets (else val_size)")
    dataset_info: str | None = Field(None, description="dataset_info.json (file or folder) resolving names")
    mix: Literal["concat", "interleave"] = Field("concat", description="how several train datasets combine")
    max_samples: int | None = Field(None, gt=0, description="use at most N training rows in all")
    val_size: float = Field(0.0, ge=0, description="fraction (<1) or count (>=1) held out for validation")
    seed: int = Field(42, description="seed for shuffling, mixing and the validation split")
    cutoff_len: int = Field(1024, ge=8, description="longest training sequence in tokens")
    mask: Literal["assistant", "last", "all"] = Field(
        "assistant", description="which tokens get loss: every assistant turn, only the last assistant turn, or "
                                 "all tokens including the prompt (= train on prompt)")
    packing: bool = Field(False, description="pack rows into cutoff_len sequences (no cross-row attention)")
    on_error: Literal["raise", "skip"] = Field("raise", description="a bad row stops the run, or is skipped (counted)")
    on_long_answer: Literal["cut", "drop"] = Field(
        "cut", description="an answer longer than cutoff_len: cut its end (it then never learns to stop there) or "
                           "drop the row; either way the count is reported as answer_cut")
    cache: bool = Field(True, description="keep the rendered data (Arrow, memory-mapped) in the data cache and reuse "
                                          "it when the same data, tokenizer, template and settings come again "
                                          "(rerun, resume, sweep cell, another method); `tuneforge data cache ls` "
                                          "lists it")
    cache_dir: str | None = Field(None, description="data cache folder (default $TUNEFORGE_HOME/cache/data)")
    num_proc: Union[int, Auto] = Field(
        "auto", description="processes that render the data; auto: one per CPU core from 10,000 rows on, else 1")
    streaming: bool = Field(
        False, description="stage pt: read the training text lazily (row by row, tokenized in batches) and train "
                           "on fixed cutoff_len blocks of concatenated documents, in memory that does not grow "
                           "with the corpus: for corpora larger than RAM or disk (hub datasets stream from the "
                           "hub). Local files are checked row by row before the model loads, keeping nothing. "
                           "The stream repeats until train.max_steps, which it needs; it has no epochs, no "
                           "data.val_size (give data.eval), no data.max_samples or ratio (a dataset's own "
                           "max_samples takes its first rows), no data cache; blocks are always packed")
    shuffle_buffer: int = Field(
        0, ge=0, description="data.streaming: shuffle blocks within a window of N blocks (seeded by data.seed; "
                             "N × cutoff_len × 4 bytes of memory); 0 keeps the order of the files")

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


class PluginSection(BaseModel):
    """A plug-in's section: `type` names the plug-in, and the keys beside it are that plug-in's own parameters,
    validated by the plug-in (which owns them); the config layer only carries them. `name` alone means `{type: name}`."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    type: str

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, v):
        return {"type": v} if isinstance(v, str) else v

    @property
    def params(self) -> dict:
        return dict(self.model_extra or {})

    def __str__(self) -> str:
        return self.type


class MethodSection(PluginSection):
    """`method: lora` or `method: {type: ia3, target_modules: [...]}`, validated by tuneforge.methods. The older
    nested form `method: {type: lora, lora: {r: 16}}` is read as `method: {type: lora, r: 16}`."""

    type: str = Field("lora", description="full, freeze, lora, dora, ia3, prompt … (`tuneforge methods` lists them)")


class TrainSection(Section):
    epochs: Union[float, Auto] = Field("auto", description="passes over the data; auto from the row count")
    max_steps: int = Field(-1, description="stop after N optimizer steps (overrides epochs when > 0)")
    batch_size: Union[int, Auto] = Field("auto", description="rows per step per device; auto from the row count")
    grad_accum: int = Field(1, ge=1, description="steps accumulated per optimizer step")
    learning_rate: Union[float, Auto] = Field("auto", description="peak learning rate; auto by method")
    learning_rate_multiplier: float = Field(
        1.0, gt=0, description="multiplies the learning rate, auto or given (OpenAI's learning_rate_multiplier)")
    lr_scheduler: str = Field("cosine", description=f"one of {', '.join(LR_SCHEDULERS)}")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="share of steps with a rising learning rate")
    optim: Literal["adamw", "adamw_8bit", "adafactor", "sgd"] = Field(
        "adamw", description="optimizer: AdamW, AdamW with 8-bit states (bitsandbytes, a quarter of the state "
                             "memory), Adafactor (factored second moments), or SGD; methods galore and apollo bring "
                             "their own")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    max_grad_norm: float = Field(1.0, description="gradient clipping norm")
    seed: int = Field(42, description="seed for weights init and data order")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto: fp32 on CPU, bf16/fp16 GPU")
    gradient_checkpointing: Union[bool, Auto] = Field("auto", description="recompute activations to save memory")
    group_by_length: bool = Field(True, description="batch rows of similar length (less padding)")
    logging_steps: int = Field(1, ge=1, description="log metrics every N optimizer steps")
    save_steps: int = Field(0, ge=0, description="checkpoint every N steps (0: at each epoch end)")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept on disk")
    eval_steps: Union[int, Auto] = Field(
        "auto", description="evaluate the validation data every N steps (0: at each epoch end; auto: four times "
                            "per epoch when a load_best metric is watched, else each epoch); runs whenever "
                            "data.val_size or data.eval gives rows")
    eval_on_start: bool = Field(False, description="evaluate once before the first step too (the baseline of the "
                                                    "eval curve)")
    load_best: str | None = Field(
        "auto", description="keep the checkpoint with the best value of this metric as the result: eval_loss, or "
                            "eval_cls/<metric> with eval.classification; auto: eval_cls/macro_f1 with "
                            "eval.classification, else eval_loss, whenever there are validation rows; null: the last")
    early_stopping_patience: Union[int, Auto, None] = Field(
        "auto", description="stop after N evaluations without a better train.load_best metric; auto: 2 whenever a "
                            "load_best metric is watched, less when evaluations are sparse (about half an epoch "
                            "without a better value); null: never stop early")
    early_stopping_threshold: Union[float, Auto] = Field(
        "auto", description="the smallest change of the load_best metric that counts as better: early stopping "
                            "waits for more, and a later checkpoint within it of the best is the one kept; auto: "
                            "about one standard error (0.5/sqrt(rows scored)) for eval_cls metrics, 0 for losses")
    resume: Union[Literal["auto", "never", "force"], str] = Field(
        "auto", description="auto | never | force (resume even though the config changed) | a checkpoint path")
    num_workers: int = Field(0, description="data loader worker processes")
    distributed: Literal["auto", "none", "ddp", "fsdp", "deepspeed"] = Field(
        "auto", description="how several processes share a run. Launch them with `torchrun --nproc_per_node N -m "
                            "tuneforge train CONFIG` or `accelerate launch --num_processes N -m tuneforge train "
                            "CONFIG`; auto: ddp under such a launcher, none in one process. ddp: a whole model per "
                            "process, gradients averaged (CPU or GPU); fsdp: FSDP2, parameters, gradients and "
                            "optimizer state sharded across GPUs; deepspeed: ZeRO as train.deepspeed_config says "
                            "(CUDA and `pip install deepspeed`)")
    deepspeed_config: str | None = Field(
        None, description="DeepSpeed JSON config for train.distributed=deepspeed: examples/deepspeed/zero2.json "
                          "(optimizer state and gradients sharded) or zero3.json (parameters too); its \"auto\" "
                          "values are filled from this section")
    threads: Union[int, Auto] = Field(
        "auto", description="CPU threads of each training process (torch.set_num_threads); auto: OMP_NUM_THREADS "
                            "when set, else the physical cores this process may use divided by the processes on "
                            "this machine (hyper-threads only wait for each other). Lower it when other work "
                            "shares the CPU")
    compile: bool = Field(
        False, description="torch.compile the model (inductor; on CPU it builds C++ kernels with the system "
                           "compiler): the first steps wait for the compilation (about a minute on 2 cores even "
                           "for a tiny model) and a new batch shape may compile again, so it can pay only on long "
                           "runs; the loss curve stays the same. Off by default (bench/cpu_knobs.py measures it)")
    attention: Literal["auto", "sdpa", "eager", "varlen"] = Field(
        "auto", description="attention kernel: sdpa (PyTorch's fused scaled_dot_product_attention; packed rows get "
                            "a block-diagonal mask, so every query meets every key of its row), varlen (sdpa on each "
                            "packed sample alone: the same result with a sample's own length squared instead of the "
                            "row's; needs a model whose layers are all full causal attention) or eager (matmul + "
                            "softmax, every attention weight kept: for debugging or a model without sdpa); auto: "
                            "varlen for packed data on the CPU on a model that supports it, else sdpa (on a GPU "
                            "varlen's loop over samples is slower: bench/README.md). Methods longlora and "
                            "unipelt replace it with their own SDPA-based attention")
    lora_kernel: Literal["auto", "fused", "peft"] = Field(
        "auto", description="how LoRA linear layers run: fused (one autograd function per layer: the adapter added "
                            "into the base output in place and its gradients computed in cache-friendly order; "
                            "bench/README.md: 1.17x PEFT's forward on a packed SmolLM2 LoRA step on CPU, same "
                            "losses) or peft (PEFT's own forward); auto: fused, except under train.distributed fsdp "
                            "or deepspeed (their shards are gathered by the layers' own modules), where fused is "
                            "refused. Calls it cannot run "
                            "(dropout, DoRA and other variants, several active adapters, quantized bases, autocast) "
                            "take PEFT's forward")
    allocator: Literal["auto", "system", "jemalloc", "tcmalloc"] = Field(
        "auto", description="memory allocator of `tuneforge train`: jemalloc (with MALLOC_CONF "
                            "dirty_decay_ms:-1,muzzy_decay_ms:-1 unless set) or tcmalloc are preloaded (LD_PRELOAD) "
                            "by restarting the command once; system: glibc malloc as the environment configures it; "
                            "auto: glibc malloc told to keep freed memory (blocks up to 32 MiB from the heap, never "
                            "trimmed; unless MALLOC_*_ or GLIBC_TUNABLES are set), so a step does not fault in the "
                            "previous step's pages again (bench/cpu_knobs.py: jemalloc 0.94x, tcmalloc 0.98x but "
                            "30% less peak memory, so tcmalloc when memory is short; apt-get install "
                            "libtcmalloc-minimal4). Runs started in-process (jobs, sweeps, the Python API) keep "
                            "their process's allocator and its settings")
    kernels: Literal["none", "liger"] = Field(
        "none", description="extra GPU kernels patched into the model: liger (Liger Kernel's Triton RMSNorm, RoPE and "
                            "SwiGLU, applied by the Trainer; pip install liger-kernel; CUDA only; bench/README.md "
                            "gives what it changed on an H200) or none")

    @field_validator("threads")
    @classmethod
    def _threads(cls, v):
        if v != "auto" and (isinstance(v, bool) or v < 1):
            raise ValueError("must be >= 1 or 'auto' (the physical cores divided by the processes on this machine)")
        return v

    @field_validator("lr_scheduler")
    @classmethod
    def _known_scheduler(cls, v):
        if v not in LR_SCHEDULERS:
            raise ValueError(f"unknown scheduler '{v}'{did_you_mean(v, LR_SCHEDULERS)} "
                             f"(choose one of {', '.join(LR_SCHEDULERS)})")
        return v

    @field_validator("epochs", "learning_rate")
    @classmethod
    def _positive(cls, v):
        if v != "auto" and v <= 0:
            raise ValueError("must be > 0 or 'auto'")
        return v

    @field_validator("eval_steps")
    @classmethod
    def _steps(cls, v):
        if v != "auto" and v < 0:
            raise ValueError("must be >= 0 (0: at each epoch end) or 'auto'")
        return v

    @field_validator("early_stopping_patience")
    @classmethod
    def _patience(cls, v):
        if v not in ("auto", None) and v < 1:
            raise ValueError("must be >= 1, 'auto' or null (never stop early)")
        return v

    @field_validator("batch_size")
    @classmethod
    def _pos_int(cls, v):
        if v != "auto" and v < 1:
            raise ValueError("must be >= 1 or 'auto'")
        return v

    @field_validator("deepspeed_config")
    @classmethod
    def _deepspeed_file(cls, v):
        if v is not None:
            read_deepspeed_config(v)
        return v

    @model_validator(mode="after")
    def _deepspeed_pair(self):
        if self.distributed == "deepspeed" and not self.deepspeed_config:
            raise ValueError("train.distributed=deepspeed needs train.deepspeed_config, a DeepSpeed JSON file (e.g. "
                             "examples/deepspeed/zero2.json)")
        if self.deepspeed_config and self.distributed != "deepspeed":
            raise ValueError(f"train.deepspeed_config is set, but train.distributed is {self.distributed}: set "
                             f"train.distributed=deepspeed, or remove train.deepspeed_config")
        return self


def read_deepspeed_config(path: str) -> dict:
    """A DeepSpeed config file as a dict; ValueError unless it is a JSON object with zero_optimization.stage 0-3
    (the ZeRO stage decides what is sharded, so a file without one is most likely not a training config)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"DeepSpeed config {path} does not exist (presets: examples/deepspeed/zero2.json, "
                         f"zero3.json)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"DeepSpeed config {path} is not valid JSON: {err}") from None
    stage = (data.get("zero_optimization") or {}).get("stage") if isinstance(data, dict) else None
    if not isinstance(stage, int) or isinstance(stage, bool) or not 0 <= stage <= 3:
        raise ValueError(f"DeepSpeed config {path} needs zero_optimization.stage set to 0, 1, 2 or 3 (got "
                         f"{stage!r})")
    return data


class OutputSection(Section):
    dir: str = Field("runs/{run_name}", description="output folder; {run_name} is filled in")
    run_name: str | None = Field(None, description="run name (default: the config file name)")
    overwrite: bool = Field(False, description="allow writing into a non-empty folder that is not a resumable run")
    report_to: list[Literal["tensorboard", "wandb", "mlflow", "trackio"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="experiment trackers fed by the Trainer (tensorboard writes OUTPUT_DIR/tensorboard); [] = none")
    plot: bool = Field(True, description="save loss.png in the output folder")

    @model_validator(mode="before")
    @classmethod
    def _tensorboard_shorthand(cls, data):
        """`output.tensorboard: true|false` (older configs) adds or removes tensorboard from report_to."""
        if not isinstance(data, dict) or "tensorboard" not in data:
            return data
        data = dict(data)
        flag = data.pop("tensorboard")
        if not isinstance(flag, bool):
            raise ValueError(f"output.tensorboard must be true or false (got {flag!r}); prefer output.report_to")
        given = data.get("report_to", ["tensorboard"])
        given = [given] if isinstance(given, str) else list(given)
        if not flag and "report_to" in data and "tensorboard" in given:
            raise ValueError("output.tensorboard=false contradicts output.report_to, which names tensorboard: "
                             "keep only output.report_to")
        data["report_to"] = ([*given, "tensorboard"] if flag and "tensorboard" not in given
                             else given if flag else [x for x in given if x != "tensorboard"])
        return data


class ClassificationEval(Section):
    labels: list[str] = Field(description="the label strings the model must answer with")
    mode: Literal["score", "generate"] = Field("score", description="score each label, or parse generated text")
    data: str | None = Field(None, description="file to evaluate on (default: the validation split)")
    max_samples: int | None = Field(200, description="evaluate at most N rows")


class EvalSection(Section):
    classification: ClassificationEval | None = Field(None, description="label accuracy after each epoch")
    preview_prompts: list[str] = Field(default_factory=list,
                                       description="prompts answered before and after training")
    max_new_tokens: int = Field(64, description="longest preview answer in tokens")


class StageSection(PluginSection):
    """`stage: sft` or `stage: {type: dpo, beta: 0.1}`, validated by tuneforge.stages."""

    type: str = Field("sft", description="pt, sft, rm, dpo, simpo, orpo, kto … (`tuneforge stages` lists them)")


class RunConfig(Section):
    stage: StageSection = Field(default_factory=StageSection, description="the training stage and its parameters")
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    method: MethodSection = Field(default_factory=MethodSection)
    train: TrainSection = Field(default_factory=TrainSection)
    output: OutputSection = Field(default_factory=OutputSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    tags: list[str] = Field(default_factory=list, description="labels recorded with the run")

    @model_validator(mode="after")
    def _needs_data(self):
        if not self.data.train:
            raise ValueError("data.train is empty: name at least one dataset (a file path or a registered name)")
        check_load_best(self)
        problems = streaming_problems(self)
        if problems:
            raise ValueError("; ".join(f"{problem} ({fix})" for problem, fix in problems))
        return self


def streaming_problems(cfg: RunConfig) -> list[tuple[str, str]]:
    """(problem, fix) pairs for settings data.streaming cannot honour (checked when the config loads, and again by
    the runner for configs built in code). A stream is read once per pass, in order, and never held: anything that
    needs every row first (a seeded subset, a resampled ratio, a held-out split, a row count for epochs) is refused
    rather than quietly approximated."""
    d, t = cfg.data, cfg.train
    if not d.streaming:
        return [("data.shuffle_buffer applies to data.streaming only", "set data.shuffle_buffer=0, or "
                 "data.streaming=true")] if d.shuffle_buffer else []
    found = []
    if cfg.stage.type != "pt":
        found.append((f"data.streaming=true streams plain text for stage pt; stage {cfg.stage.type} is not "
                      f"streamed", "set stage: pt, or data.streaming=false (pt and sft data are kept memory-mapped "
                      "in the data cache)"))
    if t.max_steps <= 0:
        found.append(("data.streaming=true needs train.max_steps: a stream has no length, so epochs cannot end "
                      "the run", "set train.max_steps=N (each step reads batch_size × grad_accum × processes "
                      "blocks of data.cutoff_len tokens)"))
    if d.val_size:
        found.append(("data.val_size cannot hold rows out of a stream", "give validation rows as a file: "
                      "data.eval=path/to/val.txt, and data.val_size=0"))
    if d.max_samples is not None:
        found.append(("data.max_samples picks a seeded subset of all rows, which a stream never holds",
                      "set max_samples on a dataset entry (its first N rows): data.train=[{path: ..., "
                      "max_samples: N}]"))
    if any(e.ratio is not None for e in d.train):
        found.append(("a dataset's ratio resamples all of its rows, which a stream never holds",
                      "remove ratio; data.mix=interleave alternates datasets row by row"))
    return found


def has_validation(cfg: RunConfig) -> bool:
    return bool(cfg.data.eval) or cfg.data.val_size > 0


def check_load_best(cfg: RunConfig, metrics: tuple[str, ...] | None = None) -> None:
    """train.load_best / early_stopping_patience must name a metric that the run will log, on validation data.

    `metrics`: what the configured stage logs at an evaluation (tuneforge.stages, checked again by the runner);
    None when the config is loaded, where only the stage-independent checks run."""
    t = cfg.train
    if t.early_stopping_patience not in ("auto", None) and not t.load_best:
        raise ValueError("train.early_stopping_patience needs train.load_best (the metric to watch), "
                         "e.g. train.load_best=eval_loss")
    if not t.load_best or t.load_best == "auto":  # auto picks a metric the run logs, or none without validation
        return
    if not has_validation(cfg):
        raise ValueError(f"train.load_best={t.load_best} needs validation data: set data.val_size (e.g. 0.1) or "
                         f"data.eval")
    cls_names = [f"eval_cls/{m}" for m in CLASSIFICATION_METRICS]
    if t.load_best in cls_names and cfg.eval.classification is None:
        raise ValueError(f"train.load_best={t.load_best} needs eval.classification (labels, mode) to compute it")
    valid = [*(metrics or ()), *(cls_names if cfg.eval.classification is not None else [])]
    if metrics is not None and t.load_best not in valid:
        guess = did_you_mean(t.load_best, valid + cls_names)
        raise ValueError(f"train.load_best: unknown metric '{t.load_best}'{guess} (valid here: {', '.join(valid)})")
    if t.save_steps and t.eval_steps not in (0, "auto") and t.save_steps % t.eval_steps:
        raise ValueError(f"train.load_best needs checkpoints where evaluations happen: train.save_steps="
                         f"{t.save_steps} is not a multiple of train.eval_steps={t.eval_steps} (set one of them to "
                         f"0 to derive it from the other)")
