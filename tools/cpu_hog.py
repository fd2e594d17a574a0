"""Run a command beside a CPU hog: ``python tools/cpu_hog.py --threads N -- COMMAND ...``.

The hog is a second process doing matrix products on ``N`` PyTorch threads for as long as the
command runs, so that the command meets a machine as busy as a shared CI machine. Exits with
the command's status.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys


def hog(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    matrix = torch.randn(512, 512)
    while True:
        matrix = torch.tanh(matrix @ matrix)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("a command to run beside the hog")
    busy = multiprocessing.Process(target=hog, args=(args.threads,), daemon=True)
    busy.start()
    try:
        return subprocess.call(command)
    finally:
        busy.terminate()
        busy.join()


if __name__ == "__main__":
    sys.exit(main())
