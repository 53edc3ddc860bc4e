"""Shared fixtures: Hydra's compose API over the real conf/, and the real CLI as a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import src.config.resolvers  # noqa: F401  (registers the config resolvers)
from src.loop.records import RoundRecord

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"


@pytest.fixture
def compose_cfg():
    """compose_cfg(*overrides) -> the composed job config, as `python -m src.run` would see it."""
    def _compose(*overrides: str):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            return compose(config_name="config", overrides=list(overrides))
    yield _compose
    GlobalHydra.instance().clear()


def cli_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    # offline whatever credentials the machine has: tests never talk to a server
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    return env


def run_cli(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m src.run ARGS` from the repo root, as a user runs it."""
    proc = subprocess.run([sys.executable, "-m", "src.run", *args], cwd=REPO, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"src.run {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


TIMING_KEYS = set(RoundRecord.TIMINGS)


def without_timings(records: list) -> list[dict]:
    """Records (RoundRecord or their JSON objects) without the wall-clock fields, for equality checks."""
    return [{k: v for k, v in (r.to_json() if isinstance(r, RoundRecord) else r).items() if k not in TIMING_KEYS}
            for r in records]
