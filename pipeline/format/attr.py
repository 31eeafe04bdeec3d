"""The operating system's append-only and immutable file attributes.

Linux: ``FS_IOC_GETFLAGS`` / ``FS_IOC_SETFLAGS`` ioctls with ``FS_APPEND_FL`` (what
``chattr +a`` sets) and ``FS_IMMUTABLE_FL`` (``chattr +i``), see ioctl_iflags(2).  Setting
or clearing either needs CAP_LINUX_IMMUTABLE.  macOS/BSD: ``os.chflags`` with
``UF_APPEND`` / ``UF_IMMUTABLE``.  Elsewhere nothing can be set and callers are told so.

The policy knob ``PIPELINE_HOT_IMMUTABLE`` is ``auto`` (default: warn once and continue
when the capability is missing), ``require`` (refuse to start) or ``off``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import platform
import stat
import struct
import sys
import warnings
from typing import Any

from pipeline.errors import PipelineError

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x00000010
FS_APPEND_FL = 0x00000020
CAP_LINUX_IMMUTABLE = 9

POLICIES = ("auto", "require", "off")


class AppendOnlyError(PipelineError, OSError):
    """The attribute could not be read or set where the policy requires it."""


def immutable_policy(value: str | None = None) -> str:
    policy = (value if value is not None else os.environ.get("PIPELINE_HOT_IMMUTABLE", "auto")).strip().lower()
    if policy not in POLICIES:
        raise ValueError(f"PIPELINE_HOT_IMMUTABLE must be one of {', '.join(POLICIES)}, not {policy!r}")
    return policy


def _linux_get(fd: int) -> int:
    buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, struct.pack("i", 0))
    return int(struct.unpack("i", buf)[0])


def _linux_set(fd: int, flags: int) -> None:
    fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags))


def _open_for_flags(path: str | os.PathLike[str]) -> int:
    # O_RDONLY works on append-only and immutable files alike; O_NOFOLLOW keeps a
    # symlink from redirecting the ioctl elsewhere.
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))


def get_flags(path: str | os.PathLike[str]) -> int:
    """Raw Linux inode flags of ``path`` (0 on platforms without them)."""
    if sys.platform.startswith("linux"):
        fd = _open_for_flags(path)
        try:
            return _linux_get(fd)
        finally:
            os.close(fd)
    st = os.stat(path)
    flags = getattr(st, "st_flags", 0)
    out = 0
    if flags & getattr(stat, "UF_APPEND", 0):
        out |= FS_APPEND_FL
    if flags & getattr(stat, "UF_IMMUTABLE", 0):
        out |= FS_IMMUTABLE_FL
    return out


def _change(path: str | os.PathLike[str], set_bits: int, clear_bits: int) -> None:
    if sys.platform.startswith("linux"):
        fd = _open_for_flags(path)
        try:
            cur = _linux_get(fd)
            new = (cur & ~clear_bits) | set_bits
            if new != cur:
                _linux_set(fd, new)
        finally:
            os.close(fd)
        return
    if hasattr(os, "chflags"):
        st = os.stat(path)
        cur = getattr(st, "st_flags", 0)
        mapping = {FS_APPEND_FL: getattr(stat, "UF_APPEND", 0), FS_IMMUTABLE_FL: getattr(stat, "UF_IMMUTABLE", 0)}
        new = cur
        for bit, uf in mapping.items():
            if set_bits & bit:
                new |= uf
            if clear_bits & bit:
                new &= ~uf
        if new != cur:
            os.chflags(path, new)
        return
    raise AppendOnlyError(errno.ENOTSUP, "file attributes are not supported on this platform", str(path))


def is_append_only(path: str | os.PathLike[str]) -> bool:
    return bool(get_flags(path) & FS_APPEND_FL)


def is_immutable(path: str | os.PathLike[str]) -> bool:
    return bool(get_flags(path) & FS_IMMUTABLE_FL)


def _apply(path: str | os.PathLike[str], set_bits: int, clear_bits: int, policy: str | None, what: str) -> bool:
    pol = immutable_policy(policy)
    if pol == "off":
        return False
    try:
        _change(path, set_bits, clear_bits)
        return True
    except OSError as exc:
        if pol == "require":
            raise AppendOnlyError(
                exc.errno or errno.EPERM,
                f"cannot make {os.fspath(path)} {what} ({exc.strerror}); PIPELINE_HOT_IMMUTABLE=require "
                "needs CAP_LINUX_IMMUTABLE and a filesystem with inode flags (ext4, xfs, btrfs)",
            ) from exc
        # one warning for the missing capability, not one per attribute (append-only, immutable)
        _warn_once(f"cannot make hot segments append-only or immutable ({exc.strerror}); continuing without "
                   "the OS attribute (set PIPELINE_HOT_IMMUTABLE=require to refuse instead)")
        return False


def protect_append_only(path: str | os.PathLike[str], policy: str | None = None) -> bool:
    """Set the append-only attribute.  True when set, False when unavailable under ``auto``/``off``."""
    return _apply(path, FS_APPEND_FL, 0, policy, "append-only")


def protect_immutable(path: str | os.PathLike[str], policy: str | None = None) -> bool:
    """Seal a file: set immutable and drop append-only, so nothing can be added after its seal."""
    return _apply(path, FS_IMMUTABLE_FL, FS_APPEND_FL, policy, "immutable")


def clear_protection(path: str | os.PathLike[str]) -> None:
    """Clear both attributes (eviction of a confirmed segment).  Raises AppendOnlyError on failure."""
    try:
        if get_flags(path) & (FS_APPEND_FL | FS_IMMUTABLE_FL):
            _change(path, 0, FS_APPEND_FL | FS_IMMUTABLE_FL)
    except OSError as exc:
        raise AppendOnlyError(exc.errno or errno.EPERM, f"cannot clear attributes of {os.fspath(path)}: "
                              f"{exc.strerror}") from exc


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _has_capability() -> bool | None:
    """Whether CAP_LINUX_IMMUTABLE is in this process's effective set (None when unknown)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << CAP_LINUX_IMMUTABLE))
    except OSError:
        return None
    return None


