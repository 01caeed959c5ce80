"""A training worker: `omniforge worker --queues cpu` (or `python -m omniforge_training.jobs.worker`)."""
from __future__ import annotations

import logging
import os
import socket

from .celery_app import QUEUES, make_celery


def run_worker(*, queues: str = "cpu", concurrency: int = 1, loglevel: str = "INFO") -> None:
    unknown = [q for q in queues.split(",") if q not in QUEUES]
    if unknown:
        raise SystemExit(f"unknown queue(s) {unknown}; use a comma-separated list of {list(QUEUES)}")
    logging.basicConfig(level=loglevel, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = make_celery()
    app.worker_main(["worker", "-Q", queues, "-c", str(concurrency), "--loglevel", loglevel,
                     "-n", f"omniforge-{queues.replace(',', '-')}-{os.getpid()}@{socket.gethostname()}",
                     "--without-gossip", "--without-mingle"])


def main() -> None:
    run_worker(queues=os.environ.get("OMNIFORGE_WORKER_QUEUES", "cpu"),
               concurrency=int(os.environ.get("OMNIFORGE_WORKER_CONCURRENCY", "1")))


if __name__ == "__main__":
    main()
