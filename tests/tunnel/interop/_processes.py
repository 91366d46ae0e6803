"""Child processes for the interop tests: the Go remotedialer peers, started and always stopped.

A `PeerProcess` reads the one-line state reports the Go mains print on stdout ("listening ADDR",
"connected URL", "refused STATUS: BODY", "disconnected: REASON"), waits for them with a timeout and
keeps stderr in a file whose tail goes into every failure message. `stop()` terminates, then kills.
"""

from __future__ import annotations

import asyncio
import os
import signal
import tempfile
from pathlib import Path


class PeerProcess:
    """One running Go peer; create with `PeerProcess.start`."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.name = name
        self.proc = proc
        self.lines: list[str] = []
        self._stderr_path = stderr_path

    @classmethod
    async def start(cls, name: str, args: list[str]) -> PeerProcess:
        fd, path = tempfile.mkstemp(prefix=f"{name}-", suffix=".stderr")
        try:
            proc = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=fd,
                env={**os.environ, "GOTRACEBACK": "single"},
            )
        finally:
            os.close(fd)
        return cls(name, proc, Path(path))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, limit: int = 2000) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    async def expect_line(self, prefix: str, *, timeout_seconds: float = 15.0) -> str:
        """Read stdout until a line starts with `prefix`; fail on timeout or end of output."""
        assert self.proc.stdout is not None
        try:
            async with asyncio.timeout(timeout_seconds):
                while True:
                    raw = await self.proc.stdout.readline()
                    if not raw:
                        break
                    line = raw.decode(errors="replace").rstrip("\n")
                    self.lines.append(line)
                    if line.startswith(prefix):
                        return line
        except TimeoutError:
            raise AssertionError(
                f"{self.name}: no line starting with {prefix!r} within {timeout_seconds}s; "
                f"stdout so far {self.lines!r}; stderr: {self.stderr_tail()}"
            ) from None
        raise AssertionError(
            f"{self.name} ended its output without a line starting with {prefix!r} "
            f"(exit {self.proc.returncode}); stdout {self.lines!r}; stderr: {self.stderr_tail()}"
        )

    async def wait_exit(self, *, timeout_seconds: float = 15.0) -> int:
        try:
            async with asyncio.timeout(timeout_seconds):
                return await self.proc.wait()
        except TimeoutError:
            raise AssertionError(
                f"{self.name} still running after {timeout_seconds}s; stdout {self.lines!r}; "
                f"stderr: {self.stderr_tail()}"
            ) from None

    async def remaining_lines(self, *, timeout_seconds: float = 5.0) -> list[str]:
        """Every stdout line not read yet, once the process has closed its stdout."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_seconds):
            rest = await self.proc.stdout.read()
        self.lines += rest.decode(errors="replace").splitlines()
        return self.lines

    def kill(self) -> None:
        """SIGKILL: an unclean end, no close frame on the tunnel."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def stop(self, *, timeout_seconds: float = 5.0) -> None:
        """Terminate (then kill after the timeout) and reap; safe to call more than once."""
        try:
            if self.proc.returncode is None:
                self.proc.terminate()
                try:
                    async with asyncio.timeout(timeout_seconds):
                        await self.proc.wait()
                except TimeoutError:
                    self.proc.kill()
                    async with asyncio.timeout(timeout_seconds):
                        await self.proc.wait()
        except ProcessLookupError:
            pass
        finally:
            self._stderr_path.unlink(missing_ok=True)
