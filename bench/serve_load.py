"""Load on ``adaptlab serve``: throughput and latency at 1x, 2x and 4x its concurrency limit.

Starts ``adaptlab serve TARGET`` on 127.0.0.1 (a free port), waits for ``/ready``, then for
each multiple sends a fixed number of ``/v1/classify`` requests (one text each, from the
demo's eval texts unless ``--texts`` names a JSONL file) from that many concurrent clients:
a bounded async httpx client, loopback only, every request with a timeout and the whole
level with a time limit. It records per level the requests answered 200, 429 (admission
refusing: expected past the limit) and 5xx (must be zero), throughput in answers per second,
and p50/p99 latency of the answers. Clients behave: after a 429 they wait its Retry-After and
try again, and that wait is part of the latency they see.

    python bench/serve_load.py runs/demo/runs/distill --requests 400 --max-concurrency 2

``--broken-candidate RUN_DIR`` then measures the canary's rollback: TARGET (a run folder) and
RUN_DIR are promoted to a scratch registry as ``bench@champion`` and ``bench@candidate``, a
server runs in this process with the candidate taking half the traffic, and a fault is
injected: every prediction of the candidate raises from then on. Four clients keep sending;
the script records the time from the candidate's first failed prediction to the canary's
rollback, and every answer's status (none may be a 5xx: the champion answers for a candidate
that fails).

``--anchor`` runs the same levels, in the same run, against the anchor: TARGET exported with
``adaptlab export --format hf`` and served by ``bench/serve_anchor.py`` (a minimal FastAPI
endpoint calling transformers directly), and reports adaptlab's throughput and p50 as ratios to
the anchor's.

Prints a JSON summary; ``--out FILE`` also writes it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

LAUNCH = "from adaptlab.cli import main; main()"


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", help="A run folder or a registered version (NAME@ALIAS).")
    parser.add_argument("--registry", default=None)
    parser.add_argument("--requests", type=int, default=400, help="Requests per level.")
    parser.add_argument("--max-concurrency", type=int, default=2)
    parser.add_argument("--max-queue", type=int, default=4)
    parser.add_argument("--multiples", default="1,2,4")
    parser.add_argument("--time-limit", type=float, default=300.0, help="Seconds per level.")
    parser.add_argument("--texts", type=Path, default=None, help="JSONL with a 'text' per row.")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--broken-candidate", type=Path, default=None, help="A run folder.")
    parser.add_argument("--anchor", action="store_true", help="Also load the plain anchor.")
    parser.add_argument(
        "--drift-window", type=int, default=None,
        help="Passed to adaptlab serve (its default: drift monitoring every 100 inputs; 0: off).",
    )  # fmt: skip
    return parser.parse_args()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def texts_from(path: Path | None) -> list[str]:
    if path is None:
        import csv

        from adaptlab.data.demo import bbc_news_path

        with open(bbc_news_path(), encoding="utf-8") as handle:
            return [row["text"] for row in csv.DictReader(handle)][:500]
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [str(row["text"]) for row in rows]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen[str]:
    command = [sys.executable, "-c", LAUNCH, "serve", args.target, "--port", str(port)]
    command += ["--max-concurrency", str(args.max_concurrency)]
    command += ["--max-queue", str(args.max_queue), "--request-timeout", "60"]
    if args.registry:
        command += ["--registry", args.registry]
    if args.drift_window is not None:
        command += ["--drift-window", str(args.drift_window)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_ready(base: str, process: subprocess.Popen[str], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(
                f"the server exited: {process.stdout.read() if process.stdout else ''}"
            )
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {seconds:.0f} s")


async def level(base: str, model: str, texts: list[str], clients: int, args: argparse.Namespace
                ) -> dict[str, Any]:  # fmt: skip
    """``args.requests`` requests from ``clients`` concurrent clients, bounded in time."""
    statuses: list[int] = []
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(args.requests):
        queue.put_nowait(index)
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(http: httpx.AsyncClient) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            start = time.perf_counter()
            while True:  # a well-behaved client: after a 429 it waits Retry-After, then retries
                try:
                    response = await http.post(
                        f"{base}/v1/classify",
                        json={"model": model, "input": texts[index % len(texts)]},
                    )
                except httpx.TimeoutException:
                    statuses.append(-1)
                    break
                statuses.append(response.status_code)
                if response.status_code != 429:
                    break
                await asyncio.sleep(min(float(response.headers.get("retry-after", 1)), 5.0))
            if statuses[-1] == 200:  # the latency a user saw, waits after a 429 included
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with httpx.AsyncClient(timeout=60, limits=limits) as http:
        await asyncio.wait_for(
            asyncio.gather(*(client(http) for _ in range(clients))), args.time_limit
        )
    wall = time.perf_counter() - start
    ok = statuses.count(200)
    return {
        "clients": clients,
        "requests": args.requests,
        "attempts": len(statuses),
        "ok": ok,
        "rejected_429": statuses.count(429),
        "server_errors_5xx": sum(500 <= s < 600 for s in statuses),
        "client_timeouts": statuses.count(-1),
        "wall_s": round(wall, 2),
        "throughput_per_s": round(ok / wall, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1) if latencies else None,
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1) if latencies else None,
    }


def levels(base: str, process: subprocess.Popen[str], texts: list[str], args: argparse.Namespace,
           model: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Every level against the server ``process`` answering at ``base``; stopped after."""
    try:
        wait_ready(base, process)
        if model is None:
            model = httpx.get(f"{base}/v1/models", timeout=10).json()["data"][0]["id"]
        results = []
        for multiple in (int(m) for m in args.multiples.split(",")):
            clients = multiple * args.max_concurrency
            results.append(
                {"multiple": multiple, **asyncio.run(level(base, model, texts, clients, args))}
            )
            print(json.dumps(results[-1]), flush=True)
        return results
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()


