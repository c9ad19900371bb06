"""A private redis-server per test: temp dir, no persistence, a free port,
killed at the end, its log printed when the test failed. Never the shared
127.0.0.1:6379."""

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="streamq-py-")
        self.port = free_port()
        self.log = os.path.join(self.dir, "redis.log")
        binary = os.environ.get("STREAMQ_REDIS_SERVER", "redis-server")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--logfile", self.log],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.url = f"redis://127.0.0.1:{self.port}"
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start: {self.read_log()}")
                time.sleep(0.02)
        client.close()

    def read_log(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return "(no log)"

    def stop(self):
        self.process.kill()
        self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "failed_" + report.when, report.failed)


@pytest.fixture
def server(request):
    s = RedisServer()
    yield s
    if getattr(request.node, "failed_call", False):
        print(f"--- redis-server log ({s.url}) ---\n{s.read_log()}")
    s.stop()


def eventually(what, condition, timeout=30.0):
    """Waits for `condition()` to hold, polling; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
