#!/usr/bin/env python
"""Check exported GGUF files in llama.cpp itself (llama-cpp-python), against the merged Hugging Face model.

`tuneforge export --format gguf` verifies its files by reading them back through transformers. This script asks
the runtime people actually use: for each prompt it compares llama.cpp's tokenization with the tokenizer's, the
last position's logits (max |Δlogit|, top-1) and a 20-token greedy continuation with transformers on the merged
folder. llama-cpp-python is not a tuneforge dependency (it compiles llama.cpp): give the Python of a venv that has
it with --llama-python, e.g.

    python -m venv /tmp/llvenv && /tmp/llvenv/bin/pip install llama-cpp-python numpy
    python bench/gguf_llamacpp.py --merged OUT/merged --gguf OUT/OUT-f16.gguf --gguf OUT/OUT-q8_0.gguf \
        --llama-python /tmp/llvenv/bin/python
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPTS = ["Once upon a time, there was a little girl", "The capital of France is"]
CHAT = [{"role": "user", "content": "What is the capital of France?"}]

_LLAMA_SIDE = r'''
import json, sys
import numpy as np
from llama_cpp import Llama
gguf, ref = sys.argv[1], json.load(open(sys.argv[2]))
llm = Llama(model_path=gguf, n_ctx=512, logits_all=True, verbose=False)
for r in ref:
    ids = llm.tokenize(r["prompt"].encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(r["ids"])
    got, want = np.array(llm.scores[len(r["ids"]) - 1]), np.array(r["last_logits"])
    gen = []
    for t in llm.generate(r["ids"], temp=0.0, top_k=1, reset=True):
        gen.append(t)
        if len(gen) == len(r["greedy"]):
            break
    print(json.dumps({"same_tokens": ids == r["ids"], "max_dlogit": float(np.abs(got - want).max()),
                      "top1_same": int(got.argmax()) == int(want.argmax()), "greedy_same": gen == r["greedy"],
                      "tokens": len(gen)}))
'''


def reference(merged: str, max_new_tokens: int) -> list[dict]:
    """Prompts (plain, and one chat turn when the model has a template) with transformers' logits and greedy ids."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged)
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    prompts = list(PROMPTS)
    if tok.chat_template:
        prompts.append(tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True))
    out = []
    for prompt in prompts:
        ids = tok(prompt, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
            gen = model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)[0, len(ids):].tolist()
        out.append({"prompt": prompt, "ids": ids, "last_logits": logits.tolist(), "greedy": gen})
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--merged", required=True, help="the export's merged/ folder")
    p.add_argument("--gguf", action="append", required=True, help="a GGUF file (repeat)")
    p.add_argument("--llama-python", required=True, help="a Python with llama-cpp-python installed")
    p.add_argument("--max-new-tokens", type=int, default=20)
    a = p.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref.json"
        ref.write_text(json.dumps(reference(a.merged, a.max_new_tokens)))
        script = Path(tmp) / "llama_side.py"
        script.write_text(_LLAMA_SIDE)
        for gguf in a.gguf:
            run = subprocess.run([a.llama_python, str(script), gguf, str(ref)], capture_output=True, text=True)
            rows = [json.loads(x) for x in run.stdout.splitlines() if x.startswith("{")]
            results[gguf] = {"returncode": run.returncode, "prompts": rows}
            print(gguf, "exit", run.returncode)
            for row in rows:
                print("  ", row)
    return results


if __name__ == "__main__":
    sys.exit(0 if all(r["returncode"] == 0 for r in main().values()) else 1)
