"""Load on the web API of a running pool, alone and beside Stratum load.

Run: python bench/web_load.py [--seconds 20] [--rate 2000] [--connections 20]
                              [--stratum-rate 2000] [--path /api/stats]

Starts the same pool as bench/stratum_load.py (redis-server, a fake daemon
with a mainnet-difficulty template, ``twistd -n nomp``), with the web site
on, collecting stats every 5 s. Then:

1. --path at --rate requests/s over --connections keep-alive connections,
   from a client process of its own: requests/s served, latency p50/p99/max,
   and the pool's CPU per request;
2. the same again while this process offers --stratum-rate scrypt shares/s
   from 200 Stratum connections: both sides' figures, measured together.

The HTTP client paces its requests (a request is sent when its time comes,
not when the last answer arrived), so a slow answer shows in the latency
instead of lowering the rate.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stratum_load import (  # noqa: E402
    SCRYPT_ADDRESS,
    cpu_seconds,
    load_phase,
    raise_fd_limit,
    run_until_done,
    running_pool,
    wait_port,
)
from test.servers import free_port  # noqa: E402


def http_load(port: int, path: str, rate: float, seconds: float, connections: int) -> dict[str, float]:
    """Paced GETs of ``path`` on keep-alive sockets; one request at a time per socket."""
    import selectors  # noqa: PLC0415 - only the client process needs it

    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    selector = selectors.DefaultSelector()
    sockets = []
    for _ in range(connections):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        sockets.append(sock)
        selector.register(sock, selectors.EVENT_READ, {"buffer": b"", "sent": None})
    idle = list(sockets)
    latencies: list[float] = []
    errors = 0
    late = 0  # requests whose time came while every socket was busy
    interval = 1 / rate
    start = time.perf_counter()
    end = start + seconds
    due = start
    while True:
        now = time.perf_counter()
        while due <= now and due < end:
            if idle:
                sock = idle.pop()
                sock.sendall(request)
                selector.get_key(sock).data["sent"] = due  # latency from when it was due
            else:
                late += 1
            due += interval
        if due >= end and len(idle) == len(sockets):
            break
        timeout = max(0.0, min(due, end) - time.perf_counter()) if due < end else 0.05
        for key, _ in selector.select(timeout):
            sock = cast(socket.socket, key.fileobj)
            state = key.data
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("the pool closed a connection")
            state["buffer"] += chunk
            head, separator, body = state["buffer"].partition(b"\r\n\r\n")
            if not separator:
                continue
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            if len(body) < length:
                continue
            if not head.startswith(b"HTTP/1.1 200"):
                errors += 1
            latencies.append(time.perf_counter() - state["sent"])
            state["buffer"] = body[length:]
            idle.append(sock)
        if time.perf_counter() > end + 10:
            break
    wall = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "errors": errors,
        "late": late,
        "per_s": len(latencies) / wall,
        "p50_ms": statistics.median(latencies) * 1e3,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1e3,
        "max_ms": latencies[-1] * 1e3,
        "bytes": len(body) if latencies else 0,
    }


def start_http_load(port: int, options: argparse.Namespace) -> subprocess.Popen[str]:
    args = [str(port), options.path, str(options.rate), str(options.seconds), str(options.connections)]
    return subprocess.Popen(
        [sys.executable, __file__, "--client", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def print_web(label: str, r: dict[str, Any], pool_cpu: float) -> None:
    print(
        f"{label:22} {r['requests']} answered ({r['errors']} errors, {r['late']} not sent in time), "
        f"{r['per_s']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms, "
        f"max {r['max_ms']:.1f} ms; pool CPU {pool_cpu * 1e6 / max(r['requests'], 1):.0f} us/request"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=2000, help="HTTP requests/s offered")
    parser.add_argument("--connections", type=int, default=20, help="HTTP keep-alive connections")
    parser.add_argument("--stratum-rate", type=float, default=2000, help="scrypt shares/s offered beside")
    parser.add_argument("--path", default="/api/stats")
    parser.add_argument("--client", nargs=5, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.client:
        port, path, rate, seconds, connections = options.client
        result = http_load(int(port), path, float(rate), float(seconds), int(connections))
        print(json.dumps(result), flush=True)
        return
    raise_fd_limit()
    web_port = free_port()
    with running_pool(threads=1, web=web_port) as run:
        wait_port(web_port)
        time.sleep(6)  # a first stats collection
        print(
            f"pool pid {run.pool.pid}; {os.cpu_count()} CPUs; GET {options.path} at {options.rate:g}/s over "
            f"{options.connections} connections for {options.seconds:g} s"
        )
        cpu = cpu_seconds(run.pool.pid)
        client = start_http_load(web_port, options)
        alone = json.loads(client.communicate()[0])
        print_web("web alone", alone, cpu_seconds(run.pool.pid) - cpu)

        client = start_http_load(web_port, options)
        stratum: dict[str, float] = {}

        async def beside(_: Any) -> None:
            stratum.update(
                await load_phase(
                    run.scrypt_port, SCRYPT_ADDRESS, 200, options.stratum_rate, options.seconds, run.pool.pid
                )
            )

        cpu = cpu_seconds(run.pool.pid)
        run_until_done(beside(None))
        together = json.loads(client.communicate()[0])
        both_cpu = cpu_seconds(run.pool.pid) - cpu
        print(f"{'(pool CPU per request below is of both loads together)':22}")
        print_web("web beside Stratum", together, both_cpu)
        print(
            f"{'Stratum beside web':22} accepted {stratum['accepted']:.0f}/{stratum['sent']:.0f} "
            f"({stratum['rejected']:.0f} rejected), {stratum['shares_per_s']:.0f} shares/s, "
            f"reply p50 {stratum['p50_ms']:.2f} ms, p99 {stratum['p99_ms']:.2f} ms, "
            f"max {stratum['max_ms']:.1f} ms; pool CPU in all {both_cpu:.1f} s "
            f"({both_cpu / options.seconds * 100:.0f} % of one core)"
        )
        answer = json.loads(
            subprocess.run(
                ["curl", "-s", f"http://127.0.0.1:{web_port}/api/stats"], capture_output=True, check=False
            ).stdout
            or b"{}"
        )
        workers = sum(p.get("workerCount", 0) for p in answer.get("pools", {}).values())
        print(f"/api/stats at the end: {workers} workers, {len(json.dumps(answer))} bytes")


if __name__ == "__main__":
    main()
