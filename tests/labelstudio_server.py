"""A real Label Studio server for the round-trip test and the fixture script.

Label Studio's pins conflict with the project's, so it lives in a virtual environment
of its own (``make labelstudio-env``) and runs as a subprocess on loopback only:
``label-studio`` is found at ``$LABEL_STUDIO_BIN``, else ``.venv-labelstudio/bin/`` in
the repository. It authenticates the way Label Studio 1.23 wants API clients to (its
legacy tokens are off by default): log in with the form, create a personal access
token (a JWT refresh token), trade it for an access token, send ``Bearer <access>``.
Standard library only: the project's environment needs nothing for this.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
USER, PASSWORD = "al-select@example.com", "al-select-round-trip"


def label_studio_bin() -> Path | None:
    """The ``label-studio`` executable to run, or None when it is not installed."""
    named = os.environ.get("LABEL_STUDIO_BIN")
    candidates = [Path(named)] if named else [REPO / ".venv-labelstudio" / "bin" / "label-studio"]
    return next((p for p in candidates if p.is_file() and os.access(p, os.X_OK)), None)


def label_studio_version(executable: Path) -> str:
    python = executable.parent / "python"
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('label-studio'))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabelStudioServer:
    """``with LabelStudioServer(exe, data_dir, document_root) as ls: ls.api("GET", "/api/projects/")``."""

    def __init__(self, executable: Path, data_dir: Path, document_root: Path, start_timeout: float = 600):
        self.executable, self.data_dir, self.document_root = (
            Path(executable),
            Path(data_dir),
            Path(document_root),
        )
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self.cookies = http.cookiejar.CookieJar()
        self.session = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        self.access_token = ""

    # -- lifetime -----------------------------------------------------------------------------
    def __enter__(self) -> LabelStudioServer:
        env = dict(
            os.environ,
            LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
            LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=str(self.document_root),
            # nothing leaves the machine: no version check, analytics or error reports
            LABEL_STUDIO_LATEST_VERSION_CHECK="false",
            LABEL_STUDIO_COLLECT_ANALYTICS="false",
            SENTRY_DSN="",
            FRONTEND_SENTRY_DSN="",
        )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log = open(self.data_dir / "server.log", "w")
        # its own session: the development server forks a reloader child, stopped with the group
        self.process = subprocess.Popen(
            [
                str(self.executable),
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--username",
                USER,
                "--password",
                PASSWORD,
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_healthy()
            self._login()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"label-studio exited with {self.process.returncode}; see {self.data_dir}/server.log"
                )
            try:
                with urllib.request.urlopen(self.base + "/health", timeout=5) as r:
                    if json.loads(r.read()).get("status") == "UP":
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
                pass
            time.sleep(2)
        raise TimeoutError(f"label-studio did not answer /health within {self.start_timeout:.0f} s")

    # -- authentication -----------------------------------------------------------------------
    def _csrf(self) -> str:
        return next(c.value for c in self.cookies if c.name == "csrftoken")

    def _login(self) -> None:
        self.session.open(self.base + "/user/login/").read()
        form = urllib.parse.urlencode(
            {"email": USER, "password": PASSWORD, "csrfmiddlewaretoken": self._csrf()}
        )
        self.session.open(
            urllib.request.Request(
                self.base + "/user/login/",
                data=form.encode(),
                headers={"Referer": self.base + "/user/login/"},
            )
        ).read()
        # a personal access token is made from the logged-in session, then used on its own
        refresh = self._session_json("POST", "/api/token/", {})["token"]
        self.access_token = self.request("POST", "/api/token/refresh/", {"refresh": refresh}, auth=False)[
            "access"
        ]

    def _session_json(self, method: str, path: str, body) -> dict:
        req = urllib.request.Request(
            self.base + path,
            method=method,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "X-CSRFToken": self._csrf(), "Referer": self.base},
        )
        with self.session.open(req) as r:
            return json.loads(r.read())

    # -- REST ---------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body=None, auth: bool = True):
        """JSON in, JSON out; an HTTP error raises with the server's answer."""
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.access_token}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                raw = r.read()
        except urllib.error.HTTPError as err:
            raise RuntimeError(f"{method} {path}: HTTP {err.code}: {err.read()[:1000]!r}") from err
        return json.loads(raw) if raw else None

    def fetch_as_user(self, url: str) -> bytes:
        """What the browser of the logged-in annotator gets for ``url`` (e.g. a task's image)."""
        with self.session.open(self.base + url) as r:
            return r.read()
