"""Batched and streaming generation with Hugging Face `generate`, shared by chat, generate, eval and serve.

Prompts are rendered with the tokenizer's chat template (`tuneforge.data.templates`), the same one training used,
and generation stops at that template's end-of-turn marker or eos. `complete` is the raw-text path for base models.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from tuneforge.data.templates import (
    encode_prompt,
    ensure_chat_template,
    single_token_id,
    template_stop_strings,
    template_stop_token_ids,
)
from tuneforge.utils.errors import ConfigError
from tuneforge.utils.progress import progress_bar


@dataclass
class Generation:
    """One model answer. `finish_reason` is "stop" (end-of-turn / eos / stop text) or "length" (max_new_tokens)."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class _Stops:
    ids: tuple[int, ...]  # single-token stops, handled by generate's eos_token_id
    texts: tuple[str, ...]  # every stop text; multi-token ones are matched on decoded text


class _Cancel:
    """Stopping criterion that ends a streaming generation once the reader has gone away."""

    def __init__(self):
        self.event = threading.Event()

    def __call__(self, input_ids, scores, **kwargs):
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def _with_stop(stops: _Stops, stop: str | Sequence[str] | None) -> _Stops:
    """`stops` plus the caller's own stop texts (an OpenAI request's `stop`); empty ones are ignored."""
    extra = (stop,) if isinstance(stop, str) else tuple(stop or ())
    return _Stops(stops.ids, stops.texts + tuple(s for s in extra if s and s not in stops.texts))


def encode_text(tokenizer, prompt: str) -> list[int]:
    """The ids raw-text generation (`complete`, `stream_complete`) starts from: the text, with the usual bos."""
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return (text[: min(hits)], True) if hits else (text, False)


@dataclass(frozen=True)
class Sampling:
    """Decoding settings. temperature 0 = greedy (top_p and seed unused); repetition_penalty > 1 discourages tokens
    already in the prompt or answer, in greedy and sampled decoding alike; seed makes sampling reproducible."""

    temperature: float = 0.0
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.repetition_penalty <= 0:
            raise ConfigError(f"temperature must be >= 0, top_p in (0, 1] and repetition_penalty > 0; got "
                              f"temperature={self.temperature}, top_p={self.top_p}, "
                              f"repetition_penalty={self.repetition_penalty}",
                              hint="temperature 0 means greedy decoding; repetition_penalty 1 means none")

    def generate_kwargs(self) -> dict:
        kw = {"repetition_penalty": float(self.repetition_penalty)}
        if self.temperature == 0:  # greedy; values equal to the library defaults so no 'unused flag' warnings
            return {**kw, "do_sample": False, "temperature": 1.0, "top_p": 1.0, "top_k": 50}
        return {**kw, "do_sample": True, "temperature": float(self.temperature), "top_p": float(self.top_p),
                "top_k": 0}

    @contextmanager
    def rng(self):
        """Seed torch's generators for one generation, restoring the caller's random state afterwards."""
        if self.seed is None or self.temperature == 0:
            yield
            return
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            yield


