"""Each process's metrics files are named by its host and process id: processes of several containers share one
PROMETHEUS_MULTIPROC_DIR (docker-compose.yml), and each container numbers its processes from 1."""

import os
import socket
from pathlib import Path

from infra import metrics


def test_this_process_writes_its_counters_to_files_named_by_host_and_process_id():
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    metrics.ACCEPTED.inc(0)  # its file exists from the first use on

    identifier = f"{socket.gethostname().replace('_', '-')}-{os.getpid()}"
    assert (directory / f"counter_{identifier}.db").exists()
    assert not (directory / f"counter_{os.getpid()}.db").exists()  # the library's default: one per pid