def start_anchor(target: str, port: int) -> subprocess.Popen[str]:
    """``target`` exported as a plain transformers folder, served by bench/serve_anchor.py."""
    import tempfile

    exported = Path(tempfile.mkdtemp(prefix="serve-anchor-")) / "hf"
    command = [sys.executable, "-c", LAUNCH, "export", target, "--format", "hf", str(exported)]
    subprocess.run(command, check=True, capture_output=True, text=True)
    anchor = Path(__file__).with_name("serve_anchor.py")
    return subprocess.Popen(
        [sys.executable, str(anchor), str(exported), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def main() -> None:
    args = arguments()
    texts = texts_from(args.texts)
    port = free_port()
    results = levels(f"http://127.0.0.1:{port}", start_server(args, port), texts, args)
    summary: dict[str, Any] = {
        "target": args.target,
        "max_concurrency": args.max_concurrency,
        "max_queue": args.max_queue,
        "drift_window": args.drift_window,
        "cpus": os.cpu_count(),
        "levels": results,
    }
    if args.anchor:
        port = free_port()
        anchor = levels(
            f"http://127.0.0.1:{port}", start_anchor(args.target, port), texts, args, "anchor"
        )
        summary["anchor_levels"] = anchor
        summary["ratio_to_anchor"] = [
            {
                "multiple": ours["multiple"],
                "throughput": round(ours["throughput_per_s"] / theirs["throughput_per_s"], 2),
                "p50": round(ours["p50_ms"] / theirs["p50_ms"], 2),
            }
            for ours, theirs in zip(results, anchor, strict=True)
            if ours["p50_ms"] and theirs["p50_ms"] and theirs["throughput_per_s"]
        ]
    if args.broken_candidate is not None:
        summary["broken_canary"] = broken_canary(args, texts)
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


def broken_canary(args: argparse.Namespace, texts: list[str]) -> dict[str, Any]:
    """The rollback of a candidate whose every prediction fails (an injected fault)."""
    import tempfile
    import threading
    from concurrent.futures import ThreadPoolExecutor

    import uvicorn

    from adaptlab import predict
    from adaptlab.registry import Registry
    from adaptlab.serve.app import create_app, server_config
    from adaptlab.serve.canary import CanarySettings
    from adaptlab.serve.network import listening_socket
    from adaptlab.serve.settings import ServeSettings

    root = Path(tempfile.mkdtemp(prefix="serve-load-"))
    registry = Registry(root / "registry", create=True)
    for run, alias in ((Path(args.target), "champion"), (args.broken_candidate, "candidate")):
        registry.promote(run, "bench", approver="bench", reason="serve_load", alias=alias)
    real_classify = predict.classify
    first_failure: list[float] = []

    def classify(loaded: Any, inputs: Any, *rest: Any, **options: Any) -> Any:
        if loaded.source == "bench:2" and broken.is_set():
            first_failure.append(time.monotonic())
            raise RuntimeError("injected fault: the candidate is broken")
        return real_classify(loaded, inputs, *rest, **options)

    broken = threading.Event()
    predict.classify = classify  # the server predicts through this module attribute
    settings = ServeSettings(max_concurrency=args.max_concurrency, max_queue=args.max_queue)
    canary = CanarySettings(candidate="bench@candidate", weight=50, window=20)
    app = create_app(["bench@champion"], settings, registry=root / "registry", canary=canary)
    listener = listening_socket("127.0.0.1", 0)
    server = uvicorn.Server(server_config(app, settings))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{listener.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        state = app.state.server.canary
        broken.set()

        def client(start: int) -> list[int]:
            statuses = []
            with httpx.Client(base_url=base, timeout=60) as http:
                for index in range(start, 400, 4):  # a user per request: keys split ~50/50
                    body = {"model": "bench@champion", "input": texts[index % len(texts)]}
                    headers = {"x-adaptlab-route-key": f"user-{index}"}
                    statuses.append(
                        http.post("/v1/classify", json=body, headers=headers).status_code
                    )
            return statuses

        with ThreadPoolExecutor(4) as pool:
            statuses = [s for part in pool.map(client, range(4)) for s in part]
        events = registry.history("bench")
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        predict.classify = real_classify
    return {
        "fault": "every candidate prediction raises once the load starts",
        "weight_percent": 50,
        "window": 20,
        "state": state.state,
        "first_failure_to_rollback_ms": (
            round((state.ended_at - first_failure[0]) * 1000, 1)
            if state.ended_at and first_failure
            else None
        ),
        "answers": len(statuses),
        "answers_200": statuses.count(200),
        "server_errors_5xx": sum(500 <= s < 600 for s in statuses),
        "registry_event": None
        if not events
        else {"kind": events[-1].kind, "alias": events[-1].alias, "why": events[-1].why},
    }


if __name__ == "__main__":
    main()
