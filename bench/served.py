"""Served throughput under load: wrk against a real gateway + text service, next to the engine alone.

`python bench/run.py served`. At each concurrency level N, for unary and streaming POST /generate
(32 sampled tokens, temperature 0.8), it reports delivered tokens/s (from each reply's
usage.completion_tokens), requests/s, p50/p99 latency, errors, time to first token (a small
httpx client with N concurrent streams: wrk cannot see the first event) and the ratio to the
in-process engine kept saturated with N requests at the service's batch size, measured right
before and right after each served window (the mean of the two; the machine's speed drifts), with
the service's settings and with the engine's fastest settings alone (BENCH_THREADS threads that
spin), the faster of the two being the reference.
Requests cycle
through seeds the engine alone found to run all 32 tokens before an end-of-text (the gateway has
no ignore_eos), and the CPU cores each process used are reported beside them.

  BENCH_SERVED_SECONDS            seconds per measurement (default 10)
  BENCH_SERVED_LEVELS             concurrency levels, comma-separated (default 8,32,128)
  OMNIFORGE_TEXT_MAX_BATCH_SIZE   the service's batch size, used by the engine alone as well
                                  (default: the service's own default)
  BENCH_THREADS                   onnxruntime threads of the engine alone (default 2), and of the
                                  service unless OMNIFORGE_TEXT_THREADS sets its own

Needs `wrk` (`apt-get install -y wrk`).
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRK_SCRIPT = ROOT / "bench" / "wrk_generate.lua"
PROMPT = "The first"          # short, and most seeds run it to max_tokens before an end-of-text
NEW_TOKENS = 32
TEMPERATURE = 0.8
SEEDS = 256                   # requests cycle through this many seeds that reach NEW_TOKENS
GOAL_RATIO, GOAL_LEVELS = 0.8, (8, 32)


def bench_served() -> dict:
    # imported here, not at the top: run.py imports this module to register it
    from run import THREADS, _percentiles, starter_bundle
    from omniforge_shared.settings import load_settings
    from omniforge_text.settings import TextServiceSettings

    if shutil.which("wrk") is None:
        msg = "wrk is not installed: run `apt-get install -y wrk` (Debian package wrk), then retry"
        print(f"served: skipped, {msg}", file=sys.stderr)
        return {"skipped": msg}
    seconds = int(os.environ.get("BENCH_SERVED_SECONDS", "10"))
    levels = [int(n) for n in os.environ.get("BENCH_SERVED_LEVELS", "8,32,128").split(",")]
    # the batch size the service will use: OMNIFORGE_TEXT_MAX_BATCH_SIZE or its default
    max_batch = load_settings(TextServiceSettings).max_batch_size
    bundle_dir = starter_bundle()

    # 1. the engine alone finds the seeds; it is measured again right before and right after
    # each served window (the service idle meanwhile), since this machine's speed drifts. Its
    # threads spin when that is faster alone: the reference is the better of the two
    service_threads = int(os.environ.get("OMNIFORGE_TEXT_THREADS", THREADS))
    service = load_settings(TextServiceSettings)
    alones = [EngineAlone(bundle_dir, max_batch, service_threads)]
    if (service_threads, service.spin_wait) != (THREADS, True):
        alones.append(EngineAlone(bundle_dir, max_batch, THREADS, spin_wait=True))
    seeds = asyncio.run(alones[0].find_seeds())
    for alone in alones[1:]:
        alone.seeds = seeds
    # 2. the served path, gateway -> gRPC -> text service, as processes
    try:
        served = _served(bundle_dir, levels, seconds, max_batch, service_threads, seeds, _percentiles, alones)
    finally:
        for alone in alones:
            alone.engine.stop()

    rows = {}
    for n in levels:
        for mode in ("unary", "stream"):
            row = {"concurrency": n, "mode": mode, **served[(n, mode)]}
            row["ratio"] = round(row["delivered_tokens_per_s"] / row["engine_tokens_per_s"], 2)
            if n in GOAL_LEVELS:
                errors = row["errors"] + row.get("ttft_errors", 0)
                row["goal_met"] = row["ratio"] >= GOAL_RATIO and errors == 0
            rows[f"c{n}_{mode}"] = row
    judged = [r["goal_met"] for r in rows.values() if "goal_met" in r]
    _print_table(rows, max_batch)
    return {"model": "text-starter (fp32 ONNX)", "prompt": PROMPT, "max_tokens": NEW_TOKENS,
            "temperature": TEMPERATURE, "seconds": seconds, "max_batch_size": max_batch,
            "service_threads": service_threads, "service_spin_wait": service.spin_wait,
            "engine_alone_threads": THREADS, "wrk_threads": 1, **rows,
            "goal": {"ratio": GOAL_RATIO, "levels": list(GOAL_LEVELS), "errors": 0,
                     "met": all(judged) if judged else None}}


# ---- the engine alone --------------------------------------------------------------------------

class _Pool:
    """What the text service's engine factory reads of its pool."""
    def __init__(self, settings) -> None:
        self.settings, self.registry = settings, None


