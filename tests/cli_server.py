"""The project's command lines for the tests, each in its own process, without paying the imports each time.

``python tests/cli_server.py`` imports what the CLIs import (torch, Lightning, Hydra, W&B,
matplotlib: about 4 s of a start-up on 2 cores), then reads one JSON request per line
on stdin, ``{"module": "src.run", "argv": [...], "env": {...}, "cwd": "...", "timeout": s}``,
and answers each with one JSON line ``{"returncode", "stdout", "stderr", "timed_out"}``.

Each request runs in a forked child: ``runpy`` executes the module as ``__main__``, as
``python -m <module>`` does, in a process of its own with its own environment, working
directory, exit status, stdout and stderr. Only the imports are shared. The server
computes nothing with torch before forking, so no child inherits a half-started thread
pool. ``tests/conftest.py`` starts one server per test worker; ``AL_TESTS_FRESH_CLI=1``
makes it start a fresh interpreter for every command instead.
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import tempfile
import time
import traceback
from importlib.util import find_spec
from pathlib import Path

# this checkout's src/, as `python -m` from the repo root finds it (sys.path[0] is tests/ here, and
# an editable install may point at another checkout, e.g. the main one of a git worktree)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# what the entry points import: the costly part of a start-up (the entry modules themselves
# run per request, as __main__)
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot  # noqa: E402,F401
import wandb  # noqa: E402,F401

import src.analysis.report  # noqa: E402,F401
import src.config.overrides  # noqa: E402,F401
import src.experiment  # noqa: E402,F401
import src.models.detector  # noqa: E402,F401
import src.tasks  # noqa: E402,F401


def child(module: str, argv: list[str], env: dict, cwd: str, out: str, err: str) -> None:
    """The body of the forked process: ``python -m module *argv``; never returns."""
    code = 1
    try:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(env)
        os.dup2(os.open(out, os.O_WRONLY | os.O_TRUNC), 1)
        os.dup2(os.open(err, os.O_WRONLY | os.O_TRUNC), 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        sys.argv = [find_spec(module).origin, *argv]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:  # noqa: BLE001  (an uncaught error: its traceback is the evidence, exit 1 as Python)
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def run(request: dict, scratch: str) -> dict:
    out, err = os.path.join(scratch, "out"), os.path.join(scratch, "err")
    for path in (out, err):
        open(path, "w").close()
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        child(request["module"], request["argv"], request["env"], request["cwd"], out, err)
    deadline = time.monotonic() + float(request.get("timeout", 600))
    timed_out = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            timed_out = True
            break
        time.sleep(0.02)
    read = lambda p: open(p, encoding="utf-8", errors="replace").read()  # noqa: E731
    return {
        "returncode": os.waitstatus_to_exitcode(status),
        "stdout": read(out),
        "stderr": read(err),
        "timed_out": timed_out,
    }


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            print(json.dumps(run(json.loads(line), scratch)), flush=True)


if __name__ == "__main__":
    main()
