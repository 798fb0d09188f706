"""`accelerate launch` with a free rendezvous port picked when none is given.

    python train/launch.py --multi_gpu --num_processes 8 train/train.py --config paper --output-dir runs/p
    python train/launch.py --num_processes 2 --cpu-processes train/train.py --config tiny --output-dir /tmp/t

Everything is passed to `accelerate launch` unchanged, plus `--main_process_port <free port>` on a single
machine when no port is given (two jobs on one node would otherwise both take 29500 and the second fails).
With several machines the port must be given (`--main_process_port`): every node must agree on it, and a
port free here says nothing about the main node.

`--cpu-processes` runs N real CPU processes with gloo through torchrun (`accelerate launch --cpu
--num_processes 2` starts only one; see the project's ecosystem notes), for testing the distributed path on
a machine without GPUs.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def free_port() -> int:
    """A TCP port that is free on this machine now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _value(args: list[str], flag: str) -> str | None:
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def build_command(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command to run and extra environment variables, from this wrapper's arguments."""
    args = list(argv)
    env: dict[str, str] = {}
    machines = int(_value(args, "--num_machines") or 1)
    has_port = _value(args, "--main_process_port") is not None
    if "--cpu-processes" in args:
        args.remove("--cpu-processes")
        nproc = _value(args, "--num_processes") or "2"
        script_at = next(i for i, a in enumerate(args) if a.endswith(".py"))
        port = _value(args, "--main_process_port") or str(free_port())
        env["ACCELERATE_USE_CPU"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            nproc,
            "--master_port",
            port,
        ]
        return [*cmd, *args[script_at:], "--cpu"], env
    if machines > 1 and not has_port:
        raise SystemExit("with --num_machines > 1 give --main_process_port (the same on every machine)")
    if not has_port:
        args = ["--main_process_port", str(free_port()), *args]
    return [sys.executable, "-m", "accelerate.commands.launch", *args], env


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] in (["-h"], ["--help"]):
        print(__doc__)  # then accelerate's own options
    cmd, env = build_command(argv)
    print("+", " ".join(cmd), flush=True)
    return subprocess.call(cmd, env={**os.environ, **env})


if __name__ == "__main__":
    sys.exit(main())
