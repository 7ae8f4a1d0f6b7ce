"""Reads one process may attempt on another, shared by the sealed task and the outside control.

Each returns normally when the read was permitted and raises OSError with the kernel's errno
when it was refused; `attempt` turns that into a word for the report.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re

#: A JWT's shape: header and payload are base64url JSON objects (`{"` encodes as `eyJ`).
_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


def attempt(action) -> str:
    """'allowed', or the refusal's errno name, or the client error's class and code."""
    try:
        action()
        return "allowed"
    except OSError as err:
        return errno.errorcode.get(err.errno, str(err.errno))
    except Exception as err:
        return f"{type(err).__name__}:{getattr(err, 'code', '')}"


def read(path: str, size: int = 64) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def writable_regions(pid: int):
    """The (start, end) of the process's private writable mappings: heap and anonymous memory,
    where a Python process keeps its objects."""
    with open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            fields = line.split()
            if fields[1].startswith("rw") and (len(fields) < 6 or fields[5] in ("[heap]",)):
                start, end = (int(x, 16) for x in fields[0].split("-"))
                yield start, end


def read_memory(pid: int) -> None:
    """Reads one page of the process through /proc/<pid>/mem."""
    start, _ = next(writable_regions(pid))
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(start)
        mem.read(4096)


def find_tokens(pid: int, limit: int = 256 << 20):
    """JWT-shaped strings in the process's writable memory (at most `limit` bytes read)."""
    found = []
    budget = limit
    with open(f"/proc/{pid}/mem", "rb") as mem:
        for start, end in writable_regions(pid):
            size = min(end - start, budget)
            if size <= 0:
                break
            try:
                mem.seek(start)
                chunk = mem.read(size)
            except OSError:
                continue
            budget -= size
            found.extend(_JWT.findall(chunk))
    return found


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def process_vm_readv(pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    start, _ = next(writable_regions(pid)) if os.access(f"/proc/{pid}/maps", os.R_OK) else (0x400000, 0)
    buf = ctypes.create_string_buffer(16)
    local = _IoVec(ctypes.cast(buf, ctypes.c_void_p), 16)
    remote = _IoVec(ctypes.c_void_p(start), 16)
    if libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0) < 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def ptrace_attach(pid: int) -> None:
    """PTRACE_SEIZE, the kernel's full attach check, made by a short-lived child of the caller
    (same domain, same credentials) that exits at once: a permitted attach must not leave the
    target traced, where each signal it gets would stop it."""
    child = os.fork()
    if child == 0:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.ptrace(0x4206, pid, None, None) == 0  # PTRACE_SEIZE
        os._exit(0 if ok else ctypes.get_errno() or 255)
    _, status = os.waitpid(child, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise OSError(code, os.strerror(code))
