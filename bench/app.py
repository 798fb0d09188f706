"""Load test of the Gradio app on loopback: N concurrent clients x M requests each.

    python bench/app.py                                   # 16 clients x 10 requests, scan tab, then hostile files
    python bench/app.py --endpoint views --clients 4 --requests 5
    python bench/app.py --endpoint explain --clients 1 --requests 10 --no-hostile   # latency with the explanation

Starts `python app.py` on a free 127.0.0.1 port in a subprocess, drives it with gradio_client from threads,
and prints p50/p95 latency, the error count (target 0), throughput and the server's peak resident memory.
Then it sends a batch of hostile inputs (bench/hostile.py: each must be refused with a message, or scored with
a note) and prints the server's resident memory before and after them (it must come back down).
The inputs are the committed examples (examples/). Nothing leaves this machine: the server listens on loopback
only and the loop is bounded.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process now (VmRSS) or at its peak (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def example_inputs() -> dict:
    frontal = sorted((ROOT / "examples").glob("views_*_frontal.png"))[0]  # one scan's three views
    views = [
        frontal.with_name(frontal.name.replace("_frontal", f"_{v}")) for v in ("frontal", "left", "right")
    ]
    return {
        "scan": ([next((ROOT / "examples").glob("scan_*.ply"))], "/predict_scan"),
        "views": (views, "/predict_views"),
        "sequence": ([[sorted((ROOT / "examples").glob("sequence_*.zip"))[0]]], "/predict_sequence"),
        # the same scan, explained: relevance on the views and the painted scan (`--endpoint explain`)
        "explain": ([next((ROOT / "examples").glob("scan_*.ply"))], "/explain_scan"),
    }


def call(client, files: list, labels: str, api_name: str):
    from gradio_client import handle_file

    args = [[handle_file(str(f)) for f in x] if isinstance(x, list) else handle_file(str(x)) for x in files]
    return client.predict(*args, labels, api_name=api_name)


def wait_until_up(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    import urllib.request

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"the app did not answer on {url} within {timeout:.0f} s")


def load(url: str, args) -> tuple[list[float], list[str], float]:
    """`args.clients` threads x `args.requests` calls: (latencies of the successes, errors, wall seconds)."""
    from gradio_client import Client

    files, api_name = example_inputs()[args.endpoint]
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client_loop() -> None:
        client = Client(url, verbose=False, download_files=False)
        for _ in range(args.requests):
            start = time.perf_counter()
            try:
                call(client, files, "", api_name)
                ok, err = True, ""
            except Exception as exc:  # noqa: BLE001 - every failure is counted and reported
                ok, err = False, f"{type(exc).__name__}: {exc}"
            with lock:
                (latencies.append(time.perf_counter() - start) if ok else errors.append(err))

    threads = [threading.Thread(target=client_loop) for _ in range(args.clients)]
    wall = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - wall


def hostile(url: str, pid: int, folder: Path) -> None:
    """Send every hostile input once; print what came back and the server's memory around the batch."""
    from gradio_client import Client

    sys.path.insert(0, str(ROOT / "bench"))
    from hostile import EMOTIONS, SCAN, hostile_inputs, worst_within_caps

    client = Client(url, verbose=False, download_files=False)
    before = rss_mb(pid)
    for name, (files, labels, api_name) in hostile_inputs(folder).items():
        start = time.perf_counter()
        try:
            out = call(client, files, labels, api_name)
            answer = f"scored: {out[3].splitlines()[0]} {'(with a note)' if '- ' in out[3] else '(NO NOTE)'}"
        except Exception as exc:  # noqa: BLE001 - a refusal is the expected answer
            answer = f"refused: {str(exc)[:100]}"
        print(f"  {name:<28} {time.perf_counter() - start:6.2f} s  {answer}")
    for name, quads in (("worst within caps (1.9 M tri)", False), ("the same as quads (Blender)", True)):
        start = time.perf_counter()
        out = call(client, [worst_within_caps(folder, quads)], EMOTIONS, SCAN)
        print(f"  {name:<28} {time.perf_counter() - start:6.2f} s  scored: {out[3].splitlines()[0]}")
    time.sleep(2)
    print(f"server resident memory: {before:.0f} MB before the hostile batch, {rss_mb(pid):.0f} MB after "
          f"(peak {rss_mb(pid, 'VmHWM'):.0f} MB)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--requests", type=int, default=10, help="requests per client (default 10)")
    parser.add_argument(
        "--endpoint",
        choices=sorted(example_inputs()),
        default="scan",
        help="which endpoint (explain: the scan tab's explanation)",
    )
    parser.add_argument("--no-hostile", action="store_true", help="skip the hostile batch")
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False")  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until_up(url, proc)
        latencies, errors, wall = load(url, args)
        peak = rss_mb(proc.pid, "VmHWM")
        total = args.clients * args.requests
        print(
            f"{args.clients} clients x {args.requests} requests = {total} requests to {example_inputs()[args.endpoint][1]}"
        )
        if latencies:
            q = statistics.quantiles(latencies, n=20, method="inclusive")  # never beyond the max
            print(f"latency p50 {statistics.median(latencies) * 1e3:.0f} ms, p95 {q[18] * 1e3:.0f} ms, "
                  f"max {max(latencies) * 1e3:.0f} ms")  # fmt: skip
        print(f"errors: {len(errors)} (target 0)")
        for err in sorted(set(errors))[:5]:
            print(f"  {err}")
        print(f"throughput: {len(latencies) / wall:.2f} requests/s over {wall:.1f} s")
        print(f"server peak resident memory: {peak:.0f} MB")
        if not args.no_hostile:
            with tempfile.TemporaryDirectory() as tmp:
                hostile(url, proc.pid, Path(tmp))
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
