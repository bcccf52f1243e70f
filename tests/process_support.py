"""`nnserve serve` as a real process for the tests: start it on a free port, read its JSON
log lines, stop it with a signal or kill it."""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import grpc

__all__ = ["ServeProcess"]


class ServeProcess:
    """One `python -m nnserve.cli serve --port 0 --log-format json ...` process (metrics and
    REST ports off unless `flags`, which come last, say otherwise).

    `events` holds every JSON log line read so far (a dict each); `port` is the gRPC port
    from the "serving" line.
    """

    def __init__(self, *flags, env=None, wait=True, timeout=90):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "nnserve.cli", "serve", "--host", "127.0.0.1", "--port", "0",
             "--metrics-port", "0", "--http-port", "0", "--threads", "1", "--log-format", "json",
             *flags],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})})
        self._lines = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.events = []
        self.port = None
        if wait:
            self.wait_for("serving", timeout)
            self.port = self.events[-1]["port"]

    def _read(self):
        for line in self.process.stderr:
            self._lines.put(line)
        self._lines.put(None)

    def _drain(self, timeout):
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            return False
        if line is None:
            self._lines.put(None)  # stays at the end for later readers
            return None
        try:
            self.events.append(json.loads(line))
        except ValueError:
            self.events.append({"event": "unparsed", "message": line.rstrip()})
        return True

    def wait_for(self, event, timeout=90):
        """Read log lines until one has `event`; return it (AssertionError if the process ends first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self._drain(0.5)
            if got and self.events[-1].get("event") == event:
                return self.events[-1]
            if got is None:
                break
        raise AssertionError(f"nnserve serve did not log {event!r}: {self.events}")

    def named(self, event):
        """The log lines read so far whose event is `event`."""
        return [e for e in self.events if e.get("event") == event]

    @property
    def target(self):
        return f"127.0.0.1:{self.port}"

    def channel(self):
        return grpc.insecure_channel(self.target, options=[
            ("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20)])

    def finish(self, timeout=30):
        """Wait for the process to end; read its remaining lines; return its exit status."""
        status = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        while self._drain(0):
            pass
        return status

    def terminate(self, timeout=30):
        """SIGTERM, then wait; return the exit status."""
        self.process.send_signal(signal.SIGTERM)
        return self.finish(timeout)

    def kill(self):
        """SIGKILL, then wait; return the exit status (-9)."""
        self.process.kill()
        return self.finish()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.kill()
        else:
            self.finish()
