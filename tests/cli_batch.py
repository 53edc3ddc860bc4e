"""Run many ``python -m src.run`` command lines for the price of one interpreter start.

``python tests/cli_batch.py < cases.json`` reads a JSON list of argument lists and prints
a JSON list of ``{"returncode": int, "stderr": str}``. The CLI's modules (torch,
Lightning, Hydra) are imported once; each command line then runs ``src.run.cli()`` in a
forked child process, so every case gets a real process with its own exit status and
stderr, as from a shell, without the ~4 s import cost per case. The parent computes
nothing with torch before forking, so no thread pool is inherited half-initialised.
"""
from __future__ import annotations

import json
import os
import runpy
import sys
import tempfile
import traceback
from importlib.util import find_spec

# what src/run.py imports (the costly part of a start-up); src.run itself runs per case as __main__
import src.config.overrides  # noqa: F401
import src.experiment  # noqa: F401
import src.tasks  # noqa: F401


def run_in_child(argv: list[str], stderr_path: str) -> int:
    """``python -m src.run *argv`` in a forked child; its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            err = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(err, 2)
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            sys.argv = [find_spec("src.run").origin, *argv]
            # as `python -m src.run` runs it (Hydra finds conf/ from the __main__ file); the
            # modules it imports are already loaded
            runpy.run_module("src.run", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except BaseException:  # noqa: BLE001  (a bug in the CLI: its traceback is the evidence)
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def main() -> None:
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for i, argv in enumerate(json.load(sys.stdin)):
            path = os.path.join(scratch, f"{i}.err")
            code = run_in_child(argv, path)
            with open(path, encoding="utf-8", errors="replace") as f:
                results.append({"returncode": code, "stderr": f.read()})
    print(json.dumps(results))


if __name__ == "__main__":
    main()
