"""A local Triton Inference Server from the `nvidia-pytriton` wheel (which bundles tritonserver
with the Python backend), for trying the `triton` backend without a GPU node.

The wheel needs numpy<2, so it lives in its own virtual environment (`make triton-env`,
.venv-triton). The Python-backend stub embeds the interpreter: LD_LIBRARY_PATH must hold the
running Python's lib directory.
"""
from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_VENV = ROOT / ".venv-triton"


def _site_packages(venv: Path) -> Path:
    found = sorted(venv.glob("lib/python3*/site-packages"))
    if not found:
        raise FileNotFoundError(f"{venv} is not a virtual environment; run `make triton-env`")
    return found[0]


def available(venv: Path = DEFAULT_VENV) -> bool:
    try:
        return (_site_packages(venv) / "pytriton" / "tritonserver" / "bin" / "tritonserver").exists()
    except FileNotFoundError:
        return False


def start_tritonserver(repo: Path, workdir: Path, *, grpc_port: int, http_port: int, venv: Path = DEFAULT_VENV,
                       log: Path | None = None) -> subprocess.Popen:
    site = _site_packages(venv)
    dist = site / "pytriton" / "tritonserver"
    version = site.parent.name.removeprefix("python")          # e.g. "3.11"
    backends = Path(workdir) / "backends"
    shutil.rmtree(backends, ignore_errors=True)
    shutil.copytree(dist / "backends", backends)
    shutil.copy(dist / "python_backend_stubs" / version / "triton_python_backend_stub", backends / "python")
    libdir = sysconfig.get_config_var("LIBDIR")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "VIRTUAL_ENV": str(venv),
           "LD_LIBRARY_PATH": f"{libdir}:{site / 'nvidia_pytriton.libs'}"}
    cmd = [str(dist / "bin" / "tritonserver"), f"--model-repository={repo}", f"--backend-directory={backends}",
           f"--cache-directory={dist / 'caches'}", "--grpc-address=127.0.0.1", f"--grpc-port={grpc_port}",
           "--http-address=127.0.0.1", f"--http-port={http_port}", "--allow-metrics=false",
           "--backend-config=python,shm-default-byte-size=33554432"]
    out = open(log, "ab") if log else subprocess.DEVNULL
    return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