class EngineAlone:
    """The text engine in this process, over the same bundle, batch size and threads as the service."""

    def __init__(self, bundle_dir: Path, max_batch: int, threads: int, **overrides) -> None:
        from omniforge_shared.bundle import load_bundle
        from omniforge_shared.settings import load_settings
        from omniforge_text.server import load_engine
        from omniforge_text.settings import TextServiceSettings

        # built as the service builds it: the same settings (OMNIFORGE_TEXT_*), the same factory;
        # `overrides` change some (the engine's fastest configuration need not be the service's)
        settings = load_settings(TextServiceSettings, threads=threads, max_batch_size=max_batch, **overrides)
        self.name = ", ".join([f"threads={threads}"] + [f"{k}={v}" for k, v in overrides.items()])
        self.max_batch = max_batch
        self.engine = load_engine(load_bundle(bundle_dir), _Pool(settings))
        self.seeds: list[int] = []

    async def completion_tokens(self, seed: int) -> int:
        """One request as the service's unary Generate runs it (the engine's fastest mode)."""
        from omniforge_text.sampling import SamplingParams

        params = SamplingParams(max_tokens=NEW_TOKENS, temperature=TEMPERATURE, seed=seed)
        last = None
        async for last in self.engine.generate(PROMPT, params, stream=False):
            pass
        return last.completion_tokens

    async def find_seeds(self) -> list[int]:
        """Seeds that run to NEW_TOKENS without an end-of-text (the gateway has no ignore_eos);
        this also warms the engine up."""
        tried = 0
        while len(self.seeds) < SEEDS:
            if tried > 20 * SEEDS:
                raise RuntimeError(f"too few seeds reach {NEW_TOKENS} tokens for {PROMPT!r}; choose another prompt")
            batch = range(tried, tried + self.max_batch)
            counts = await asyncio.gather(*[self.completion_tokens(s) for s in batch])
            self.seeds += [s for s, c in zip(batch, counts) if c == NEW_TOKENS]
            tried += self.max_batch
        self.seeds = self.seeds[:SEEDS]
        return self.seeds

    async def rate(self, n: int, seconds: int) -> tuple[float, float]:
        """tokens/s with N requests in flight (each finished one replaced at once) for `seconds`,
        and the CPU cores this process used meanwhile."""
        stop_at, cpu = time.perf_counter() + seconds, time.process_time()
        done = [0]

        async def worker(k: int) -> None:
            turn = k
            while True:
                tokens = await self.completion_tokens(self.seeds[turn % len(self.seeds)])
                if time.perf_counter() > stop_at:
                    return            # finished after the window: not counted, as with wrk
                done[0] += tokens
                turn += n

        await asyncio.gather(*[worker(k) for k in range(n)])
        return done[0] / seconds, (time.process_time() - cpu) / (time.perf_counter() - stop_at + seconds)


# ---- the served path ---------------------------------------------------------------------------

