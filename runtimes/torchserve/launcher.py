"""How to start, watch and stop a TorchServe (0.12.0) the way the project runs it.

`torchserve_command(...)` returns the argv, environment and working directory. It runs
`python -m ts.model_server --start --foreground --ncs --ts-config FILE --model-store DIR`:
`--foreground` exists in 0.12.0 (`ts/arg_parser.py`): the Python launcher starts the Java frontend and
waits for it, so the process can be supervised like the other servers. The launcher does not pass a
signal on to Java, though, and Java starts one Python worker per model worker: start it in a session
of its own (`start_new_session=True`) and stop the whole process group (`stop_process_group`), which
`TorchServeProcess` does. `torchserve --stop` would need the same `TEMP` and working directory, and
only signals Java.

Everything TorchServe writes lands under the workdir: `key_file.json` (the JVM's working directory),
`logs/` (`LOG_LOCATION`, `METRICS_LOCATION`), and `tmp/` (`TEMP` for the JVM, `TMPDIR` for the Python
launcher's PID file `.model_server.pid`, the unpacked archives and the worker sockets), so two
TorchServes with different workdirs never meet.

Readiness: `GET /ping` (it too needs the inference key when token authorization is on: 400 without)
answers 200 `{"status": "Healthy"}`, but in 0.12.0 seconds before the workers have loaded the models
(seen in its log); a model's own state is `GET /models/{name}` on the management API (management key),
each worker `"status": "READY"`, which `TorchServeProcess` also waits for when told the models.

Keys: with token authorization on, TorchServe writes `key_file.json` (mode 0600) in its working
directory at start: `{"management": {"key", "expiration time"}, "inference": {...}, "API": {"key"}}`.
Clients send `Authorization: Bearer <inference key>`; a missing or wrong key gets HTTP 400
`InvalidKeyException`. The inference and management keys expire after `token_expiration_min`; the API
key renews them (`GET <management>/token?type=inference`, `Authorization: Bearer <API key>`), which
rewrites the file. `read_keys` reads it with the project's one key-file parser
(`gateway.backends.credentials.parse_key_file`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, Self

from gateway.backends.credentials import TorchServeKeys, parse_key_file
from runtimes.torchserve.config import TorchServeConfig, write_config

KEY_FILE: Final = "key_file.json"
STOP_TIMEOUT_S: Final = 15.0


@dataclass(frozen=True, slots=True)
class TorchServeCommand:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    config_file: Path
    key_file: Path


def torchserve_command(
    config: TorchServeConfig, workdir: Path, *, python: str | None = None
) -> TorchServeCommand:
    """Writes `<workdir>/config.properties` and returns the command that serves it from `workdir`.

    `python`: the interpreter of the environment TorchServe is installed in (default: this one); its
    workers run with it too.
    """
    workdir = workdir.resolve()
    # TorchServe runs from `workdir`: a relative model store (`make up`'s `.local/...`) would not be found.
    config = replace(config, model_store=config.model_store.resolve())
    for sub in ("logs", "tmp"):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    config_file = write_config(config, workdir / "config.properties")
    argv = [
        python or sys.executable,
        "-m",
        "ts.model_server",
        "--start",
        "--foreground",
        "--ncs",
        "--ts-config",
        str(config_file),
        "--model-store",
        str(config.model_store),
    ]
    tmp = str(workdir / "tmp")
    env = {
        **os.environ,
        "LOG_LOCATION": str(workdir / "logs"),
        "METRICS_LOCATION": str(workdir / "logs"),
        "TEMP": tmp,
        "TMPDIR": tmp,
        "TMP": tmp,
    }
    env.pop("TS_CONFIG_FILE", None)  # it would override --ts-config
    return TorchServeCommand(argv, env, workdir, config_file, workdir / KEY_FILE)


def read_keys(key_file: Path) -> TorchServeKeys:
    """The keys in TorchServe's `key_file.json` (`credentials.parse_key_file` of its text).

    Raises:
        OSError: The file cannot be read.
        ValueError: It is not (or not yet: half-written) a key file.
    """
    return parse_key_file(key_file.read_text(encoding="utf-8"))


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM to the process group `proc` leads (Java's shutdown hook stops its workers), SIGKILL
    to what is left after `timeout_s`. `proc` must have been started with `start_new_session=True`."""
    deadline = time.monotonic() + timeout_s
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    # The launcher exits at once; Java and its workers, in the same group, may take longer.
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader: a zombie still counts as a member of its group
        if not _group_alive(proc.pid):
            break
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TorchServeProcess:
    """A supervised TorchServe: `start()` returns once it serves: `/ping` healthy with the keys it wrote and,
    when `models` are named, each with a READY worker on the management API (TorchServe 0.12.0 answers
    `/ping` healthy seconds before its workers have loaded the models)."""

    def __init__(
        self,
        command: TorchServeCommand,
        inference_url: str,
        *,
        management_url: str = "",
        models: tuple[str, ...] = (),
    ) -> None:
        self.command = command
        self.inference_url = inference_url
        self.management_url = management_url
        self.models = models
        self.proc: subprocess.Popen[bytes] | None = None
        self.keys: TorchServeKeys | None = None
        self.started_in_s: float | None = None

    def start(self, timeout_s: float = 120.0) -> Self:
        """Starts TorchServe and returns once it serves. RuntimeError if it exits first or is not ready
        within `timeout_s`; its whole process group is stopped before that (or any other) error."""
        started = time.monotonic()
        # TorchServe writes new keys at every start: a key file left by an earlier run in this workdir
        # would be read first and never pass /ping.
        self.command.key_file.unlink(missing_ok=True)
        self.keys = None
        log = (self.command.cwd / "logs" / "stdout.log").open("ab")
        self.proc = subprocess.Popen(
            self.command.argv,
            env=self.command.env,
            cwd=self.command.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        try:
            self._wait_ready(started + timeout_s, timeout_s)
        except BaseException:
            # The launcher may be gone while Java or its workers, in its process group, live on.
            self.stop()
            raise
        self.started_in_s = time.monotonic() - started
        return self

    def _wait_ready(self, deadline: float, timeout_s: float) -> None:
        """Returns once TorchServe serves; RuntimeError if it exits first or is not ready by `deadline`."""
        assert self.proc is not None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"TorchServe exited with {self.proc.returncode}; see {self.log_path}")
            if self.keys is None and self.command.key_file.is_file():
                with contextlib.suppress(OSError, ValueError):  # half-written: read it again next time
                    self.keys = read_keys(self.command.key_file)
            if (
                self.keys is not None
                and _healthy(f"{self.inference_url}/ping", self.keys.inference)
                and all(self._worker_ready(model) for model in self.models)
            ):
                return
            time.sleep(0.1)
        raise RuntimeError(f"TorchServe not healthy after {timeout_s:.0f} s; see {self.log_path}")

    def _worker_ready(self, model: str) -> bool:
        """Whether the management API shows a READY worker for `model`."""
        assert self.keys is not None
        request = urllib.request.Request(
            f"{self.management_url}/models/{model}",
            headers={"Authorization": f"Bearer {self.keys.management}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                described = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return False
        return any(
            worker.get("status") == "READY"
            for entry in described
            if isinstance(entry, dict)
            for worker in entry.get("workers", [])
            if isinstance(worker, dict)
        )

    @property
    def log_path(self) -> Path:
        return self.command.cwd / "logs"

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> float:
        """Stops the process group; the seconds it took."""
        started = time.monotonic()
        if self.proc is not None:
            stop_process_group(self.proc, timeout_s)
        return time.monotonic() - started

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _healthy(url: str, key: str) -> bool:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
