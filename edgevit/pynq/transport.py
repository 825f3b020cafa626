"""How ``edgevit flash`` reaches a board: SSH (``ssh``/``scp`` subprocesses), or a local directory.

:class:`SSHTransport` is the real one. :class:`LocalTransport` treats a directory on this machine as the board's
home directory and runs the "remote" commands locally; the tests use it (with the simulated device) because
there is no board here.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from ..errors import ExecutionError, InputError, ToolMissingError

# [user@]host: a user name, then a host name, an IPv4 address or an IPv6 address. Nothing may start with '-',
# so a "host" can never be read by ssh or scp as an option (-oProxyCommand=... runs a local command).
USER = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,31}"
HOST_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?"
IPV6 = r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}"


def parse_host(text: str) -> tuple[str, str]:
    """Split and check ``[user@]host``; returns (user or "", host).

    Raises
    ------
    InputError
        For anything else (options, spaces, shell characters, empty parts).
    """
    user, at, host = str(text).rpartition("@")
    if (at and not re.fullmatch(USER, user)) or not (re.fullmatch(HOST_NAME, host) or re.fullmatch(IPV6, host)):
        raise InputError(f"--host '{text}' is not user@host (a user name, then a host name or IP address)")
    return user, host


class Transport:
    """Copy a directory to the board and run shell commands there (paths relative to the remote home)."""

    def check(self) -> None:
        """Raise :class:`~edgevit.errors.ExecutionError` if the board cannot be reached."""
        raise NotImplementedError

    def put(self, local: Path, remote_parent: str) -> None:
        """Copy directory ``local`` to ``remote_parent/<local.name>``, replacing what was there."""
        raise NotImplementedError

    def run(self, command: str, timeout_s: float) -> subprocess.CompletedProcess:
        """Run a shell ``command`` on the board; returns the finished process (text output)."""
        raise NotImplementedError


class SSHTransport(Transport):
    """The board at ``host`` (``user@name``) over OpenSSH, non-interactive (keys, no password prompts)."""

    def __init__(self, host: str, port: int | None = None, connect_timeout: int = 10):
        user, name = parse_host(host)
        if port is not None and not 1 <= port <= 65535:
            raise InputError(f"--port {port} is not a TCP port (1-65535)")
        self.host = host
        # scp reads host:path, so an IPv6 address needs brackets there
        self.scp_host = (f"{user}@" if user else "") + (f"[{name}]" if ":" in name else name)
        self.opts = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}"]
        self.port = port

    def __str__(self) -> str:
        return f"{self.host}" + (f" port {self.port}" if self.port else "")

    def _ssh(self, command: str) -> list:
        # "--" ends ssh's options: nothing after it is read as one, whatever it looks like
        return ["ssh", *self.opts, *(["-p", str(self.port)] if self.port else []), "--", self.host, command]

    def check(self) -> None:
        for tool in ("ssh", "scp"):
            if shutil.which(tool) is None:
                raise ToolMissingError(f"`edgevit flash` needs {tool}: apt-get install openssh-client")
        try:
            proc = subprocess.run(self._ssh("true"), capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise ExecutionError(f"board {self} is unreachable: ssh did not answer in 60 s") from None
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise ExecutionError(f"board {self} is unreachable over ssh: {why}")

    def put(self, local: Path, remote_parent: str) -> None:
        target = shlex.quote(f"{remote_parent}/{Path(local).name}")
        proc = self.run(f"rm -rf {target} && mkdir -p {shlex.quote(remote_parent)}", 60)
        if proc.returncode != 0:
            raise ExecutionError(f"cannot prepare {remote_parent} on {self}: {proc.stderr.strip()[-300:]}")
        scp = ["scp", *self.opts, "-r", "-q", *(["-P", str(self.port)] if self.port else []), "--", str(local),
               f"{self.scp_host}:{remote_parent}/"]
        proc = subprocess.run(scp, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ExecutionError(f"copying the bundle to {self} failed: {proc.stderr.strip()[-500:]}")

    def run(self, command: str, timeout_s: float) -> subprocess.CompletedProcess:
        return subprocess.run(self._ssh(command), capture_output=True, text=True, timeout=timeout_s)


class LocalTransport(Transport):
    """A directory on this machine standing in for the board's home directory (for tests and dry runs).

    ``env`` is added to the environment of the commands it runs (e.g. ``EDGEVIT_PYNQ_SIM_LIB``).
    """

    def __init__(self, root: Path, env: dict | None = None):
        self.root, self.env = Path(root), dict(env or {})

    def __str__(self) -> str:
        return f"local directory {self.root}"

    def check(self) -> None:
        if not self.root.is_dir():
            raise ExecutionError(f"board {self} is unreachable: no such directory")

    def put(self, local: Path, remote_parent: str) -> None:
        target = self.root / remote_parent / Path(local).name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(local, target)

    def run(self, command: str, timeout_s: float) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=self.root, capture_output=True, text=True,
                              timeout=timeout_s, env={**os.environ, **self.env})
