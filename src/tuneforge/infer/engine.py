"""Batched and streaming generation with Hugging Face `generate`, shared by chat, generate, eval and serve.

Prompts are rendered with the tokenizer's chat template (`tuneforge.data.templates`), the same one training used,
and generation stops at that template's end-of-turn marker or eos. `complete` is the raw-text path for base models.
Every entry point can also report each answer token's log-probability (`logprobs=`), without changing the answer.
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import lru_cache

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


@dataclass(frozen=True)
class TopToken:
    """A token the model could write at a position: its text, that text's UTF-8 bytes, its log-probability."""

    id: int
    token: str
    bytes: list[int]
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """One answer token with its log-probability and the `top` most likely tokens at its position (most likely
    first). Log-probabilities are the log-softmax of the model's raw next-token logits, before temperature, top_p
    and repetition_penalty (what OpenAI and vLLM report), so a greedy token is top[0] unless a penalty moved it.

    `token` is the text the token adds to the answer (decoded after the tokens before it, so SentencePiece's
    leading space is kept and the tokens joined equal the answer); a token holding part of a character spread over
    several tokens is decoded alone (the replacement character), with its raw bytes where the tokenizer has them.
    A special token shows its literal text. `offset`: where the token's text starts in the answer."""

    id: int
    token: str
    bytes: list[int]
    logprob: float
    offset: int
    top: list[TopToken]


@dataclass(frozen=True)
class Piece:
    """A streamed piece of text with the tokens that wrote it (`stream(..., logprobs=n)` yields these)."""

    text: str
    logprobs: list[TokenLogprob]