def _served(bundle_dir: Path, levels: list[int], seconds: int, max_batch: int, threads: int,
            seeds: list[int], percentiles, alones: list[EngineAlone]) -> dict:
    """wrk at each level, unary then streaming, each between two windows of each engine-alone
    configuration, then the TTFT client; one row per (level, mode)."""
    import httpx

    sys.path.insert(0, str(ROOT / "tests"))
    from support import Proc, free_port, grpc_serving, wait_for
    from run import TEXT_ONLY

    home = Path(tempfile.mkdtemp(prefix="omniforge-bench-served-"))
    tport, gport = free_port(), free_port()
    text = Proc("omniforge_text.server", {
        "OMNIFORGE_HOME": str(home), "OMNIFORGE_TEXT_BUNDLE": str(bundle_dir), "OMNIFORGE_TEXT_PORT": str(tport),
        "OMNIFORGE_TEXT_METRICS_PORT": str(free_port()),     # not the fixed default a running stack may hold
        "OMNIFORGE_TEXT_THREADS": str(threads), "OMNIFORGE_TEXT_MAX_BATCH_SIZE": str(max_batch)},
        home / "text.log").start()
    gateway = Proc("omniforge_gateway.app", {
        "OMNIFORGE_HOME": str(home), "OMNIFORGE_GATEWAY_PORT": str(gport),
        "OMNIFORGE_GATEWAY_TEXT_ADDRESS": f"127.0.0.1:{tport}", **TEXT_ONLY}, home / "gateway.log").start()
    url = f"http://127.0.0.1:{gport}"
    rows, ok = {}, False
    try:
        def up(proc: Proc, check, what: str) -> None:
            """Waits for `check`, but not for a process that has already exited."""
            wait_for(lambda: proc.popen.poll() is not None or check(), timeout=90, what=what)
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.module} exited with status {proc.popen.returncode}")

        try:
            up(text, lambda: grpc_serving(f"127.0.0.1:{tport}"), "text service serving")
            up(gateway, lambda: httpx.get(f"{url}/readyz").status_code == 200, "gateway ready")
        except (TimeoutError, RuntimeError):
            for log in ("text.log", "gateway.log"):
                tail = (home / log).read_text(errors="replace")[-3000:]
                print(f"---- {home / log} (last lines)\n{tail}", file=sys.stderr)
            raise
        _wrk(url, max(levels), min(seconds, 3), "unary", seeds)        # warm-up
        for n in levels:
            for mode in ("unary", "stream"):
                # CPU each process burns meanwhile: where the machine's cores go
                pids = {"text_service": text.popen.pid, "gateway": gateway.popen.pid}
                engine_before = [asyncio.run(alone.rate(n, seconds)) for alone in alones]
                before = {k: _cpu_seconds(pid) for k, pid in pids.items()}
                wrk_before = _children_cpu_seconds()
                w = _wrk(url, n, seconds, mode, seeds)
                used = {k: _cpu_seconds(pid) - before[k] for k, pid in pids.items()}
                used["wrk"] = _children_cpu_seconds() - wrk_before
                engine_after = [asyncio.run(alone.rate(n, seconds)) for alone in alones[::-1]][::-1]
                engines = {alone.name: {"tokens_per_s": round((b[0] + a[0]) / 2, 1),
                                        "before_after": [round(b[0], 1), round(a[0], 1)], "cpu_cores_used": round(a[1], 2)}
                           for alone, b, a in zip(alones, engine_before, engine_after)}
                best = max(engines.values(), key=lambda e: e["tokens_per_s"])
                rows[(n, mode)] = {**_row(w, used), "engine_tokens_per_s": best["tokens_per_s"],
                                   "engine_cpu_cores_used": best["cpu_cores_used"], "engine_alone": engines}
                print(f"served: {n} {mode}: {rows[(n, mode)]['delivered_tokens_per_s']:,.0f} tok/s delivered, engine alone "
                      + "; ".join(f"{k} {v['before_after'][0]:,.0f} / {v['before_after'][1]:,.0f}" for k, v in engines.items()),
                      file=sys.stderr)
            ttft = asyncio.run(_ttft(f"{url}/generate", n, min(seconds, 5), seeds))
            p = percentiles(ttft["seconds"]) if ttft["seconds"] else {"p50_ms": None, "p99_ms": None}
            rows[(n, "unary")].update(ttft_p50_ms=None, ttft_p99_ms=None)      # a unary reply has no first token
            rows[(n, "stream")].update(ttft_p50_ms=p["p50_ms"], ttft_p99_ms=p["p99_ms"],
                                       ttft_samples=len(ttft["seconds"]), ttft_errors=ttft["errors"])
            print(f"served: {n} connections measured", file=sys.stderr)
        ok = True
    finally:
        gateway.stop()
        text.stop()
        if ok:
            shutil.rmtree(home, ignore_errors=True)
        else:
            print(f"served: logs kept in {home}", file=sys.stderr)
    return rows


