"""The embedded MongoDB-wire server (`secantusd-py`, from the SecantusDB package) for development
and tests, run as a separate process. The application itself only ever sees a MongoDB URI."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


class EmbeddedDatabaseError(RuntimeError):
    pass


@dataclass
class EmbeddedDatabase:
    process: subprocess.Popen
    port: int

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# The embedded server is pure Python. With the interpreter's default thresholds it ran a full
# (generation 2) collection every few queries, each stalling every connection for about 25 ms:
# that was the p95 at 4-5x the p50 of our HTTP benchmarks. Its old generation is collected
# ten times less often; the young ones as usual.
_LAUNCH = ("import gc, sys; gc.set_threshold(700, 10, 100); from secantus.cli import main; "
           "sys.argv[0] = 'secantusd-py'; sys.exit(main())")


def _command() -> list[str]:
    if importlib.util.find_spec("secantus") is not None:
        return [sys.executable, "-c", _LAUNCH]
    return [_executable()]      # installed elsewhere (on PATH): run as it is


def _executable() -> str:
    local = Path(sys.executable).with_name("secantusd-py")
    if local.exists():
        return str(local)
    found = shutil.which("secantusd-py")
    if found is None:
        raise EmbeddedDatabaseError("secantusd-py not found: install the project with its `embedded` extra")
    return found


def start_embedded(storage_path: str = ":memory:", port: int | None = None, timeout: float = 30) -> EmbeddedDatabase:
    """Start `secantusd-py` on 127.0.0.1 and wait until it accepts connections."""
    port = port or free_port()
    if storage_path != ":memory:":
        Path(storage_path).mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [*_command(), "--host", "127.0.0.1", "--port", str(port), "--storage-path", storage_path,
         "--log-level", "WARNING"],
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return EmbeddedDatabase(process, port)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise EmbeddedDatabaseError(f"secantusd-py did not start on port {port}") from None
            time.sleep(0.05)