@dataclass
class Generation:
    """One model answer. `finish_reason` is "stop" (end-of-turn / eos / stop text) or "length" (max_new_tokens).
    `logprobs`: the answer's tokens when asked for (`logprobs=n`), else None; tokens of a stop text the answer was
    cut before are left out, a token that straddles the cut is kept."""

    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    logprobs: list[TokenLogprob] | None = None


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
                 stop: str | Sequence[str] | None = None, logprobs: int | None = None) -> list[Generation]:
        """Answer each conversation (a list of {"role", "content"} ending with a user turn); results in input order.

        `tools`: per conversation, the tool schemas shown in its prompt (as in training), or None. `stop`: extra
        texts that end an answer (cut before them, finish_reason "stop"), besides the template's end of turn.
        `logprobs=n` fills each Generation's `logprobs`: every answer token's log-probability and the n most likely
        tokens at its position (see TokenLogprob); the answers are the same as without it.

        Greedy when temperature is 0. Prompts are sorted by length and left-padded into batches of `batch_size`, so
        greedy results equal one-by-one generation (up to float ties). With temperature > 0, `seed` makes the
        sampled answers reproducible (the same seed and batch_size give the same answers). `progress` shows a bar
        with ETA and tokens/s on stderr.
        """
        tools = tools or [None] * len(conversations)
        prompts = [encode_prompt(self.tokenizer, c, t) for c, t in zip(conversations, tools)]
        sampling = Sampling(temperature, top_p, repetition_penalty, seed)
        stops = _with_stop(self._chat_stops(), stop)
        return self._run(prompts, stops, max_new_tokens, sampling, batch_size, progress, logprobs)

    def complete(self, prompts: list[str], *, max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 repetition_penalty: float = 1.0, seed: int | None = None, batch_size: int = 8,
                 progress: bool = False, stop: str | Sequence[str] | None = None,
                 logprobs: int | None = None) -> list[Generation]:
        """Continue raw text (no chat template, tokenizer's usual bos): for base models. Stops at eos (and `stop`).
        `logprobs` as in `generate`."""
        ids = [encode_text(self.tokenizer, p) for p in prompts]
        sampling = Sampling(temperature, top_p, repetition_penalty, seed)
        return self._run(ids, _with_stop(self._eos_stops(), stop), max_new_tokens, sampling, batch_size, progress,
                         logprobs)

    def _run(self, prompts: list[list[int]], stops: _Stops, max_new_tokens: int, sampling: Sampling,
             batch_size: int, progress: bool, top: int | None) -> list[Generation]:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        _check_logprobs(top)
        kw = self._generate_kwargs(stops, max_new_tokens, sampling)
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)  # longest first: OOM early
        results: list[Generation | None] = [None] * len(prompts)
        t0, tokens = time.monotonic(), 0
        with sampling.rng(), progress_bar(len(prompts), "generating", progress, fields={"tps": ""}) as advance:
            for start in range(0, len(order), batch_size):
                idx = order[start: start + batch_size]
                for i, gen in zip(idx, self._generate_batch([prompts[i] for i in idx], stops, kw, top)):
                    results[i] = gen
                    tokens += gen.completion_tokens
                advance(len(idx), tps=f"{tokens / max(time.monotonic() - t0, 1e-9):.1f} tok/s")
        return results  # type: ignore[return-value]

    def _generate_batch(self, batch: list[list[int]], stops: _Stops, kw: dict, top: int | None) -> list[Generation]:
        width = max(len(p) for p in batch)
        if width == 0:
            raise ConfigError("cannot generate from an empty prompt", hint="give at least one token of text")
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch], device=self.device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=self.device)
        recorder = None if top is None else _Recorder(top)
        watching = recorder.watching(self.model) if recorder else nullcontext()
        with torch.inference_mode(), watching:
            out = self.model.generate(input_ids=input_ids, attention_mask=mask, **kw,
                                      **({"streamer": recorder} if recorder else {}))
        described = [None] * len(batch) if recorder is None else \
            [lambda n, r=r: recorder.describe(r, n, self.tokenizer) for r in range(len(batch))]
        return [self._finish(p, row[width:].tolist(), stops, kw["max_new_tokens"], d)
                for p, row, d in zip(batch, out, described)]

    def _finish(self, prompt: list[int], new: list[int], stops: _Stops, max_new_tokens: int,
                describe: Callable[[int], list[TokenLogprob]] | None = None) -> Generation:
        """The Generation of one row; `describe(n)`: the first n answer tokens with their log-probabilities."""
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
        logprobs = None if describe is None else [t for t in describe(len(kept)) if t.offset < len(text)]
        return Generation(text, "stop" if stopped else "length", len(prompt), n_tokens, logprobs)

    def stream(self, messages: list[dict], *, max_new_tokens: int = 256, temperature: float = 0.0,
               top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
               tools: list[dict] | None = None, stop: str | Sequence[str] | None = None,
               logprobs: int | None = None) -> Generator[str | Piece, None, Generation]:
        """Yield the answer to one conversation piece by piece as it is generated.

        The pieces joined equal `generate([messages])[0].text` for the same settings, and the generator's return
        value (`gen = yield from engine.stream(...)`) is that same Generation, with its finish_reason and token
        counts. Closing the iterator early stops the generation thread at its next token and waits for it to end.
        With `logprobs=n` it yields Pieces instead of strings: each piece's text and the tokens that wrote it (their
        log-probabilities joined equal the Generation's `logprobs`).
        """
        stops, sampling = _with_stop(self._chat_stops(), stop), Sampling(temperature, top_p, repetition_penalty, seed)
        return (yield from self._stream(encode_prompt(self.tokenizer, messages, tools), stops, max_new_tokens,
                                        sampling, logprobs))

    def stream_complete(self, prompt: str, *, max_new_tokens: int = 256, temperature: float = 0.0,
                        top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int | None = None,
                        stop: str | Sequence[str] | None = None,
                        logprobs: int | None = None) -> Generator[str | Piece, None, Generation]:
        """`stream` for raw text: the pieces joined equal `complete([prompt])[0].text`; returns that Generation."""
        stops, sampling = _with_stop(self._eos_stops(), stop), Sampling(temperature, top_p, repetition_penalty, seed)
        return (yield from self._stream(encode_text(self.tokenizer, prompt), stops, max_new_tokens, sampling,
                                        logprobs))

    def _stream(self, prompt: list[int], stops: _Stops, max_new_tokens: int, sampling: Sampling,
                top: int | None) -> Generator[str | Piece, None, Generation]:
        from transformers import TextIteratorStreamer

        _check_logprobs(top)
        kw = self._generate_kwargs(stops, max_new_tokens, sampling)
        ids = torch.tensor([prompt], device=self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        recorder = None if top is None else _Recorder(top, inner=streamer, texts=_TokenTexts(self.tokenizer))
        cancel, failure, output = _Cancel(), [], []

        watching = recorder.watching(self.model) if recorder else nullcontext()

        def work():
            try:
                with torch.inference_mode(), sampling.rng(), watching:
                    output.append(self.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                                      streamer=recorder or streamer, stopping_criteria=[cancel],
                                                      **kw))
            except BaseException as err:  # noqa: BLE001 - handed to the reading thread
                failure.append(err)
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        try:
            pieces = _hold_back_stops(streamer, stops.texts)
            yield from (pieces if recorder is None else _with_tokens(pieces, recorder.tokens))
        except BaseException:  # the reader left (or failed): stop generating at the next token
            cancel.event.set()
            raise
        finally:
            # Reaching a stop text, generate stops on it by itself (every stop text is an eos id or a stop string),
            # so the thread ends where `generate` would and the token counts below match it.
            thread.join()
        if failure:
            raise failure[0]
        described = None if recorder is None else (lambda n: recorder.tokens[:n])
        return self._finish(prompt, output[0][0, len(prompt):].tolist(), stops, max_new_tokens, described)


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


