"""A real redis-server (the Debian package) for the tests of the shared kv store.

    with redis_server(tmp_path) as url:     # "redis://127.0.0.1:PORT/0", no persistence
        ...

Skips the test, saying how to get it, where redis-server or the redis client is missing.
"""
from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

MISSING = ("redis-server is not installed (Debian package redis-server, listed in scripts/system-packages.txt; "
           "bash scripts/system_packages.sh installs it)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def redis_server(workdir: Path):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(MISSING)
    redis = pytest.importorskip("redis", reason="the redis client is not installed (pip install 'redis>=5.0')")
    port = free_port()
    log = open(workdir / "redis.log", "w")
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=log, stderr=subprocess.STDOUT)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"redis-server did not start:\n{(workdir / 'redis.log').read_text()}")
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()