class Engine:
    """A model + tokenizer ready to answer conversations (chat template) or complete raw text."""

    def __init__(self, model, tokenizer):
        """Wrap an already loaded causal LM (optionally a PeftModel) and its tokenizer; the model is put in eval mode.

        The tokenizer's chat_template is used as is; set it first with `ensure_chat_template` when it has none.
        A tokenizer without a pad token gets eos (else unk) as pad; padding is done here, on the left.
        """
        self.model = model.eval()
        self.tokenizer = tokenizer
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token

    @classmethod
    def load(cls, model: str, adapter: str | None = None, *, template: str = "auto", dtype: str = "auto",
             device: str = "auto") -> Engine:
        """Load `model` (alias, folder, .gguf, hub id) with an optional PEFT `adapter` folder on top (not merged).

        `template="auto"` keeps the chat template saved with the adapter or the model; when neither has one, chat
        calls raise a ConfigError naming the templates to choose from (`complete` still works). Any other name
        (chatml, llama3, …, see `tuneforge.data.templates.list_templates`) replaces it.
        """
        from tuneforge.models.load import load_for_inference

        m, tok = load_for_inference(model, adapter, dtype=dtype, device=device)
        if template != "auto" or getattr(tok, "chat_template", None):
            ensure_chat_template(tok, template)
        return cls(m, tok)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _chat_stops(self) -> _Stops:
        texts = tuple(template_stop_strings(self.tokenizer))
        return _Stops(tuple(template_stop_token_ids(self.tokenizer)), texts)

    def _eos_stops(self) -> _Stops:
        eos = self.tokenizer.eos_token_id
        return _Stops((eos,) if eos is not None else (), ())

    def _generate_kwargs(self, stops: _Stops, max_new_tokens: int, sampling: Sampling) -> dict:
        if max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
        # use_cache explicitly: a model mid-training has config.use_cache=False (see train.runner).
        kw = {"max_new_tokens": max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id, "use_cache": True,
              "eos_token_id": list(stops.ids) or None, **sampling.generate_kwargs()}
        # every stop text that is not already a stop id is matched by generate itself (a caller's one-token stop too)
        multi = [s for s in stops.texts if single_token_id(self.tokenizer, s) not in stops.ids]
        if multi:
            kw.update(stop_strings=multi, tokenizer=self.tokenizer)
        return kw

    def generate(self, conversations: list[list[dict]], *, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None, batch_size: int = 8,
                 progress: bool = False, tools: list[list[dict] | None] | None = None,
                 stop: str | Sequence[str] | None = None) -> list[Generation]:
        """Answer each conversation (a list of {"role", "content"} ending with a user turn); results in input order.

        `tools`: per conversation, the tool schemas shown in its prompt (as in training), or None. `stop`: extra
        texts that end an answer (cut before them, finish_reason "stop"), besides the template's end of turn.

        Greedy when temperature is 0. Prompts are sorted by length and left-padded into batches of `batch_size`, so
        greedy results equal one-by-one generation (up to float ties). With temperature > 0, `seed` makes the
        sampled answers reproducible (the same seed and batch_size give the same answers). `progress` shows a bar
        with ETA and tokens/s on stderr.
        """
        tools = tools or [None] * len(conversations)
        prompts = [encode_prompt(self.tokenizer, c, t) for c, t in zip(conversations, tools)]
        sampling = Sampling(temperature, top_p, repetition_penalty, seed)
        stops = _with_stop(self._chat_stops(), stop)
        return self._run(prompts, stops, max_new_tokens, sampling, batch_size, progress)

    def complete(self, prompts: list[str], *, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, seed: int | None = None, batch_size: int = 8,
                 progress: bool = False, stop: str | Sequence[str] | None = None) -> list[Generation]:
        """Continue raw text (no chat template, tokenizer's usual bos): for base models. Stops at eos (and `stop`)."""
        ids = [encode_text(self.tokenizer, p) for p in prompts]
        sampling = Sampling(temperature, top_p, repetition_penalty, seed)
        return self._run(ids, _with_stop(self._eos_stops(), stop), max_new_tokens, sampling, batch_size, progress)

    def _run(self, prompts: list[list[int]], stops: _Stops, max_new_tokens: int, sampling: Sampling,
             batch_size: int, progress: bool) -> list[Generation]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        kw = self._generate_kwargs(stops, max_new_tokens, sampling)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)  # longest first: OOM early
        results: list[Generation | None] = [None] * len(prompts)
        t0, tokens = time.monotonic(), 0
        with sampling.rng(), progress_bar(len(prompts), "generating", progress, fields={"tps": ""}) as advance:
            for start in range(0, len(order), batch_size):
                idx = order[start: start + batch_size]
                for i, gen in zip(idx, self._generate_batch([prompts[i] for i in idx], stops, kw)):
                    results[i] = gen
                    tokens += gen.completion_tokens
                advance(len(idx), tps=f"{tokens / max(time.monotonic() - t0, 1e-9):.1f} tok/s")
        return results  # type: ignore[return-value]

    def _generate_batch(self, batch: list[list[int]], stops: _Stops, kw: dict) -> list[Generation]:
        width = max(len(p) for p in batch)
        if width == 0:
            raise ConfigError("cannot generate from an empty prompt", hint="give at least one token of text")
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=self.device)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, **kw)
        return [self._finish(p, row[width:].tolist(), stops, kw["max_new_tokens"]) for p, row in zip(batch, out)]

    def _finish(self, prompt: list[int], new: list[int], stops: _Stops, max_new_tokens: int) -> Generation:
        cut = next((i for i, t in enumerate(new) if t in stops.ids), None)
        if cut is not None:
            kept, n_tokens = new[:cut], cut + 1
        else:
            pad, n_tokens = self.tokenizer.pad_token_id, len(new)
            while n_tokens and new[n_tokens - 1] == pad:  # rows stopped on text are padded to the batch's length
                n_tokens -= 1
            kept = new[:n_tokens]
        text, hit = _cut_at_stop(self.tokenizer.decode(kept, skip_special_tokens=True), stops.texts)
        stopped = cut is not None or hit or n_tokens < max_new_tokens
        return Generation(text, "stop" if stopped else "length", len(prompt), n_tokens)

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0,
               top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
               tools: list[dict] | None = None,
               stop: str | Sequence[str] | None = None) -> Generator[str, None, Generation]:
        """Yield the answer to one conversation piece by piece as it is generated.

        The pieces joined equal `generate([messages])[0].text` for the same settings, and the generator's return
        value (`gen = yield from engine.stream(...)`) is that same Generation, with its finish_reason and token
        counts. Closing the iterator early stops the generation thread at its next token and waits for it to end.
        """
        stops, sampling = _with_stop(self._chat_stops(), stop), Sampling(temperature, top_p, repetition_penalty, seed)
        return (yield from self._stream(encode_prompt(self.tokenizer, messages, tools), stops, max_new_tokens,
                                        sampling))

    def stream_complete(self, prompt: str, *, max_new_tokens: int = 256, temperature: float = 0.0,
                        top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
                        stop: str | Sequence[str] | None = None) -> Generator[str, None, Generation]:
        """`stream` for raw text: the pieces joined equal `complete([prompt])[0].text`; returns that Generation."""
        stops, sampling = _with_stop(self._eos_stops(), stop), Sampling(temperature, top_p, repetition_penalty, seed)
        return (yield from self._stream(encode_text(self.tokenizer, prompt), stops, max_new_tokens, sampling))

    def _stream(self, prompt: list[int], stops: _Stops, max_new_tokens: int,
                sampling: Sampling) -> Generator[str, None, Generation]:
        from transformers import TextIteratorStreamer

        kw = self._generate_kwargs(stops, max_new_tokens, sampling)
        ids = torch.tensor([prompt], device=self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        cancel, failure, output = _Cancel(), [], []

        def work():
            try:
                with torch.inference_mode(), sampling.rng():
                    output.append(self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                      streamer=streamer, stopping_criteria=[cancel], **kw))
            except BaseException as err:  # noqa: BLE001 - handed to the reading thread
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            yield from _hold_back_stops(streamer, stops.texts)
        except BaseException:  # the reader left (or failed): stop generating at the next token
            cancel.event.set()
            raise
        finally:
            # Reaching a stop text, generate stops on it by itself (every stop text is an eos id or a stop string),
            # so the thread ends where `generate` would and the token counts below match it.
            thread.join()
        if failure:
            raise failure[0]
        return self._finish(prompt, output[0][0, len(prompt):].tolist(), stops, max_new_tokens)


def _hold_back_stops(pieces: Iterator[str], stops: tuple[str, ...]) -> Iterator[str]:
    """Pass text through, never emitting a stop text or a tail that may be the start of one."""
    buf = ""
    for piece in pieces:
        buf += piece
        text, hit = _cut_at_stop(buf, stops)
        if hit:
            if text:
                yield text
            return
        keep = max((k for s in stops for k in range(1, len(s)) if buf.endswith(s[:k])), default=0)
        if len(buf) > keep:
            yield buf[: len(buf) - keep]
            buf = buf[len(buf) - keep:]
    if buf:
        yield buf
