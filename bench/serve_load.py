#!/usr/bin/env python
"""Serving load benchmark: `tuneforge serve` under N concurrent streaming chat requests vs in-process `Engine`.

The server runs as its own process (`tuneforge serve` on a free loopback port, as it is deployed; `--server thread`
starts it inside this process instead, where the clients' threads share its interpreter lock) and is called with the
official `openai` client from N threads at once; every request streams (`stream_options.
include_usage`), greedy, with the same `max_tokens`, over a handful of short prompts. The reference is the same
generations through `tuneforge.infer.engine.Engine.generate`, one request after another: the server serializes
generation per model (no batching), so sequential in-process generation is what it can at best reach.

Per concurrency level N it reports the throughput ratio (server completion tokens/s over in-process tokens/s),
p50/p95 request latency and time to first token (the first content chunk) as the clients saw them, and checks that
every server answer equals the in-process one for that prompt.

    python bench/serve_load.py                                   # SmolLM2, N = 1,4,16, 16 requests per level
    python bench/serve_load.py --concurrency 1,2 --max-tokens 8 --requests-per-level 4 --model PATH --template chatml
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Give me three tips for better sleep."}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Why is the sky blue?"}],
    [{"role": "user", "content": "Write a haiku about the sea."}],
    [{"role": "user", "content": "Explain what a neural network is in one sentence."}],
    [{"role": "user", "content": "How do I boil an egg?"}],
]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: with 16 samples p95 is the largest but one)."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * len(ordered)) - 1))]


def start_server(model: str, template: str, device: str):
    """uvicorn on 127.0.0.1:0 in a daemon thread; returns (base_url, a stopper)."""
    import uvicorn

    from tuneforge.serve.app import create_app
    from tuneforge.serve.settings import ServeSettings

    settings = ServeSettings(model=model, name="bench", template=template, runs_dir=None, device=device, jobs=False)
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not srv.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.05)
    port = srv.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/v1", lambda: setattr(srv, "should_exit", True)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server_process(model: str, template: str, device: str):
    """`tuneforge serve` in its own process; returns (base_url, a stopper)."""
    import subprocess
    import sys
    import urllib.request

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "serve", "--model", model, "--name", "bench",
                             "--template", template, "--device", device, "--port", str(port), "--runs", "",
                             "--no-jobs", "--log-level", "warning"])
    deadline = time.monotonic() + 300
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise SystemExit("the server did not start")
            time.sleep(0.2)
    return f"http://127.0.0.1:{port}/v1", proc.terminate


def stream_one(client, messages: list[dict], max_tokens: int) -> dict:
    """One streamed greedy chat request: its text, completion tokens, latency and time to first content."""
    t0 = time.perf_counter()
    text, ttft, tokens = "", None, None
    for chunk in client.chat.completions.create(model="bench", messages=messages, stream=True, temperature=0,
                                                max_tokens=max_tokens, stream_options={"include_usage": True}):
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
        for c in chunk.choices:
            if c.delta.content:
                ttft = ttft if ttft is not None else time.perf_counter() - t0
                text += c.delta.content
    return {"text": text, "tokens": tokens, "latency_s": time.perf_counter() - t0, "ttft_s": ttft}


def run_server_level(client, n: int, requests: int, max_tokens: int) -> dict:
    """`requests` requests, at most n in flight at once (a pool of n client threads)."""
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(lambda i: stream_one(client, PROMPTS[i % len(PROMPTS)], max_tokens),
                                range(requests)))
    return {"wall_s": time.perf_counter() - t0, "requests": results}


def run_in_process(engine, requests: int, max_tokens: int) -> dict:
    """The same requests through Engine.generate, one after another."""
    results = []
    t0 = time.perf_counter()
    for i in range(requests):
        t = time.perf_counter()
        g = engine.generate([PROMPTS[i % len(PROMPTS)]], max_new_tokens=max_tokens, batch_size=1)[0]
        results.append({"text": g.text, "tokens": g.completion_tokens, "latency_s": time.perf_counter() - t})
    return {"wall_s": time.perf_counter() - t0, "requests": results}


def summarize(server: dict, local: dict, n: int) -> dict:
    srv, loc = server["requests"], local["requests"]
    srv_tps = sum(r["tokens"] or 0 for r in srv) / server["wall_s"]
    loc_tps = sum(r["tokens"] for r in loc) / local["wall_s"]
    mismatches = [i for i, (a, b) in enumerate(zip(srv, loc)) if a["text"] != b["text"]]
    lat = [r["latency_s"] for r in srv]
    ttft = [r["ttft_s"] for r in srv if r["ttft_s"] is not None]
    return {
        "concurrency": n, "requests": len(srv),
        "server_tokens_per_s": srv_tps, "in_process_tokens_per_s": loc_tps, "throughput_ratio": srv_tps / loc_tps,
        "latency_p50_s": percentile(lat, 50), "latency_p95_s": percentile(lat, 95),
        "ttft_p50_s": percentile(ttft, 50) if ttft else None, "ttft_p95_s": percentile(ttft, 95) if ttft else None,
        "in_process_latency_p50_s": percentile([r["latency_s"] for r in loc], 50),
        "server_wall_s": server["wall_s"], "in_process_wall_s": local["wall_s"],
        "texts_match": not mismatches, "mismatched_requests": mismatches,
        "server": srv, "in_process": loc,
    }


def print_table(levels: list[dict]) -> None:
    rows = [("N", "reqs", "server tok/s", "in-proc tok/s", "ratio", "lat p50", "lat p95", "TTFT p50", "TTFT p95",
             "texts")]
    for s in levels:
        rows.append((str(s["concurrency"]), str(s["requests"]), f"{s['server_tokens_per_s']:.1f}",
                     f"{s['in_process_tokens_per_s']:.1f}", f"{s['throughput_ratio']:.2f}",
                     f"{s['latency_p50_s']:.2f}s", f"{s['latency_p95_s']:.2f}s", f"{s['ttft_p50_s']:.2f}s",
                     f"{s['ttft_p95_s']:.2f}s", "equal" if s["texts_match"] else f"DIFFER {s['mismatched_requests']}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("\nin-process = Engine.generate one request after another (the server serializes generation per model)")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("--template", default="auto", help="chat template (the 656K test model needs chatml)")
    p.add_argument("--device", default="auto")
    p.add_argument("--concurrency", default="1,4,16", help="comma-separated concurrency levels")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--requests-per-level", type=int, default=16, help="at least N are sent at level N")
    p.add_argument("--out", default="bench/serve_load.json")
    p.add_argument("--server", choices=("process", "thread"), default="process",
                   help="run the server as its own process (as deployed), or in a thread of this one")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    a = parse_args(argv)
    levels = [int(x) for x in a.concurrency.split(",") if x.strip()]
    from openai import OpenAI

    from tuneforge.infer.engine import Engine

    t_start = time.perf_counter()
    start = start_server_process if a.server == "process" else start_server
    url, stop = start(a.model, a.template, a.device)
    engine = Engine.load(a.model, template=a.template, device=a.device)
    client = OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    stream_one(client, PROMPTS[0], a.max_tokens)  # untimed warm-up of both paths
    engine.generate([PROMPTS[0]], max_new_tokens=a.max_tokens, batch_size=1)
    summaries = []
    try:
        for n in levels:
            requests = max(a.requests_per_level, n)
            local = run_in_process(engine, requests, a.max_tokens)
            server = run_server_level(client, n, requests, a.max_tokens)
            summaries.append(summarize(server, local, n))
            print(f"[bench] N={n}: done", flush=True)
    finally:
        stop()
    import torch

    result = {
        "benchmark": "serve_load",
        "config": {"model": a.model, "template": a.template, "device": str(engine.device), "max_tokens": a.max_tokens,
                   "concurrency": levels, "requests_per_level": a.requests_per_level, "prompts": len(PROMPTS),
                   "torch_threads": torch.get_num_threads(), "greedy": True, "stream": True,
                   "in_process": "Engine.generate, sequential, batch_size=1", "server": a.server},
        "levels": summaries,
        "all_texts_match": all(s["texts_match"] for s in summaries),
        "wall_s": time.perf_counter() - t_start,
        "host": {"cpus": os.cpu_count(), "loadavg_end": os.getloadavg() if hasattr(os, "getloadavg") else None},
    }
    print_table(summaries)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"[bench] wrote {out} ({result['wall_s']:.0f}s)")
    return result


if __name__ == "__main__":
    main()