def _wrk(url: str, connections: int, seconds: int, mode: str, seeds: list[int]) -> dict:
    """One wrk run; the JSON line its Lua done() prints."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s", "-s", str(WRK_SCRIPT), url,
           "--", mode, str(NEW_TOKENS), ",".join(map(str, seeds)), PROMPT]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[-1])


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time a running process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")   # utime, stime


def _children_cpu_seconds() -> float:
    """CPU time of this process's finished children (the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _row(w: dict, cpu_seconds: dict) -> dict:
    s = w["duration_us"] / 1e6
    return {"delivered_tokens_per_s": round(w["tokens"] / s, 1), "requests_per_s": round(w["replies"] / s, 1),
            "mean_completion_tokens": round(w["tokens"] / max(w["replies"], 1), 2),
            "latency_p50_ms": round(w["latency_p50_us"] / 1000, 1),
            "latency_p99_ms": round(w["latency_p99_us"] / 1000, 1),
            "errors": w["non200"] + w["socket_errors"] + w["incomplete"],
            "error_kinds": {k: w[k] for k in ("non200", "socket_errors", "incomplete")},
            "cpu_cores_used": {k: round(v / s, 2) for k, v in cpu_seconds.items()}}


async def _ttft(url: str, n: int, seconds: int, seeds: list[int]) -> dict:
    """N concurrent streaming requests for `seconds`: the time from sending each to its first event."""
    import httpx

    samples, errors = [], [0]
    stop_at = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def worker(k: int) -> None:
            turn = k
            while time.perf_counter() < stop_at:
                body = {"prompt": PROMPT, "max_tokens": NEW_TOKENS, "temperature": TEMPERATURE,
                        "seed": seeds[turn % len(seeds)], "stream": True}
                turn += n
                t, first = time.perf_counter(), None
                try:
                    async with client.stream("POST", url, json=body) as r:
                        # read to the end, so each stream costs the service what a real one does
                        async for line in r.aiter_lines():
                            if first is None and line.startswith("data:"):
                                first = time.perf_counter() - t
                    if r.status_code != 200 or first is None:
                        errors[0] += 1
                    else:
                        samples.append(first)
                except httpx.HTTPError:
                    errors[0] += 1

        await asyncio.gather(*[worker(k) for k in range(n)])
    return {"seconds": samples, "errors": errors[0]}


def _print_table(rows: dict, max_batch: int) -> None:
    """One line per (concurrency, mode); the cores columns say where the machine's CPUs went."""
    print(f"served: tokens/s delivered vs the engine alone (max_batch_size {max_batch}), times in ms\n"
          f"  conc mode     tok/s  req/s     p50     p99  ttft50  ttft99  err  engine ratio"
          f"  cores: text+gateway+wrk | engine", file=sys.stderr)
    for r in rows.values():
        ttft = " ".join(f"{r[k]:7.1f}" if r[k] is not None else "      -" for k in ("ttft_p50_ms", "ttft_p99_ms"))
        cores = "+".join(f"{v:.2f}" for v in r["cpu_cores_used"].values())
        print(f"  {r['concurrency']:>4} {r['mode']:<6} {r['delivered_tokens_per_s']:7.0f} {r['requests_per_s']:6.1f} "
              f"{r['latency_p50_ms']:7.1f} {r['latency_p99_ms']:7.1f} {ttft} {r['errors']:>4} "
              f"{r['engine_tokens_per_s']:7.0f} {r['ratio']:5.2f}  {cores} | {r['engine_cpu_cores_used']:.2f}",
              file=sys.stderr)
