"""What every benchmark reports about where it ran."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cpu_model() -> str:
    """The CPU model /proc/cpuinfo names, or C{"unknown"}."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def run(*command: str) -> str:
    """A command's output in the repository (C{"unknown"} when it fails)."""
    try:
        return subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> dict:
    """Date, core count, CPU, Python, commit and the command line, for RESULTS.md."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": sys.version.split()[0],
        "git_commit": run("git", "rev-parse", "--short", "HEAD"),
        "command": " ".join(["python"] + sys.argv),
    }
