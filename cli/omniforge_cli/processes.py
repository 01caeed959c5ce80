"""The local stack: the model services, the gateway and the training worker as child processes, with pid and log
files under $OMNIFORGE_HOME/run so `omniforge down` and `status` can find them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from omniforge_shared.settings import omniforge_home

# name -> python module run as `python -m module`
COMPONENTS = {"text": "omniforge_text.server", "fusion": "omniforge_fusion.server",
              "image": "omniforge_image.server", "audio": "omniforge_audio.server", "gateway": "omniforge_gateway.app",
              "worker": "omniforge_training.jobs.worker"}


@dataclass
class Process:
    name: str
    pid: int
    log: Path

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        try:  # a zombie child counts as gone
            return Path(f"/proc/{self.pid}/stat").read_text().split()[2] != "Z"
        except OSError:
            return True


def run_dir() -> Path:
    path = omniforge_home() / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def gateway_url() -> str:
    host = os.environ.get("OMNIFORGE_GATEWAY_HOST", "127.0.0.1")
    port = os.environ.get("OMNIFORGE_GATEWAY_PORT", "8000")
    return f"http://{host}:{port}"


def readiness(url: str | None = None, timeout: float = 2.0) -> tuple[bool, dict]:
    try:
        with urllib.request.urlopen(f"{url or gateway_url()}/readyz", timeout=timeout) as r:
            return True, json.loads(r.read())
    except urllib.error.HTTPError as e:
        try:
            return False, json.loads(e.read())
        except ValueError:
            return False, {"error": str(e)}
    except (urllib.error.URLError, OSError) as e:
        return False, {"error": f"gateway not reachable at {url or gateway_url()}: {e}"}


def recorded() -> list[Process]:
    out = []
    for pidfile in sorted(run_dir().glob("*.pid")):
        try:
            out.append(Process(pidfile.stem, int(pidfile.read_text()), run_dir() / f"{pidfile.stem}.log"))
        except ValueError:
            pidfile.unlink()
    return out


def start(*, detach: bool) -> list[Process]:
    procs = []
    for name, module in COMPONENTS.items():
        log = run_dir() / f"{name}.log"
        # a local run: the gateway listens on loopback without keys unless OMNIFORGE_GATEWAY_AUTH says otherwise
        env = {**os.environ, "OMNIFORGE_GATEWAY_AUTH": os.environ.get("OMNIFORGE_GATEWAY_AUTH", "off")}
        with open(log, "ab") as f:
            popen = subprocess.Popen([sys.executable, "-m", module], stdout=f, stderr=subprocess.STDOUT,
                                     start_new_session=detach, env=env)
        (run_dir() / f"{name}.pid").write_text(str(popen.pid))
        procs.append(Process(name, popen.pid, log))
    return procs


def wait_ready(procs: list[Process], timeout: float = 120.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        dead = [p for p in procs if not p.alive()]
        if dead:
            tail = dead[0].log.read_text(errors="replace").splitlines()[-15:]
            raise RuntimeError(f"{dead[0].name} exited during start-up; its log ({dead[0].log}) ends:\n"
                               + "\n".join(tail))
        ok, body = readiness()
        if ok:
            return body
        time.sleep(0.5)
    raise RuntimeError(f"the stack was not ready after {timeout:.0f}s: {readiness()[1]}")


def stop(timeout: float = 15.0) -> list[str]:
    """SIGTERM every recorded process (gateway first), SIGKILL what is left after `timeout`."""
    stopped = []
    procs = sorted(recorded(), key=lambda p: p.name != "gateway")
    for p in procs:
        if p.alive():
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.time() + timeout
    for p in procs:
        while p.alive() and time.time() < deadline:
            time.sleep(0.1)
        if p.alive():
            os.kill(p.pid, signal.SIGKILL)
        (run_dir() / f"{p.name}.pid").unlink(missing_ok=True)
        stopped.append(p.name)
    return stopped