def _in_container() -> bool:
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        return True
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return True
    try:
        with open("/proc/1/cgroup", encoding="utf-8") as f:
            text = f.read()
        return any(word in text for word in ("docker", "kubepods", "containerd", "libpod"))
    except OSError:
        return False


def platform_support_info() -> dict[str, Any]:
    """What this host can do with the attribute, for ``pipeline status`` and diagnostics."""
    system = platform.system()
    notes: list[str] = []
    if system == "Linux":
        cap = _has_capability()
        supported = True
        if cap is False:
            notes.append("CAP_LINUX_IMMUTABLE is missing: segments will not get the append-only attribute "
                         "(add the capability, e.g. securityContext.capabilities.add: [LINUX_IMMUTABLE])")
        notes.append("the filesystem must support inode flags (ext4, xfs, btrfs; not tmpfs before Linux 6.0, "
                     "not overlayfs upper dirs on some kernels)")
    elif system == "Darwin" or hasattr(os, "chflags"):
        supported = True
        cap = os.geteuid() == 0 if hasattr(os, "geteuid") else None
        notes.append("uses UF_APPEND/UF_IMMUTABLE via chflags; the owner or root can clear them")
    else:
        supported = False
        cap = None
        notes.append(f"no append-only attribute on {system}; segments are protected by hashes only")
    return {
        "platform": system,
        "supported": supported,
        "in_container": _in_container(),
        "has_capability": cap,
        "policy": immutable_policy(),
        "notes": notes,
    }


def probe(directory: str | os.PathLike[str]) -> bool:
    """Try to set and clear the attribute on a scratch file in ``directory``."""
    path = os.path.join(directory, f".attr-probe-{os.getpid()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    try:
        _change(path, FS_APPEND_FL, 0)
        _change(path, 0, FS_APPEND_FL)
        return True
    except OSError:
        return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
