"""Load test of the Gradio app on loopback: N concurrent clients x M requests each.

    AFFECTVLM_SFM_DIR=../shared/sfm python bench/app.py                  # 16 clients x 10 requests, scan tab
    python bench/app.py --endpoint views --clients 4 --requests 5

Starts `python app.py` on a free 127.0.0.1 port in a subprocess, drives it with gradio_client from threads,
and prints p50/p95 latency, the error count (target 0), throughput and the server's peak resident memory.
Nothing leaves this machine: the server listens on loopback only and the loop is bounded.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a process (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_inputs(folder: Path) -> dict[str, Path]:
    from PIL import Image

    sfm = Path(os.environ.get("AFFECTVLM_SFM_DIR", ROOT.parent / "shared" / "sfm"))
    data = np.load(sfm / "sfm_3448.npz")
    scan = folder / "face.obj"
    with open(scan, "w") as f:
        f.writelines(f"v {x:.3f} {y:.3f} {z:.3f}\n" for x, y, z in data["mean"] + data["expressions"][3])
        f.writelines(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in data["triangles"])
    rng = np.random.default_rng(0)
    image = folder / "view.png"
    Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(image)
    return {"scan": scan, "image": image}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--requests", type=int, default=10, help="requests per client (default 10)")
    parser.add_argument("--endpoint", choices=["scan", "views"], default="scan", help="which tab to call")
    args = parser.parse_args()

    from gradio_client import Client, handle_file

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False")
    with tempfile.TemporaryDirectory() as tmp:
        inputs = make_inputs(Path(tmp))
        proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until_up(url, proc)
            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

            def client_loop() -> None:
                client = Client(url, verbose=False, download_files=False)
                for _ in range(args.requests):
                    start = time.perf_counter()
                    try:
                        if args.endpoint == "scan":
                            client.predict(handle_file(inputs["scan"]), "", api_name="/predict_scan")
                        else:
                            image = handle_file(inputs["image"])
                            client.predict(image, image, image, "", api_name="/predict_views")
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
            wall = time.perf_counter() - wall
            peak = peak_rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=30)

    total = args.clients * args.requests
    print(f"{args.clients} clients x {args.requests} requests = {total} requests to /predict_{args.endpoint}")
    if latencies:
        q = statistics.quantiles(latencies, n=20)
        print(f"latency p50 {statistics.median(latencies) * 1e3:.0f} ms, p95 {q[18] * 1e3:.0f} ms, "
              f"max {max(latencies) * 1e3:.0f} ms")
    print(f"errors: {len(errors)} (target 0)")
    for err in sorted(set(errors))[:5]:
        print(f"  {err}")
    print(f"throughput: {len(latencies) / wall:.2f} requests/s over {wall:.1f} s")
    print(f"server peak resident memory: {peak:.0f} MB")


if __name__ == "__main__":
    main()
