"""Load test of ``pretty-align serve`` (issue 15.3): N chat requests at concurrency C through the
official openai client, against a real server on 127.0.0.1.

    python benchmarks/serve_load.py --requests 200 --concurrency 16 [--config configs/serve.toml]
    python benchmarks/serve_load.py --url http://127.0.0.1:8000/v1      # a server already running

Without ``--url`` it starts ``pretty-align serve CONFIG`` itself (a subprocess; its load time is
printed apart) and stops it afterwards. Requests are FLORES devtest English sentences, cycling over
the served models and the config's targets; ``--stream`` streams every second request. Printed:
errors (must be 0), p50/p95/max latency, requests/s and completion tokens/s over the whole run.
Run it on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def wait_for(url: str, seconds: float = 300) -> None:
    import httpx

    end = time.time() + seconds
    while time.time() < end:
        try:
            if httpx.get(url + "/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    sys.exit(f"no server answered at {url} within {seconds:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--config", default=str(ROOT / "configs" / "serve.toml"))
    ap.add_argument("--url", help="an already running server's /v1 URL (default: start one)")
    ap.add_argument("--port", type=int, default=8791)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--stream", action="store_true", help="stream every second request")
    args = ap.parse_args()

    import openai

    data = Path(os.environ.get("PRETTY_DATA", ROOT.parent / "shared" / "data"))
    sentences = (data / "flores200" / "devtest" / "eng_Latn.devtest").read_text(encoding="utf-8").splitlines()
    server = None
    url = args.url
    started = time.perf_counter()
    if url is None:
        url = f"http://127.0.0.1:{args.port}/v1"
        server = subprocess.Popen([sys.executable, "-m", "pretty_align.cli", "serve", args.config, "--port",
                                   str(args.port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(url)
        load_s = time.perf_counter() - started
        client = openai.OpenAI(base_url=url, api_key=os.environ.get("PRETTY_API_KEY", "unused"), max_retries=0,
                               timeout=600)
        models = [m.id for m in client.models.list()]
        from pretty_align.serve import load_serve_config

        targets = load_serve_config(args.config)[1].targets

        def one(i: int) -> tuple[float, int, str | None]:
            t0 = time.perf_counter()
            try:
                kwargs = dict(model=models[i % len(models)], max_tokens=args.max_tokens,
                              messages=[{"role": "user", "content": sentences[i % len(sentences)]}],
                              extra_body={"target_lang": targets[i % len(targets)]})
                if args.stream and i % 2:
                    text = "".join(c.choices[0].delta.content or "" for c in
                                   client.chat.completions.create(stream=True, **kwargs))
                    tokens = len(text.split())   # a streamed reply carries no usage: words, for the count only
                else:
                    tokens = client.chat.completions.create(**kwargs).usage.completion_tokens
                return time.perf_counter() - t0, tokens, None
            except Exception as e:   # counted, never fatal: the point is whether the server holds
                return time.perf_counter() - t0, 0, f"{type(e).__name__}: {e}"

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            results = list(pool.map(one, range(args.requests)))
        wall = time.perf_counter() - t0
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    lat = sorted(r[0] for r in results)
    errors = [r[2] for r in results if r[2]]
    q = statistics.quantiles(lat, n=100)
    out = {"requests": args.requests, "concurrency": args.concurrency, "models": models, "errors": len(errors),
           "p50_s": round(q[49], 2), "p95_s": round(q[94], 2), "max_s": round(lat[-1], 2), "wall_s": round(wall, 1),
           "requests_per_s": round(args.requests / wall, 2),
           "completion_tokens_per_s": round(sum(r[1] for r in results) / wall, 1),
           "server_start_s": round(load_s, 1) if server is not None else None, "stream": args.stream}
    print(f"{args.requests} requests at concurrency {args.concurrency}: {len(errors)} errors; latency p50 "
          f"{out['p50_s']} s, p95 {out['p95_s']} s, max {out['max_s']} s; {out['requests_per_s']} requests/s, "
          f"{out['completion_tokens_per_s']} completion tokens/s")
    for e in errors[:5]:
        print("error:", e)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
