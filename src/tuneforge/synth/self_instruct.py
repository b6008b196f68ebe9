"""Self-instruct (Wang et al., 2023): new training rows from a few seed examples and a generator model.

Each request shows the generator `shots` seed examples drawn at random, as earlier turns of a conversation that asks
for one new instruction, or, when the seeds share a task (`seeds.common_task`: a fixed instruction with a varying
input), one new input for that task; the last turn asks again.
Then the answer:
- input-first (the default): the generator answers the new prompt. For a task it first sees `answer_shots` seed
  exchanges as earlier turns, so its answer takes their form; an open task is asked alone.
- output-first (the paper's choice for classification, and the default for labelled seeds under one task): a label
  is chosen first (the one with the fewest rows so far; no label gets more than its share of `n`, so labels stay
  balanced), the seeds shown are examples of it, the generator writes an input for it, and the label is the answer.
Each candidate passes `synth.filters` (instruction, then ROUGE-L against the seeds, the kept rows and the test
prompts, then answer); kept rows join the near-copy index at once. Rounds go on until `n` rows are kept, `max_tries`
candidates were generated, or Ctrl-C; what was kept is written either way.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tuneforge.synth.filters import (NearCopyIndex, answer_problem, clean_answer, first_instruction,
                                     instruction_problem)
from tuneforge.synth.report import SynthReport, Tally
from tuneforge.synth.rows import make_row, origin
from tuneforge.synth.seeds import Seed, SeedSet
from tuneforge.utils.errors import ConfigError
from tuneforge.utils.progress import progress_bar


@dataclass(frozen=True)
class SelfInstructOptions:
    n: int = 100
    shots: int = 6  # seed examples shown per instruction request (the paper shows 8: 6 seeds, 2 generated)
    answer_shots: int = 2  # seed exchanges shown before a task's new input is answered (input-first)
    temperature: float = 0.7  # instructions are sampled (the paper: 0.7) ...
    answer_temperature: float = 0.0  # ... answers are greedy by default
    seed: int = 0
    max_instruction_tokens: int = 128
    max_answer_tokens: int = 256
    round_size: int = 16  # candidates generated together
    max_tries: int | None = None  # candidates at most (default 5n + 20)
    output_first: bool | None = None  # None: output-first for labelled seeds with a task
    format: str = "alpaca"

    @property
    def tries(self) -> int:
        return self.max_tries if self.max_tries is not None else 5 * self.n + 20


@dataclass
class _Candidate:
    shown: list[Seed]
    label: str | None
    part: str = ""
    demos: list[Seed] = field(default_factory=list)
    answer: str = ""


def resolve_output_first(seeds: SeedSet, requested: bool | None) -> bool:
    if requested and not seeds.labels:
        raise ConfigError("--output-first needs classification seeds: every seed answer one of a few labels",
                          hint="give the labels with --labels, or use --input-first")
    return bool(seeds.labels and seeds.task) if requested is None else requested


def prompt_of(seeds: SeedSet, part: str) -> str:
    """The user turn of a row with this generated part."""
    return f"{seeds.task}\n{part}" if seeds.task else part


def instruction_request(seeds: SeedSet, shown: list[Seed], label: str | None) -> list[dict]:
    """The conversation asking for one new instruction (or one new input of the seeds' task).

    The seeds shown are earlier turns: the same request, answered with a seed. Small chat models follow a pattern
    of turns far better than a list inside one message (SmolLM2-135M, 6 sentiment_en seeds shown: 16 of 19
    candidates kept as turns; 8 of 28 as a list, where it mostly echoed "Output: 1" or chatted)."""
    what = "input" if seeds.task else "task"
    answered = f' whose correct answer is "{label}"' if label is not None else ""
    head = f"Task: {seeds.task}\n\n" if seeds.task else ""
    ask = (f"Write one new {what}{' for this task' if seeds.task else ' for an AI assistant'}{answered}, "
           f"different from the ones before. Reply with the new {what} only.")
    turns = [m for s in shown for m in ({"role": "user", "content": ask}, {"role": "assistant", "content": s.part})]
    turns.append({"role": "user", "content": ask})
    turns[0] = {"role": "user", "content": head + turns[0]["content"]}
    return turns


def answer_request(seeds: SeedSet, cand: _Candidate) -> list[dict]:
    """The conversation the generator answers: a task's demonstrations as earlier turns, then the new prompt."""
    system = [{"role": "system", "content": seeds.system}] if seeds.system else []
    demos = [m for s in cand.demos for m in ({"role": "user", "content": s.prompt},
                                              {"role": "assistant", "content": s.answer})]
    return system + demos + [{"role": "user", "content": prompt_of(seeds, cand.part)}]


class SelfInstruct:
    """One self-instruct run over `seeds` with `generator`; `run()` returns the kept rows."""

    def __init__(self, seeds: SeedSet, generator, opts: SelfInstructOptions, test_parts: list[str] = ()):
        self.seeds, self.generator, self.opts = seeds, generator, opts
        self.output_first = resolve_output_first(seeds, opts.output_first)
        self.rng = random.Random(opts.seed)
        # the task's own text too: a generator that echoes the instruction wrote no new input
        self.index = NearCopyIndex([s.part for s in seeds.seeds] + ([seeds.task] if seeds.task else []))
        self.test_index = NearCopyIndex(test_parts)
        self.tally, self.rows, self.labels = Tally(), [], Counter()
        self.stopped, self.round = "target reached", 0

    # --- planning -----------------------------------------------------------------------------------------------

    def _label(self, planned: Counter) -> str | None:
        if not self.output_first:
            return None
        used = {label: self.labels[label] + planned[label] for label in self.seeds.labels}
        fewest = min(used.values())
        return self.rng.choice([label for label, n in used.items() if n == fewest])

    def _sample(self, pool: list[Seed], k: int) -> list[Seed]:
        return self.rng.sample(pool, min(k, len(pool)))

    def _plan(self, size: int) -> list[_Candidate]:
        planned, out = Counter(), []
        for _ in range(size):
            label = self._label(planned)
            planned[label] += 1
            pool = self.seeds.with_label(label) if label is not None else self.seeds.seeds
            demos = [] if self.output_first or not self.seeds.task else self._sample(self.seeds.seeds,
                                                                                   self.opts.answer_shots)
            out.append(_Candidate(self._sample(pool, self.opts.shots), label, demos=demos))
        return out

    def _round_size(self) -> int:
        need = self.opts.n - len(self.rows)
        rate = self.tally.kept / self.tally.generated if self.tally.generated else 1.0
        size = math.ceil(need / max(rate, 0.1))
        return max(1, min(size, self.opts.round_size, self.opts.tries - self.tally.generated))

    # --- one round ----------------------------------------------------------------------------------------------

    def _seed_of_round(self) -> int:
        return self.opts.seed * 100_003 + self.round

    def _instructions(self, cands: list[_Candidate]) -> list[_Candidate]:
        """Generate the instructions; the candidates whose instruction passed its filters."""
        drafts = self.generator.generate([instruction_request(self.seeds, c.shown, c.label) for c in cands],
                                         max_tokens=self.opts.max_instruction_tokens,
                                         temperature=self.opts.temperature, seed=self._seed_of_round())
        passed = []
        for cand, draft in zip(cands, drafts):
            self.tally.generated += 1
            if draft.finish_reason == "error":
                self.tally.drop("request_failed", "", draft.error)
                continue
            cand.part, ended = first_instruction(draft.text, one_line=self.seeds.one_line)
            why = instruction_problem(cand.part, draft.cut and not ended, open_task=self.seeds.task is None)
            if why is None and (hit := self.index.near_copy(cand.part)):
                why, detail = "near_copy", f"ROUGE-L {hit[0]:.2f} with: {hit[1][:60]}"
            elif why is None and (hit := self.test_index.near_copy(cand.part)):
                why, detail = "near_test_row", f"ROUGE-L {hit[0]:.2f} with: {hit[1][:60]}"
            else:
                detail = None
            if why:
                self.tally.drop(why, cand.part or draft.text, detail)
            else:
                passed.append(cand)
        return passed

    def _answers(self, cands: list[_Candidate]) -> list[_Candidate]:
        """Answer the candidates (the label, output-first); those whose answer passed its filters."""
        if self.output_first or not cands:
            for cand in cands:
                cand.answer = cand.label
            return cands
        drafts = self.generator.generate([answer_request(self.seeds, c) for c in cands],
                                         max_tokens=self.opts.max_answer_tokens,
                                         temperature=self.opts.answer_temperature, seed=self._seed_of_round())
        passed = []
        for cand, draft in zip(cands, drafts):
            cand.answer = clean_answer(draft.text)
            why = "request_failed" if draft.finish_reason == "error" else \
                answer_problem(cand.answer, draft.cut, self.seeds.answer_format)
            if why:
                self.tally.drop(why, f"{cand.part} → {cand.answer or draft.text}", draft.error)
            else:
                passed.append(cand)
        return passed

    def _keep(self, cand: _Candidate) -> bool:
        if len(self.rows) >= self.opts.n:  # the round was sized by the keep rate so far, and did better
            self.tally.drop("not_needed", cand.part)
            return False
        if self.output_first and self.labels[cand.label] >= math.ceil(self.opts.n / len(self.seeds.labels)):
            self.tally.drop("not_needed", cand.part, f"label {cand.label!r} has its share of the rows")
            return False
        if (hit := self.index.near_copy(cand.part)) is not None:  # a row kept earlier in this round
            self.tally.drop("near_copy", cand.part, f"ROUGE-L {hit[0]:.2f} with: {hit[1][:60]}")
            return False
        task = self.seeds.task
        source = origin("self-instruct", self.generator.name, seed_rows=[s.id for s in cand.shown + cand.demos])
        self.rows.append(make_row(self.opts.format, instruction=task or cand.part, task_input=cand.part if task else "",
                                  answer=cand.answer, system=self.seeds.system, source=source))
        self.index.add(cand.part)
        self.labels[cand.answer.strip()] += 1
        self.tally.kept += 1
        return True

    def _round(self) -> int:
        """One round of candidates; how many rows it kept."""
        passed = self._instructions(self._plan(self._round_size()))
        kept = sum(self._keep(c) for c in self._answers(passed))
        self.round += 1
        if self.tally.kept == 0 and self.tally.dropped["request_failed"] == self.tally.generated:
            why = (self.tally.examples.get("request_failed") or ["?"])[0]
            raise ConfigError(f"every request to the generator {self.generator.name} failed: {why}",
                              hint="check --endpoint, --model-name and --api-key-env, and that the server is up")
        return kept

    def run(self, progress: bool = True) -> list[dict]:
        with progress_bar(self.opts.n, "self-instruct", progress, fields={"tried": ""}) as advance:
            try:
                while len(self.rows) < self.opts.n:
                    if self.tally.generated >= self.opts.tries:
                        self.stopped = "max tries"
                        break
                    advance(self._round(), tried=f"{self.tally.generated} tried")
            except KeyboardInterrupt:
                self.stopped = "interrupted"
        return self.rows


def heldout_parts(path: str, seeds: SeedSet) -> list[str]:
    """The prompts of a test file as the near-copy filter compares them: without the seeds' task lines."""
    from tuneforge.data.catalog import dataset_spec, load_dataset

    parts = []
    for rec in load_dataset(dataset_spec(path=path), on_error="skip").records:
        users = [m["content"] for m in rec.messages if m["role"] == "user"]
        if users:
            text = users[-1]
            parts.append(text[len(seeds.task) + 1:] if seeds.task and text.startswith(seeds.task + "\n") else text)
    return parts


def synthesize(seed_path: str, out: str | Path, generator_args: dict, opts: SelfInstructOptions, *,
               seed_format: str = "auto", labels: tuple[str, ...] | None = None, test: str | None = None,
               report_dir: str | Path | None = None, progress: bool = True) -> SynthReport:
    """`tuneforge data synth self-instruct`: check the paths, read the seeds (and test prompts), load the generator,
    generate, write the rows and the report (with the dataset doctor's findings)."""
    from tuneforge.synth.generators import build_generator
    from tuneforge.synth.report import write_result
    from tuneforge.synth.rows import check_format, refuse_existing, report_folder
    from tuneforge.synth.seeds import load_seeds

    out, folder = Path(out).expanduser(), report_folder(out, report_dir)
    refuse_existing(out, folder)
    check_format(opts.format)
    seeds = load_seeds(seed_path, fmt=seed_format, labels=labels)
    output_first = resolve_output_first(seeds, opts.output_first)
    parts = heldout_parts(test, seeds) if test else []
    generator = build_generator(**generator_args)
    if generator is None:
        raise ConfigError("self-instruct needs a generator: --model NAME (local) or --endpoint URL --model-name NAME")
    started = time.monotonic()
    run = SelfInstruct(seeds, generator, opts, parts)
    rows = run.run(progress)
    settings = {**asdict(opts), "tries": opts.tries, "output_first": output_first, "task": seeds.task,
                "answer_format": seeds.answer_format.describe(), "seeds": len(seeds.seeds),
                "seed_rows_skipped": seeds.skipped, "seed_file": seed_path, "test": test}
    return write_result(rows, run.tally, method="self-instruct", out=out, folder=folder, generator=generator.name,
                        requested=opts.n, stopped=run.stopped, seconds=time.monotonic() - started,
                        settings=settings, test=test)