# --- log-probabilities ------------------------------------------------------------------------------------------------


def _check_logprobs(top: int | None) -> None:
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 0):
        raise ConfigError(f"logprobs must be None or a number of alternatives >= 0, got {top!r}")


def _generating_module(model):
    """The module whose forward `generate` calls: a PEFT model hands generation to its base model."""
    base = getattr(model, "get_base_model", None)
    return base() if callable(base) else model


class _Recorder:
    """Records each generated token's log-probability and the `top` most likely tokens while `generate` runs.

    A forward hook keeps the log-softmax of each step's raw next-token logits (what `generate` reads before any
    logits processor, so temperature, top_p and penalties never show in them); `put`, which `generate` calls as its
    streamer with the tokens it then chose, looks those tokens up. `steps[s][row]` is (id, logprob, [(id, logprob)]
    of the top ones). With `texts` (one row: streaming) each token is also described at once into `tokens`, before
    `inner`, the text streamer, gets it: a reader that sees a token's text finds the token already there.
    """

    def __init__(self, top: int, inner=None, texts: _TokenTexts | None = None):
        self.top, self.inner, self.texts = top, inner, texts
        self.steps: list[list[tuple[int, float, list[tuple[int, float]]]]] = []
        self.tokens: list[TokenLogprob] = []
        self._rows: deque = deque()  # log-softmax rows whose tokens are not chosen yet
        self._prompt = True  # generate hands the prompt to its streamer first

    @contextmanager
    def watching(self, model) -> Iterator[_Recorder]:
        handle = _generating_module(model).register_forward_hook(self._hook)
        try:
            yield self
        finally:
            handle.remove()

    def _hook(self, module, args, output) -> None:
        self._rows.append(torch.log_softmax(output.logits[:, -1].float(), dim=-1))

    def put(self, value: torch.Tensor) -> None:
        if self._prompt:
            self._prompt = False
        else:
            self._record(value.view(-1))
        if self.inner is not None:
            self.inner.put(value)

    def end(self) -> None:
        if self.inner is not None:
            self.inner.end()

    def _record(self, chosen: torch.Tensor) -> None:
        rows = self._rows.popleft()
        logprobs = rows.gather(1, chosen.to(rows.device).view(-1, 1)).squeeze(1).tolist()
        top_lp, top_ids = rows.topk(min(self.top, rows.shape[-1]), dim=-1)
        # among equal values (frequent with bf16 logits) the chosen token comes first, as generate's argmax took it
        step = [(t, lp, sorted(zip(ids, lps), key=lambda p, t=t: (-p[1], p[0] != t)))
                for t, lp, ids, lps in zip(chosen.tolist(), logprobs, top_ids.tolist(), top_lp.tolist())]
        self.steps.append(step)
        if self.texts is not None:
            self.tokens.append(self.texts.add(*step[0]))

    def describe(self, row: int, n: int, tokenizer) -> list[TokenLogprob]:
        """The first `n` tokens of batch row `row`, described."""
        texts = _TokenTexts(tokenizer)
        return [texts.add(*step[row]) for step in self.steps[:n]]


def _with_tokens(pieces: Iterator[str], tokens: list[TokenLogprob]) -> Iterator[Piece]:
    """Each text piece with the tokens whose text starts in it (tokens are recorded before their text arrives)."""
    emitted = used = 0
    for text in pieces:
        emitted += len(text)
        end = used
        while end < len(tokens) and tokens[end].offset < emitted:
            end += 1
        yield Piece(text, tokens[used:end])
        used = end


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def _byte_level_chars() -> dict[str, int]:
    """Byte-level BPE's (GPT-2's) character for each byte → that byte: printable ASCII and most of Latin-1 stand for
    themselves, every other byte for the next character from U+0100 on, in byte order."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    others = [b for b in range(256) if b not in printable]
    return {**{chr(b): b for b in printable}, **{chr(256 + i): b for i, b in enumerate(others)}}


class _TokenTexts:
    """Describes answer tokens one after another: the text each adds to the answer, its bytes, where it starts, and
    the same for the alternatives at its position, all decoded after the same few tokens before it."""

    CONTEXT = 6  # tokens decoded before each one: enough for a decoder to see the word a token continues

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.special = set(tokenizer.all_special_ids)
        decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
        self.byte_level = "ByteLevel" in str(decoder)
        self.ids: list[int] = []
        self.offset = 0

    def add(self, token_id: int, logprob: float, top: list[tuple[int, float]]) -> TokenLogprob:
        context = self.ids[-self.CONTEXT:]
        before = self._decode(context)
        chosen, after = self._describe(context, before, token_id, logprob)
        entry = TokenLogprob(token_id, chosen.token, chosen.bytes, logprob, self.offset,
                             [self._describe(context, before, i, lp)[0] for i, lp in top])
        self.ids.append(token_id)
        # the characters the answer gains for good: a partial character (U+FFFD at the end) is not written yet
        self.offset += len(after.rstrip("\ufffd")) - len(before.rstrip("\ufffd"))
        return entry

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True) if ids else ""

    def _describe(self, context: list[int], before: str, token_id: int, logprob: float) -> tuple[TopToken, str]:
        after = self._decode([*context, token_id])
        if token_id in self.special:
            text = self.tokenizer.convert_ids_to_tokens(token_id)
            raw = None
        elif after.startswith(before) and not before.endswith("\ufffd") and not after.endswith("\ufffd"):
            text, raw = after[len(before):], None
        else:  # part of a character spread over several tokens
            text, raw = self._decode([token_id]), self._raw_bytes(token_id)
        return TopToken(token_id, text, raw if raw is not None else list(text.encode("utf-8")), logprob), after

    def _raw_bytes(self, token_id: int) -> list[int] | None:
        """The bytes a token stands for, where its vocabulary says: a byte-fallback piece (<0xE6>) or a byte-level
        BPE piece ('Ġæ'); None for other tokenizers."""
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if not isinstance(piece, str):
            return None
        if match := _BYTE_PIECE.fullmatch(piece):
            return [int(match.group(1), 16)]
        chars = _byte_level_chars()
        if self.byte_level and all(c in chars for c in piece):
            return [chars[c] for c in piece]
        return None
