"""Running untrusted, model-generated Python programs: pre-forked sandbox workers whose verdict no
program can forge.

Nothing here runs unless the caller opted in (`dpt-dist eval-mbpp --allow-code-execution`; the
opt-in is checked by the callers, this module only executes). Stdlib only: every process below
except the harness is this file run as a script by a fresh `python -I`, with an environment that
holds nothing of ours.

    harness (your process) --JSON lines--> judge (one per slot, `sandbox.py --worker`)
        judge: splits the tests, asks the runner for a program process, evaluates every assert
        judge --socket, with the program's ends of two pipes--> runner (`sandbox.py --runner`,
            started by the judge before any test exists, so its memory never holds one)
        runner --fork--> program process: own session, fresh directory, limits, isolation;
            runs the set-up code and the program, then evaluates what the judge asks for
        runner: waits (CPU and wall-clock limits), reads capped output, then kills every
            process the program left and removes its directory

The verdict is decided in the judge, never in the program's process. Each test must be an
`assert` statement (MBPP's are). The judge parses it and sends the program only the smallest
sub-expressions that need the program (calls of its functions, its objects and their attributes;
`_Splitter`): the program process evaluates them after the set-up code and the program and
answers with plain data (None, bool, int, float, complex, str, bytes, list, tuple, dict, set,
frozenset, ranges, dict views; iterators as their items; of any other object only its type's
name and whether it is true), in a strict tagged JSON that the judge decodes with caps on size,
depth and count. The judge evaluates everything else (comparisons, real builtins such as
sorted/set/len, allow-listed stdlib modules such as math) itself, in MBPP's order, and the
program passes only if every assert is true. The expected values never reach the program's
process (nor its memory: the runner that forks it never sees a test), and nothing it writes or
does can turn a false assert into a pass: its only influence is the values of its own
sub-expressions. (MBPP's tests are all single asserts; a test with an assert inside a loop or a
function is refused with a clear error, since only the program could run it.)

Isolation of each program (`isolation_report()` says which of these this machine gives):
- always: its own process and session, a fresh working directory (removed after, whatever it
  did to it), a scrubbed environment, no capability, rlimits on CPU time, address space, file
  size, open files and core dumps, a wall-clock limit, and every process it started killed;
- a minimal root (mount namespace; as root directly, otherwise through an unprivileged user
  namespace): the filesystem it sees is a read-only tmpfs with read-only binds of only what
  Python needs (its installation, the shared libraries, /etc/ld.so.cache and /etc/localtime,
  /dev/null, /dev/zero, /dev/urandom, /dev/random), and a private tmpfs for its slot's program
  directories (nothing a program writes ever reaches the host's disk); no /proc, /tmp, /run,
  /home, /etc/shadow, and so no pathname unix socket but those it makes itself;
- Landlock (Linux >= 5.13), defence in depth: writes only inside its directory, reads only the
  same set, and from ABI 4 / 6 no TCP bind or connect, no abstract unix sockets and no signals
  to processes outside the sandbox;
- a private network namespace (no interfaces but a down loopback) and IPC namespace (SysV
  shared memory, semaphores, message queues and POSIX queues vanish with the program);
- as root: each slot runs its programs under its own unused uid, locked for the pool's life
  (two harnesses never share one), so the process-count limit is exact, nothing of yours can
  be signalled or overwritten, and cleanup is one kill(-1) as that uid;
- not root: in the user namespace the process limit counts the runner and the program's own
  processes; without it, your process count plus the allowance; cleanup walks the runner's
  process tree (the runner is a child subreaper) until nothing is left.
Not isolated: CPU caches and timing, the kernel itself (this is not a VM), and, where no
namespace can be created, whatever Landlock does not cover (UDP, pathname unix sockets).
"""

from __future__ import annotations

import ast
import builtins
import collections.abc
import ctypes
import fcntl
import importlib
import itertools
import json
import os
import queue
import re
import resource
import select
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import types
from array import array
from dataclasses import asdict, dataclass, field

STATUSES = ("passed", "failed", "timeout", "out-of-memory", "syntax-error")
OPT_IN_ERROR = (
    "executing model-generated code is refused without --allow-code-execution "
    "(read the README's 'Executing generated code' section for what the sandbox isolates)"
)

# exit codes of the program process before its tests start (a program can forge these, but only
# ever into a failure: a pass needs the judge's verdict)
_EXIT_EXCEPTION, _EXIT_MEMORY, _EXIT_SYNTAX, _EXIT_EARLY, _EXIT_SETUP = 70, 71, 72, 73, 74
_REQUEST_FD, _REPLY_FD = 3, 4  # the program process's ends of its two pipes to the judge
_UID_BASE = 2_000_000_000  # as root: slots run as free uids from here (DPT_DIST_SANDBOX_UID_BASE)
_UID_LOCK_DIR = "/tmp/dpt-dist-sandbox-uids"  # one flock per uid in use, held by its pool
_SCRUBBED_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
# Imported once in each runner so programs do not pay for them (what MBPP solutions import).
_PRELOAD = [
    "re",
    "math",
    "collections",
    "heapq",
    "itertools",
    "functools",
    "bisect",
    "string",
    "operator",
    "array",
    "copy",
    "fractions",
    "decimal",
    "statistics",
    "random",
    "datetime",
    "cmath",
    "typing",
    "traceback",
]


def _append_tail(buf: bytearray, data: bytes, keep: int) -> None:
    """Captured output is capped: keep (about) the last `keep` bytes."""
    buf += data
    if len(buf) > 2 * keep:
        del buf[:-keep]


@dataclass(frozen=True)
class Limits:
    cpu_seconds: float = 10.0  # CPU time (not wall time: a loaded machine must not fail slow programs)
    wall_seconds: float | None = None  # None: 3 x cpu_seconds + 5 (catches sleeping programs)
    memory_mb: int = 1024  # address space
    max_processes: int = 16  # processes/threads a program may add
    max_file_mb: int = 16  # largest file a program may write
    max_output_kb: int = 16  # captured stdout+stderr kept (the tail)

    def __post_init__(self):
        if self.cpu_seconds <= 0 or (self.wall_seconds is not None and self.wall_seconds <= 0):
            raise ValueError("sandbox limits: time limits must be > 0")
        if self.memory_mb < 64:
            raise ValueError(f"sandbox limits: memory_mb={self.memory_mb} is too small for a Python process (>= 64)")

    @property
    def wall(self) -> float:
        return self.wall_seconds if self.wall_seconds is not None else 3 * self.cpu_seconds + 5


@dataclass
class Result:
    status: str  # one of STATUSES
    error: str  # why it did not pass ("" when it passed)
    output: str  # tail of stdout + stderr
    wall_seconds: float
    cpu_seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


# ---- Linux primitives (ctypes: Python 3.11 has no os.unshare, mount or pivot_root) ---------------
_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNS, _CLONE_NEWIPC, _CLONE_NEWUSER, _CLONE_NEWNET = 0x20000, 0x08000000, 0x10000000, 0x40000000
_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE, _PR_SET_CHILD_SUBREAPER, _PR_SET_NO_NEW_PRIVS = 1, 4, 36, 38
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_NOATIME, _MS_NODIRATIME = 1, 2, 4, 8, 32, 1024, 2048
_MS_BIND, _MS_REC, _MS_PRIVATE, _MS_RELATIME, _MS_STRICTATIME = 4096, 16384, 1 << 18, 1 << 21, 1 << 24
_MNT_DETACH = 2
_SYSCALLS = {"x86_64": {"capset": 126, "pivot_root": 155}, "aarch64": {"capset": 91, "pivot_root": 41}}.get(
    os.uname().machine, {}
)
_SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (same on every arch)


def _prctl(option: int, arg: int) -> bool:
    return _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) == 0


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def c(text):
        return None if text is None else os.fsencode(text)

    _check(_libc.mount(c(source), c(target), c(fstype), ctypes.c_ulong(flags), c(data)), f"mount {target}")


def _signal_name(number: int) -> str:
    """SIGKILL, ... or `signal 40` (real-time signals have no name in signal.Signals)."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _landlock_abi() -> int:
    try:
        return max(0, _libc.syscall(_SYS_LANDLOCK[0], None, ctypes.c_size_t(0), ctypes.c_uint32(1)))
    except Exception:
        return 0


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock(abi: int, read_paths: list[str], write_dir: str) -> None:
    """Confine this process (and its children) for good: see the module docstring."""
    fs_all = (1 << 13) - 1  # execute ... make_sym (ABI 1)
    if abi >= 2:
        fs_all |= 1 << 13  # refer
    if abi >= 3:
        fs_all |= 1 << 14  # truncate
    if abi >= 5:
        fs_all |= 1 << 15  # ioctl_dev
    read = (1 << 0) | (1 << 2) | (1 << 3)  # execute, read_file, read_dir
    fields = [fs_all]
    if abi >= 4:
        fields.append(0b11)  # handle TCP bind + connect, allow none
    if abi >= 6:
        fields.append(0b11)  # scope: abstract unix sockets, signals
    attr = (ctypes.c_uint64 * len(fields))(*fields)
    ruleset = _libc.syscall(
        _SYS_LANDLOCK[0], ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0)
    )
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset")
    rules = [(p, read) for p in read_paths] + [
        (write_dir, fs_all),
        (os.devnull, (1 << 1) | (1 << 2) | ((1 << 14) if abi >= 3 else 0)),
    ]
    for path, access in rules:
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            continue
        if not os.path.isdir(path):
            access &= (1 << 1) | (1 << 2) | (1 << 0) | (1 << 14) | (1 << 15)  # file rights only on a file
        rule = _PathBeneath(access, fd)
        _libc.syscall(_SYS_LANDLOCK[1], ruleset, 1, ctypes.byref(rule), 0)
        os.close(fd)
    if not _prctl(_PR_SET_NO_NEW_PRIVS, 1) or _libc.syscall(_SYS_LANDLOCK[2], ruleset, 0) != 0:
        raise OSError(ctypes.get_errno(), "landlock_restrict_self")
    os.close(ruleset)


def _drop_capabilities() -> None:
    """No capability in any set (a process in a fresh user namespace holds all of them there)."""
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    if "capset" in _SYSCALLS:
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable (two words each): none
        _check(_libc.syscall(_SYSCALLS["capset"], ctypes.byref(header), ctypes.byref(data)), "capset")


def _processes(proc_fd: int | None = None) -> list[tuple[int, int, int]]:
    """(pid, ppid, real uid) of every process; `proc_fd` is /proc opened before a pivot_root hid it."""
    own = proc_fd is None
    if own:
        proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    out = []
    try:
        for name in os.listdir(proc_fd):
            if not name.isdigit():
                continue
            try:
                with open(os.open(f"{name}/status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd)) as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
                out.append((int(name), int(fields["PPid"]), int(fields["Uid"].split()[0])))
            except (OSError, KeyError, ValueError):
                continue
    finally:
        if own:
            os.close(proc_fd)
    return out


def _descendants(root: int, proc_fd: int | None = None) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in _processes(proc_fd):
        children.setdefault(ppid, []).append(pid)
    out, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack += children.get(pid, [])
    return out


def _kill_uid(uid: int) -> None:
    """As root: SIGKILL every process of `uid`, atomically against fork (kill(-1) as that uid)."""
    helper = os.fork()
    if helper == 0:
        try:
            os.setresuid(uid, uid, uid)
            os.kill(-1, signal.SIGKILL)
        except BaseException:  # noqa: BLE001
            pass
        os._exit(0)
    os.waitpid(helper, 0)


# ---- removing whatever a program left ------------------------------------------------------------
def _remove_tree(path: str) -> bool:
    """Remove `path` whatever a program did to it: thousands of levels, mode 000 directories,
    entries it cannot list. Iterative and by directory descriptors (never recursion, never a
    path longer than one name, at most three descriptors open); never raises. True if gone."""
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return True
        parent, name = os.path.split(os.path.abspath(path))
        top = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        return _remove_below(top, name)
    except OSError:
        return False
    finally:
        os.close(top)


def _remove_below(top: int, name: str) -> bool:
    fd = _enter_dir(top, name)
    if fd is None:
        return _rmdir(top, name)
    path, pending = [name], [_unlink_files(fd)]  # names from `top` down to fd; subdirectories left per level
    while True:
        if pending[-1]:
            child = pending[-1].pop()
            child_fd = _enter_dir(fd, child)
            if child_fd is None:
                _rmdir(fd, child)
                continue
            os.close(fd)
            fd = child_fd
            path.append(child)
            pending.append(_unlink_files(fd))
            continue
        pending.pop()
        done = path.pop()
        up = top if not path else os.open("..", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=fd)
        os.close(fd)
        if not path:
            return _rmdir(top, done)
        fd = up
        _rmdir(fd, done)


def _enter_dir(parent: int, name: str) -> int | None:
    """A descriptor of directory `name` that we may list and delete in (made 0700 if needed)."""
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=parent)
    except PermissionError:
        try:  # lstat said directory, and nothing that could swap it for a symlink is alive
            os.chmod(name, 0o700, dir_fd=parent)
            fd = os.open(name, flags, dir_fd=parent)
        except OSError:
            return None
    except OSError:
        return None
    try:
        if os.fstat(fd).st_mode & 0o700 != 0o700:
            os.fchmod(fd, 0o700)
    except OSError:
        pass
    return fd


def _unlink_files(fd: int) -> list[str]:
    """Unlink every non-directory entry of `fd`; -> its subdirectories' names."""
    subdirs = []
    try:
        with os.scandir(fd) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        subdirs.append(entry.name)
                    else:
                        os.unlink(entry.name, dir_fd=fd)
                except OSError:
                    pass
    except OSError:
        pass
    return subdirs


def _rmdir(parent: int, name: str) -> bool:
    try:
        os.rmdir(name, dir_fd=parent)
        return True
    except OSError:
        return False


# ---- plain data: the only thing a program's process hands the judge -----------------------------
_MAX_FRAME = 8 << 20  # bytes of one message between a program and the judge
_MAX_DEPTH = 100  # nesting of containers in one value
_MAX_ITEMS = 1_000_000  # values in one message
_MAX_ITER = 100_000  # items taken from an iterator a test receives
_MAX_INT_HEX = 250_000  # hex digits of one int (1 Mbit: the judge's arithmetic on it stays fast)
_HEX_INT = re.compile(r"-?[0-9a-f]+")
_DICT_ITEMS = type({}.items())
# containers encoded as their items, in this order of isinstance checks
_SEQUENCE_TAGS = ((list, "l"), (tuple, "t"), (set, "S"), (frozenset, "F"), (type({}.keys()), "dk"))
_SEQUENCE_TAGS += ((type({}.values()), "dv"),)


class _NotPlainData(Exception):
    pass


class _Malformed(Exception):
    pass


def _encode(value, budget: list[int], depth: int = 0):
    """A value as tagged JSON; subclasses become their base type (a namedtuple a tuple, a Counter a
    dict), iterators the list of their items, any other object its type's name and truth; raises
    _NotPlainData past the caps. Runs in the program's process, where nothing is trusted: the
    judge's `_decode` is the check."""
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        raise _NotPlainData(f"a value of more than {_MAX_ITEMS} items or nested deeper than {_MAX_DEPTH}")
    if value is None or value is True or value is False:
        return ["n"] if value is None else ["b", value]
    if isinstance(value, int):
        text = format(int.__int__(value), "x")
        if len(text) > _MAX_INT_HEX:
            raise _NotPlainData(f"an int of more than {4 * _MAX_INT_HEX} bits")
        return ["i", text]
    if isinstance(value, float):
        return ["f", float.hex(value)]
    if isinstance(value, complex):
        return ["c", float.hex(value.real), float.hex(value.imag)]
    if isinstance(value, str):
        return ["s", str.__str__(value)]
    if isinstance(value, (bytes, bytearray)):
        return ["y" if isinstance(value, bytes) else "ba", bytes(value).hex()]
    if isinstance(value, range):
        return ["r", *(format(v, "x") for v in (value.start, value.stop, value.step))]
    if isinstance(value, (dict, _DICT_ITEMS)):
        pairs = dict.items(value) if isinstance(value, dict) else value
        tag = "d" if isinstance(value, dict) else "di"
        return [tag, [[_encode(k, budget, depth + 1), _encode(v, budget, depth + 1)] for k, v in pairs]]
    for kind, tag in _SEQUENCE_TAGS:
        if isinstance(value, kind):
            return [tag, [_encode(v, budget, depth + 1) for v in value]]
    if isinstance(value, collections.abc.Iterator):
        items = list(itertools.islice(value, _MAX_ITER + 1))
        if len(items) > _MAX_ITER:
            raise _NotPlainData(f"an iterator of more than {_MAX_ITER} items")
        return ["g", [_encode(v, budget, depth + 1) for v in items]]
    try:  # anything else: only its type's name and its truth (`assert re.match(...)` is MBPP too)
        truth = bool(value)
    except Exception:  # noqa: BLE001
        truth = None
    return ["o", type(value).__name__[:100], truth]


def _text(item) -> str:
    if type(item) is not str:
        raise _Malformed("expected a string")
    return item


def _hex_int(item) -> int:
    text = _text(item)
    if len(text) > _MAX_INT_HEX + 1 or not _HEX_INT.fullmatch(text):
        raise _Malformed("not an int")
    return int(text, 16)


def _hex_float(item) -> float:
    text = _text(item)
    if len(text) > 64:
        raise _Malformed("not a float")
    return float.fromhex(text)  # ValueError / OverflowError: _decode_value makes them _Malformed


def _boolean(item) -> bool:
    if type(item) is not bool:
        raise _Malformed("not a bool")
    return item


class _ProgramObject:
    """What the judge sees of a value that is not plain data: whether it is true, as the program
    says (it could as well have returned True or False). Equal to nothing but itself, its text
    says nothing the program chose, and nothing else can be done with it. The type's name is
    kept only for error messages."""

    __slots__ = ("type_name", "truth")

    def __init__(self, type_name: str, truth: bool | None):
        self.type_name, self.truth = type_name, truth

    def __bool__(self) -> bool:
        if self.truth is None:
            raise TypeError(f"the program's {self.type_name} object could not say whether it is true")
        return self.truth

    def __repr__(self) -> str:
        return "<an object of the program's>"


class _Decoding:
    """One value's decoding: what is left of the item budget, and the program objects met."""

    def __init__(self):
        self.left, self.objects = _MAX_ITEMS, []

    def program_object(self, args: list) -> _ProgramObject:
        if args[1] is not None and type(args[1]) is not bool:
            raise _Malformed("an object's truth is not a bool")
        self.objects.append(_text(args[0])[:100])
        return _ProgramObject(self.objects[-1], args[1])


def _items(item, state: _Decoding, depth: int) -> list:
    if type(item) is not list:
        raise _Malformed("expected a list")
    return [_decode(v, state, depth) for v in item]


def _pairs(item, state: _Decoding, depth: int) -> list[tuple]:
    if type(item) is not list:
        raise _Malformed("expected a list")
    out = []
    for pair in item:
        if type(pair) is not list or len(pair) != 2:
            raise _Malformed("expected a key-value pair")
        out.append((_decode(pair[0], state, depth), _decode(pair[1], state, depth)))
    return out


# tag -> (number of arguments, builder(arguments, state, depth))
_DECODERS = {
    "n": (0, lambda a, s, d: None),
    "b": (1, lambda a, s, d: _boolean(a[0])),
    "i": (1, lambda a, s, d: _hex_int(a[0])),
    "f": (1, lambda a, s, d: _hex_float(a[0])),
    "c": (2, lambda a, s, d: complex(_hex_float(a[0]), _hex_float(a[1]))),
    "s": (1, lambda a, s, d: _text(a[0])),
    "y": (1, lambda a, s, d: bytes.fromhex(_text(a[0]))),
    "ba": (1, lambda a, s, d: bytearray.fromhex(_text(a[0]))),
    "r": (3, lambda a, s, d: range(_hex_int(a[0]), _hex_int(a[1]), _hex_int(a[2]))),
    "l": (1, lambda a, s, d: _items(a[0], s, d)),
    "t": (1, lambda a, s, d: tuple(_items(a[0], s, d))),
    "S": (1, lambda a, s, d: set(_items(a[0], s, d))),
    "F": (1, lambda a, s, d: frozenset(_items(a[0], s, d))),
    "g": (1, lambda a, s, d: iter(_items(a[0], s, d))),
    "d": (1, lambda a, s, d: dict(_pairs(a[0], s, d))),
    "dk": (1, lambda a, s, d: dict.fromkeys(_items(a[0], s, d)).keys()),
    "dv": (1, lambda a, s, d: dict(enumerate(_items(a[0], s, d))).values()),
    "di": (1, lambda a, s, d: dict(_pairs(a[0], s, d)).items()),
    "o": (2, lambda a, s, d: s.program_object(a)),
}


def _decode(node, state: _Decoding, depth: int = 0):
    state.left -= 1
    if state.left < 0 or depth > _MAX_DEPTH + 1:
        raise _Malformed("a value too large or nested too deep")
    if type(node) is not list or not node or type(node[0]) is not str or node[0] not in _DECODERS:
        raise _Malformed("not a tagged value")
    arity, build = _DECODERS[node[0]]
    if len(node) != arity + 1:
        raise _Malformed(f"a {node[0]!r} value with {len(node) - 1} parts")
    return build(node[1:], state, depth + 1)


def _decode_value(node, state: _Decoding | None = None):
    """(in the judge) whatever JSON a program's process wrote -> a plain value (or program
    objects in it), or _Malformed: never anything else (an unhashable set member, a bad hex
    digit, a range of step 0, ...)."""
    try:
        return _decode(node, state or _Decoding())
    except _Malformed:
        raise
    except (TypeError, ValueError, OverflowError, RecursionError, MemoryError) as err:
        raise _Malformed(f"{type(err).__name__}: {str(err)[:200]}") from None


def _frame(message) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode()
    return len(data).to_bytes(4, "big") + data


def _read_exactly(fd: int, size: int) -> bytes | None:
    chunks, got = [], 0
    while got < size:
        data = os.read(fd, min(size - got, 1 << 20))
        if not data:
            return None
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


# judge <-> runner: the same frames over a unix socket; a job carries the program's two pipe ends
def _send_message(sock: socket.socket, message, fds=()) -> None:
    data = _frame(message)
    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array("i", fds))] if fds else []
    sent = sock.sendmsg([data], ancillary)
    if sent < len(data):
        sock.sendall(data[sent:])


def _receive_message(sock: socket.socket):
    """-> (message, received descriptors); (None, []) when the other side has gone."""
    header, fds, _, _ = socket.recv_fds(sock, 4, 4)
    while header and len(header) < 4:
        more = sock.recv(4 - len(header))
        if not more:
            break
        header += more
    if len(header) < 4:
        return None, fds
    size, chunks = int.from_bytes(header, "big"), []
    while size > 0:
        data = sock.recv(min(size, 1 << 20))
        if not data:
            return None, fds
        chunks.append(data)
        size -= len(data)
    return json.loads(b"".join(chunks)), fds


# ---- splitting the tests between the judge and the program ---------------------------------------
_SAFE_BUILTIN_NAMES = (  # noqa: SIM905  (a list of 46 names reads better as text)
    "abs all any ascii bin bool bytearray bytes callable chr complex dict divmod enumerate filter float format "
    "frozenset hash hex int isinstance issubclass iter len list map max min next object oct ord pow range repr "
    "reversed round set slice sorted str sum tuple type zip"
).split()
# The judge's builtins: the real ones, without those that reach the program's world (open, print,
# getattr, globals, __import__, ...): a test that names one of those is asking the program.
_SAFE_BUILTINS = {name: getattr(builtins, name) for name in _SAFE_BUILTIN_NAMES}
_SAFE_BUILTINS.update(
    {name: v for name, v in vars(builtins).items() if isinstance(v, type) and issubclass(v, BaseException)}
)
_SAFE_BUILTINS.update(Ellipsis=Ellipsis, NotImplemented=NotImplemented)
# Modules a test may use in the judge (the real ones, whatever the program did to its copies);
# sys for MBPP 596's sys.getsizeof.
_TRUSTED_MODULES = frozenset(
    "bisect cmath collections copy datetime decimal fractions functools heapq itertools math operator re "  # noqa: SIM905
    "statistics string sys".split()
)
_HOLE = " hole"  # the judge's name for "ask the program"; not an identifier, so no test can use it


def _import_allowed(name, globals=None, locals=None, fromlist=(), level=0):
    if level != 0 or name.split(".")[0] not in _TRUSTED_MODULES:
        raise ImportError(f"the judge imports only allow-listed modules, not {name!r}")
    return builtins.__import__(name, globals, locals, fromlist, level)


_JUDGE_BUILTINS = {**_SAFE_BUILTINS, "__import__": _import_allowed}


class _UnsupportedTests(Exception):
    pass


@dataclass
class _Step:
    """One test statement: an assert the judge evaluates, or a statement the program runs."""

    number: int  # 1-based position among the test statements
    source: str
    test: types.CodeType | None = None  # an assert's expression, holes calling the program
    message: types.CodeType | None = None  # an assert's message
    program_step: int | None = None  # other statements: the program's step that runs it
    judge_code: types.CodeType | None = None  # ... and, for imports of allow-listed modules, the judge's copy


@dataclass
class _Plan:
    steps: list[_Step] = field(default_factory=list)
    program_steps: list[list[str]] = field(default_factory=list)  # [kind ("eval"/"exec"), source] for the program
    eager: int = 0  # how many leading program steps run whatever the judge finds (asked for all at once)
    judge_imports: list[types.CodeType] = field(default_factory=list)  # set-up imports the judge repeats
    modules: list[str] = field(default_factory=list)  # allow-listed modules the asserts name


class _Splitter:
    """Splits test code between the judge and the program.

    A sub-expression needs the program when it is a name the judge does not resolve itself, or an
    attribute, subscript or call of one: `f(x)`, `root.left.val`, `Pair(1, 2)`, `data[0]`. Each
    maximal one becomes a hole: the program evaluates `lambda <judge-local names it uses>: (...)`
    and returns plain data, the judge evaluates everything around it. The judge resolves: its safe
    real builtins, allow-listed modules, names that set-up code or tests import from those, and
    the variables of the test's own comprehensions and lambdas. `program_names` are names the tests
    mean as the program's even where they shadow one of these (MBPP 126 asks for `sum`).

    A hole is eager when Python evaluates it whatever the values before it are, in the order the
    holes were found, and it needs no judge-local value: the judge asks for a run of eager holes
    at once instead of one round trip each (the program still evaluates them in MBPP's order, and
    the verdict still stops at the first failing assert). Anything after `and`/`or`, in a
    conditional, a later comparison of a chain, a dict display, a comprehension, a lambda or an
    assert message is lazy: asked for only if the judge's evaluation reaches it."""

    def __init__(self, tests: str, program_names):
        self.tests = tests
        self.program_names = frozenset(program_names)
        self.trusted = (set(_SAFE_BUILTINS) | _TRUSTED_MODULES) - self.program_names
        self.program_steps: list[list[str]] = []
        self.eager: list[bool] = []
        self.modules: set[str] = set()

    def program_step(self, kind: str, source: str, eager: bool) -> int:
        self.program_steps.append([kind, source])
        self.eager.append(eager)
        return len(self.program_steps) - 1

    def source(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.tests, node) or ast.unparse(node)

    def judge_import(self, statement: ast.stmt) -> bool:
        """Whether `statement` imports only allow-listed modules (then its names are the judge's too)."""
        if isinstance(statement, ast.Import):
            modules = [alias.name for alias in statement.names]
            bound = [alias.asname or alias.name.split(".")[0] for alias in statement.names]
        elif isinstance(statement, ast.ImportFrom) and statement.level == 0 and statement.module:
            modules = [statement.module]
            bound = [alias.asname or alias.name for alias in statement.names]
        else:
            return False
        if not all(module.split(".")[0] in _TRUSTED_MODULES for module in modules):
            return False
        if "*" in bound:
            try:
                module = importlib.import_module(modules[0])
            except ImportError:
                return False
            bound = list(getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")]))
        self.trusted |= set(bound) - self.program_names
        return True

    def split_assert(self, statement: ast.Assert, number: int) -> _Step:
        source = self.source(statement)
        test = _compile_expression(self.split(statement.test, frozenset(), lazy=False))
        message = None
        if statement.msg is not None:
            message = _compile_expression(self.split(statement.msg, frozenset(), lazy=True))
        return _Step(number, source, test=test, message=message)

    def _needs_program(self, node: ast.AST, local: frozenset) -> bool:
        while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
            node = node.func if isinstance(node, ast.Call) else node.value
        return isinstance(node, ast.Name) and node.id not in local and node.id not in self.trusted

    def split(self, node: ast.AST, local: frozenset, lazy: bool) -> ast.AST:
        """`node` with every maximal sub-expression that needs the program replaced by a hole."""
        if isinstance(node, ast.expr) and self._needs_program(node, local):
            return self._hole(node, local, lazy)
        if isinstance(node, ast.Name) and node.id in _TRUSTED_MODULES and node.id not in local:
            self.modules.add(node.id)
        if isinstance(node, ast.NamedExpr):  # binds in the judge's namespace
            self.trusted.add(node.target.id)
        if isinstance(node, ast.Lambda):
            return self._split_lambda(node, local)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self._split_comprehension(node, local, lazy)
        for name, value in ast.iter_fields(node):
            if isinstance(value, ast.AST):
                setattr(node, name, self.split(value, local, lazy or self._conditional(node, name, 0)))
            elif isinstance(value, list):
                children = enumerate(value)
                setattr(node, name, [self._split_item(node, name, i, v, local, lazy) for i, v in children])
        return node

    def _split_item(self, node: ast.AST, name: str, index: int, value, local: frozenset, lazy: bool):
        if not isinstance(value, ast.AST):
            return value
        return self.split(value, local, lazy or self._conditional(node, name, index))

    @staticmethod
    def _conditional(node: ast.AST, field_name: str, index: int) -> bool:
        """Whether Python may skip, or evaluate out of the found order, this child of `node`."""
        if isinstance(node, ast.BoolOp):
            return index > 0
        if isinstance(node, ast.IfExp):
            return field_name != "test"
        if isinstance(node, ast.Compare):
            return field_name == "comparators" and index > 0
        return isinstance(node, ast.Dict)

    def _split_lambda(self, node: ast.Lambda, local: frozenset) -> ast.AST:
        args = node.args
        args.defaults = [self.split(d, local, lazy=True) for d in args.defaults]
        args.kw_defaults = [None if d is None else self.split(d, local, lazy=True) for d in args.kw_defaults]
        every = [*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg]
        node.body = self.split(node.body, local | {a.arg for a in every if a is not None}, lazy=True)
        return node

    def _split_comprehension(self, node: ast.AST, local: frozenset, lazy: bool) -> ast.AST:
        scope = local  # the first iterable is evaluated outside, the rest see the earlier targets
        for position, generator in enumerate(node.generators):
            generator.iter = self.split(generator.iter, scope, lazy or position > 0)
            scope = scope | {n.id for n in ast.walk(generator.target) if isinstance(n, ast.Name)}
            generator.ifs = [self.split(condition, scope, lazy=True) for condition in generator.ifs]
        if isinstance(node, ast.DictComp):
            node.key, node.value = self.split(node.key, scope, lazy=True), self.split(node.value, scope, lazy=True)
        else:
            node.elt = self.split(node.elt, scope, lazy=True)
        return node

    def _hole(self, node: ast.expr, local: frozenset, lazy: bool) -> ast.AST:
        params = sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id in local})
        source = f"lambda {', '.join(params)}: ({self.source(node)}\n)"  # the newline ends a trailing comment
        index = self.program_step("eval", source, eager=not lazy and not params)
        arguments = [ast.Constant(index)] + [ast.Name(p, ast.Load()) for p in params]
        call = ast.Call(ast.Name(_HOLE, ast.Load()), arguments, [])
        for new in (call, call.func, *arguments):  # compile() wants a position on every node
            ast.copy_location(new, node)
        return call


def _compile_expression(node: ast.AST) -> types.CodeType:
    return compile(ast.Expression(node), "<tests>", "eval")


def _compile_statement(statement: ast.stmt) -> types.CodeType:
    return compile(ast.Module([statement], type_ignores=[]), "<tests>", "exec")


_PLANS: dict[tuple, _Plan] = {}  # the last plans made (every sample of a problem has the same tests)


def _plan_tests(setup: str, tests: str, program_names=()) -> _Plan:
    """The judge's plan for one job (see _Splitter); _UnsupportedTests for an assert it cannot
    judge outside the program (inside a loop, a function, ...)."""
    key = (setup, tests, tuple(program_names))
    if key not in _PLANS:
        if len(_PLANS) >= 256:
            _PLANS.clear()
        _PLANS[key] = _make_plan(setup, tests, program_names)
    return _PLANS[key]


def _make_plan(setup: str, tests: str, program_names) -> _Plan:
    splitter, plan = _Splitter(tests, program_names), _Plan()
    try:
        setup_statements = ast.parse(setup).body
    except (SyntaxError, ValueError):
        setup_statements = []  # the program's process reports it
    plan.judge_imports = [_compile_statement(s) for s in setup_statements if splitter.judge_import(s)]
    try:
        statements = ast.parse(tests).body
    except (SyntaxError, ValueError) as err:
        raise _UnsupportedTests(f"the tests do not compile: {err}") from None
    for number, statement in enumerate(statements, 1):
        if isinstance(statement, ast.Assert):
            plan.steps.append(splitter.split_assert(statement, number))
        elif any(isinstance(node, ast.Assert) for node in ast.walk(statement)):
            raise _UnsupportedTests(
                f"test statement {number} has an assert inside a {type(statement).__name__} statement: only "
                "top-level asserts can be judged outside the program"
            )
        else:
            judge_code = _compile_statement(statement) if splitter.judge_import(statement) else None
            source = splitter.source(statement)
            step = splitter.program_step("exec", source, eager=True)
            plan.steps.append(_Step(number, source, program_step=step, judge_code=judge_code))
    plan.program_steps, plan.modules = splitter.program_steps, sorted(splitter.modules)
    plan.eager = next((i for i, eager in enumerate(splitter.eager) if not eager), len(splitter.eager))
    return plan


# ---- the minimal root: what a program's filesystem view holds ----------------------------------
_LIBRARY_DIRS = ("/lib", "/lib64", "/lib32", "/libx32", "/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/local/lib")
_READ_FILES = ("/etc/ld.so.cache", "/etc/localtime", "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random")
_SHARED_OBJECT = re.compile(r"\.so(\.[0-9.]+)?$")


def _mapped_libraries() -> set[str]:
    """Real paths of the shared objects this process has mapped (the interpreter's own libraries)."""
    found = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.rstrip("\n").split(maxsplit=5)
                if len(parts) == 6 and parts[5].startswith("/") and _SHARED_OBJECT.search(parts[5]):
                    found.add(os.path.realpath(parts[5]))
    except OSError:
        pass
    return found


def _read_sources() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """What a program may read, as (path it sees, real path) pairs, and the top-level symlinks to
    recreate (/lib -> usr/lib): the Python installation (its real path), the directories of the
    libraries it has mapped and the standard library directories, and a few single files."""
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}  # not a venv's (its site-packages)
    base.update(installed_base=sys.base_prefix, installed_platbase=sys.base_exec_prefix)
    paths = sysconfig.get_paths(vars=base)
    wanted = (sys.base_prefix, sys.base_exec_prefix, paths["stdlib"], paths["platstdlib"])
    dirs = {os.path.realpath(p) for p in wanted if p}
    dirs |= {os.path.dirname(p) for p in _mapped_libraries()}
    links = []
    for path in _LIBRARY_DIRS:
        if os.path.isdir(path):
            dirs.add(os.path.realpath(path))
            if os.path.islink(path):
                links.append((path, os.readlink(path)))
    dirs.discard("/")
    outermost = sorted(d for d in dirs if not any(d.startswith(other + "/") for other in dirs))
    files = [(path, os.path.realpath(path)) for path in _READ_FILES if os.path.exists(path)]
    return [(d, d) for d in outermost] + files, links


def _reachable_without_capability(path: str) -> bool:
    """Whether this user, with no capability, may search every directory above `path`."""
    uid, groups = os.getuid(), {os.getgid(), *os.getgroups()}
    parent = os.path.dirname(path)
    while True:
        info = os.stat(parent)
        bit = 0o100 if info.st_uid == uid else 0o010 if info.st_gid in groups else 0o001
        if not info.st_mode & bit:
            return False
        if parent == "/":
            return True
        parent = os.path.dirname(parent)


def _bind(source: str, target: str, read_only: bool, device: bool = False) -> None:
    if os.path.isdir(source):
        os.makedirs(target, 0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), 0o755, exist_ok=True)
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    _mount(source, target, None, _MS_BIND | _MS_REC)
    # A remount must keep the flags the kernel locks in a user namespace (nosuid, nodev, noexec, atime).
    found = os.statvfs(target).f_flag
    flags = _MS_BIND | _MS_REMOUNT | _MS_NOSUID | (0 if device else _MS_NODEV) | (_MS_RDONLY if read_only else 0)
    for st_flag, ms_flag in (
        (os.ST_RDONLY, _MS_RDONLY),
        (os.ST_NODEV, _MS_NODEV),
        (os.ST_NOEXEC, _MS_NOEXEC),
        (os.ST_NOATIME, _MS_NOATIME),
        (os.ST_NODIRATIME, _MS_NODIRATIME),
        (os.ST_RELATIME, _MS_RELATIME),
    ):
        if found & st_flag:
            flags |= ms_flag
    if not found & (os.ST_NOATIME | os.ST_RELATIME):
        flags |= _MS_STRICTATIME
    _mount(None, target, None, flags)


def _enter_minimal_root(mount_dir: str, slot_dir: str, sources, links, scratch_mb: int) -> str:
    """Replace this process's view of the filesystem, for good, with a read-only tmpfs holding
    read-only binds of `sources`, and at `slot_dir` a writable tmpfs of `scratch_mb` for the
    programs' directories (it vanishes with this namespace: whatever happens, no program file is
    ever left on the host's disk). Parents are tmpfs directories (0755), so a Python under a
    mode-700 home is reachable without any capability. As root this is a mount namespace,
    otherwise a user namespace (mapping only our own uid and gid). -> which."""
    as_root = os.geteuid() == 0
    hidden = [] if as_root else [real for _, real in sources if not _reachable_without_capability(real)]
    if len(hidden) > 1:
        raise OSError(f"{len(hidden)} paths Python needs are reachable only with a capability: {hidden}")
    if hidden:  # the working directory follows us into the new namespace: bind "." reaches it
        os.chdir(hidden[0])
    uid, gid = os.getuid(), os.getgid()
    _check(_libc.unshare(_CLONE_NEWNS | (0 if as_root else _CLONE_NEWUSER)), "unshare")
    if not as_root:
        for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing we mount propagates back
    _mount("tmpfs", mount_dir, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
    for view, real in sources:
        _bind("." if real in hidden else real, mount_dir + view, read_only=True, device=view.startswith("/dev/"))
    os.makedirs(mount_dir + slot_dir, 0o755)
    _mount(
        "tmpfs", mount_dir + slot_dir, "tmpfs", _MS_NOSUID | _MS_NODEV, f"mode=0711,size={scratch_mb}m,nr_inodes=65536"
    )
    for link, target in links:
        os.symlink(target, mount_dir + link)
    os.chdir(mount_dir)
    _check(_libc.syscall(_SYSCALLS["pivot_root"], b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", _MNT_DETACH), "umount2 (the old root)")
    os.chdir("/")
    _mount(None, "/", None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    return "mount namespace" if as_root else "user namespace"


# ---- the program process (forked by the runner; nothing in it is trusted) ---------------------
def _report_exception(err: BaseException) -> str:
    """Write the traceback's tail to the program's stderr; -> its last line."""
    import traceback

    _flush_streams()
    try:
        text = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
    except BaseException:  # noqa: BLE001
        text = f"{type(err).__name__}\n"
    try:
        os.write(2, text.encode(errors="replace"))
    except OSError:  # the program closed its stderr
        pass
    lines = text.strip().splitlines()
    return lines[-1] if lines else "exception"


def _flush_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            pass


class _ProgramProcess:
    """Runs the set-up code and the program, says it is ready, then answers the judge's requests
    (evaluate hole i with these arguments, or run test statement i) with one plain-data reply
    each, in the order asked. The program may replace any of this: it changes only its replies.
    Whatever the program does to the builtins module it sees while it runs; this code runs with
    the real ones (so a program that redefines `builtins.len` is still answered for)."""

    def __init__(self, job: dict):
        self.job = job
        self.namespace = {"__name__": "__main__", "__builtins__": builtins}
        self.code: list[types.CodeType] = []
        self.functions: dict[int, object] = {}
        self.real_builtins = dict(vars(builtins))
        self.program_builtins = self.real_builtins

    def serve(self) -> None:
        program, setup = self._compile()
        try:  # one script, in the order the MBPP protocol runs it: set-up code, program, tests
            exec(setup, self.namespace)
            exec(program, self.namespace)
            failure = None
        except BaseException as err:  # noqa: BLE001
            failure = err
        self.program_builtins = self._swap_builtins(self.real_builtins)
        if failure is not None:
            self._exit_after(failure)
        modules = [name for name in self.job["modules"] if self.namespace.get(name) is sys.modules.get(name)]
        self._send({"ready": modules})
        while True:
            request = self._receive()
            if request is None:
                _flush_streams()
                os._exit(0)
            try:
                reply = self._answer(request)
            except BaseException:  # noqa: BLE001  (e.g. an exit code whose repr raises)
                reply = {"k": request.get("k"), "raised": "the program's value could not be reported"}
            self._send(reply)

    @staticmethod
    def _swap_builtins(wanted: dict) -> dict:
        """Make the builtins module's namespace `wanted`; -> what it was."""
        live = vars(builtins)
        current = dict(live)
        live.clear()
        live.update(wanted)
        return current

    @staticmethod
    def _exit_after(err: BaseException) -> None:
        """The set-up code or the program raised: say why and exit (before any test)."""
        if isinstance(err, SystemExit):
            os.write(2, f"\nexited (status {err.code!r}) before its tests completed\n".encode(errors="replace"))
            os._exit(_EXIT_EARLY)
        if not isinstance(err, MemoryError):
            _report_exception(err)
        os._exit(_EXIT_MEMORY if isinstance(err, MemoryError) else _EXIT_EXCEPTION)

    def _compile(self):
        try:
            program = compile(self.job["program"], "<program>", "exec")
        except (SyntaxError, ValueError) as err:
            import traceback

            os.write(2, "".join(traceback.format_exception_only(type(err), err)).encode(errors="replace"))
            os._exit(_EXIT_SYNTAX)
        try:
            setup = compile(self.job["setup"], "<test setup>", "exec")
            self.code = [compile(source, "<tests>", kind) for kind, source in self.job["steps"]]
        except (SyntaxError, ValueError) as err:
            os.write(2, f"the tests do not compile: {err}\n".encode(errors="replace"))
            os._exit(_EXIT_EXCEPTION)
        return program, setup

    def _answer(self, request: dict) -> dict:
        sequence, index = request["k"], request["i"]
        args = [_decode_value(a) for a in request["a"]]
        self._swap_builtins(self.program_builtins)
        try:
            if self.job["steps"][index][0] == "exec":
                exec(self.code[index], self.namespace)
                value = None
            else:
                if index not in self.functions:
                    self.functions[index] = eval(self.code[index], self.namespace)
                value = self.functions[index](*args)
            outcome = None
        except BaseException as err:  # noqa: BLE001
            outcome = err
        finally:
            self.program_builtins = self._swap_builtins(self.real_builtins)
        if outcome is None:
            try:
                return {"k": sequence, "v": _encode(value, [_MAX_ITEMS])}
            except _NotPlainData as err:
                return {"k": sequence, "not_data": str(err)}
            except BaseException as err:  # noqa: BLE001  (an iterator's own code raised)
                outcome = err
        if isinstance(outcome, MemoryError):
            return {"k": sequence, "raised": "MemoryError", "memory": True}
        if isinstance(outcome, SystemExit):
            return {"k": sequence, "raised": f"exited (status {outcome.code!r}) before its tests completed"}
        return {"k": sequence, "raised": _report_exception(outcome)}

    def _send(self, message: dict) -> None:
        _flush_streams()
        data = _frame(message)
        if len(data) > _MAX_FRAME:
            data = _frame({"k": message.get("k"), "not_data": f"a value of more than {_MAX_FRAME} bytes"})
        try:
            while data:
                data = data[os.write(_REPLY_FD, data) :]
        except OSError:  # the judge has its verdict and stopped listening
            os._exit(0)

    def _receive(self) -> dict | None:
        header = _read_exactly(_REQUEST_FD, 4)
        data = None if header is None else _read_exactly(_REQUEST_FD, int.from_bytes(header, "big"))
        return None if data is None else json.loads(data)


# ---- the runner (`sandbox.py --runner`): forks programs, enforces limits, cleans up -------------
class _Runner:
    """Forks each program process into its sandbox and cleans up after it (see the module
    docstring). Started by the judge before any test exists; never sees one."""

    def __init__(self, setup: dict):
        self.limits = Limits(**setup["limits"])
        self.uid = setup["uid"]  # as root: this slot's own uid (locked by the harness), else None
        self.slot_dir = setup["slot_dir"]
        self.as_root = os.geteuid() == 0
        self.proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # before a pivot hides it
        self.landlock = _landlock_abi()
        self.sources, links = _read_sources()
        self.user_processes = sum(1 for _, _, uid in _processes(self.proc_fd) if uid == os.getuid())
        for name in os.listdir(self.slot_dir):  # what a runner of this slot that was killed left
            _remove_tree(os.path.join(self.slot_dir, name))
        self.root_view = None
        if setup["minimal_root"]:
            scratch_mb = 8 * self.limits.max_file_mb  # a program's files: 8 of the largest it may write
            self.root_view = _enter_minimal_root(setup["mount_dir"], self.slot_dir, self.sources, links, scratch_mb)
        in_user_namespace = self.root_view == "user namespace"
        self.ns_flags = self._namespace_flags(0 if self.as_root or in_user_namespace else _CLONE_NEWUSER)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() when a program ends
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # orphans (daemons) of programs come back to us
        if self.as_root:  # a runner of this uid that was killed may have left processes
            _kill_uid(self.uid)

    def _namespace_flags(self, base: int) -> int:
        """The network + IPC namespaces this machine lets a program have (probed in a child)."""
        for wanted in (_CLONE_NEWNET | _CLONE_NEWIPC, _CLONE_NEWNET, _CLONE_NEWIPC):
            pid = os.fork()
            if pid == 0:
                os._exit(0 if _libc.unshare(base | wanted) == 0 else 1)
            if os.waitpid(pid, 0)[1] == 0:
                return base | wanted
        return 0

    def report(self) -> dict:
        netns, ipcns = bool(self.ns_flags & _CLONE_NEWNET), bool(self.ns_flags & _CLONE_NEWIPC)
        layers = [f"minimal root ({self.root_view})"] if self.root_view else []
        layers += ["landlock"] if self.landlock else []
        layers += ["own uid"] if self.as_root else []
        return {
            "uid": self.uid,
            "capabilities": "none",
            "filesystem": " + ".join(layers) or "none",
            "reads": [view for view, _ in self.sources] if self.root_view or self.landlock else "anything its user can",
            "landlock_abi": self.landlock,
            "network_namespace": netns,
            "ipc_namespace": ipcns,
            "tcp_blocked": netns or self.landlock >= 4,
            "udp_blocked": netns,
            "unix_sockets_blocked": bool(self.root_view) and (netns or self.landlock >= 6),
            "signals_confined": self.as_root or self.landlock >= 6,
            "process_cleanup": "kill(-1) as the slot's uid" if self.as_root else "process-tree walk (subreaper)",
        }

    # -- in the program process ----------------------------------------------------------------
    def _program(self, job: dict, workdir: str, out_w: int, request_fd: int, reply_fd: int) -> None:
        """The forked program process. Never returns."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        try:
            self._enter_sandbox(workdir, out_w, request_fd, reply_fd)
        except BaseException as err:  # noqa: BLE001
            os.write(2, f"sandbox set-up failed: {err!r}\n".encode())
            os._exit(_EXIT_SETUP)
        _ProgramProcess(job).serve()
        os._exit(_EXIT_SETUP)

    def _enter_sandbox(self, workdir: str, out_w: int, request_fd: int, reply_fd: int) -> None:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        # copies above the targets first: a source may already sit on another's target number
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (null, out_w, out_w, request_fd, reply_fd)]
        for target, fd in enumerate(high):
            os.dup2(fd, target)
        os.closerange(_REPLY_FD + 1, 1 << 16)
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update(
            PATH="/usr/local/bin:/usr/bin:/bin", HOME=workdir, TMPDIR=workdir, LANG="C.UTF-8", PYTHONHASHSEED="0"
        )
        if self.ns_flags:
            _check(_libc.unshare(self.ns_flags), "unshare")
        self._set_rlimits()
        if self.landlock:
            _landlock(self.landlock, [view for view, _ in self.sources], workdir)
        if self.as_root:
            os.setgroups([])
            os.setresgid(self.uid, self.uid, self.uid)
            os.setresuid(self.uid, self.uid, self.uid)
        _drop_capabilities()
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # after setresuid, which clears it

    def _set_rlimits(self) -> None:
        lim = self.limits
        cpu = max(1, int(lim.cpu_seconds + 0.999))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (lim.memory_mb << 20, lim.memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim.max_file_mb << 20, lim.max_file_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        # The limit counts the processes of our uid: as root the slot's own uid (only the program's);
        # in a user namespace its processes there (the runner and the program's); else all of ours.
        if self.as_root:
            nproc = lim.max_processes + 1
        elif self.root_view == "user namespace":
            nproc = lim.max_processes + 2
        else:
            nproc = self.user_processes + lim.max_processes
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))

    # -- in the runner -------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Kill anything of ours still alive (after a program every process is gone already)."""
        if self.as_root:
            _kill_uid(self.uid)
            return
        for pid in _descendants(os.getpid(), self.proc_fd):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass

    def kill_leftovers(self, pid: int) -> None:
        """Kill every process the program started, and reap them all. Orphans come back to the
        runner (a subreaper), so "the runner has no children left" means nothing is left."""
        deadline = time.monotonic() + 10.0
        try:  # the program process is reaped: no child at all means nothing of it survives
            os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        while True:
            if self.as_root:
                _kill_uid(self.uid)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
            # Killed processes exit within microseconds; reap until no child is left.
            settle = time.monotonic() + 0.05
            while time.monotonic() < settle:
                try:
                    done, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    return
                if done == 0:
                    time.sleep(0.0005)
            if time.monotonic() > deadline:
                return  # cannot happen with kill(-1); do not hang the harness if it does
            if not self.as_root:  # survivors left the process group (setsid): walk the tree
                for p in _descendants(os.getpid(), self.proc_fd):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass

    def _wait_reading(self, pid: int, output: bytearray, out_r: int, deadline: float, sock, job: int):
        """Wait for the program to exit (or the wall-clock deadline) while draining its output;
        the judge may ask us to stop it early. -> (status or None if timed out, rusage, timed_out)."""
        keep = self.limits.max_output_kb << 10
        watched = [out_r, self.wake_r, sock]
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                return status, usage, False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, None, True
            ready, _, _ = select.select(watched, [], [], min(remaining, 1.0))
            if self.wake_r in ready:
                try:
                    os.read(self.wake_r, 4096)
                except BlockingIOError:
                    pass
            if sock in ready:
                message, fds = _receive_message(sock)
                for fd in fds:
                    os.close(fd)
                if message is None or message.get("stop") == job:  # the judge has its verdict, or is gone
                    os.kill(pid, signal.SIGKILL)
                    watched.remove(sock)
            if out_r in ready:
                data = os.read(out_r, 1 << 16)
                if not data:
                    watched.remove(out_r)
                _append_tail(output, data, keep)

    def run(self, job: dict, fds: list[int], sock: socket.socket) -> dict:
        """Fork the job's program process and clean up after it; -> what happened to it."""
        request_fd, reply_fd = fds
        workdir = tempfile.mkdtemp(prefix="prog-", dir=self.slot_dir)
        if self.as_root:
            os.chown(workdir, self.uid, self.uid)
        out_r, out_w = os.pipe()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                self._program(job, workdir, out_w, request_fd, reply_fd)
            finally:
                os._exit(_EXIT_SETUP)
        for fd in (out_w, request_fd, reply_fd):
            os.close(fd)
        output = bytearray()
        status, usage, timed_out = self._wait_reading(pid, output, out_r, started + self.limits.wall, sock, job["job"])
        wall = time.monotonic() - started
        if status is None:  # timed out: the program process first, so that its status is ours to read
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
        self.kill_leftovers(pid)
        os.set_blocking(out_r, False)  # whatever is still buffered (writers are all dead now)
        try:
            while data := os.read(out_r, 1 << 16):
                _append_tail(output, data, self.limits.max_output_kb << 10)
        except BlockingIOError:
            pass
        os.close(out_r)
        _remove_tree(workdir)
        keep = self.limits.max_output_kb << 10
        return {
            "job": job["job"],
            "status": status,
            "timed_out": timed_out,
            "wall": round(wall, 4),
            "cpu": round(usage.ru_utime + usage.ru_stime, 4) if usage else 0.0,
            "output": bytes(output[-keep:]).decode("utf-8", errors="replace"),
        }


def _runner_main() -> None:
    sock = socket.socket(fileno=os.dup(0))  # the judge's socket arrives as stdin
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.umask(0o022)  # the minimal root's directories must be 0755 whatever the harness's umask
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)  # the judge is single-threaded: no thread-exit surprise
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    setup, _ = _receive_message(sock)
    try:
        runner = _Runner(setup)
    except Exception as err:  # noqa: BLE001  (the judge starts another without a minimal root)
        _send_message(sock, {"error": f"{type(err).__name__}: {err}"})
        return
    # No process of our uid may ptrace us or read our memory (only now: a non-dumpable process
    # cannot write its own user-namespace maps).
    _prctl(_PR_SET_DUMPABLE, 0)
    _send_message(sock, {"report": runner.report()})
    while True:
        message, fds = _receive_message(sock)
        if message is None:  # the judge has gone
            runner.shutdown()
            return
        if "job" in message and len(fds) == 2:
            _send_message(sock, runner.run(message, fds, sock))
        else:  # a stop for a program that had already ended
            for fd in fds:
                os.close(fd)


# ---- the judge (`sandbox.py --worker`): the trusted side of one slot ----------------------------
class _ProgramEnded(BaseException):
    """The program's process is gone before answering (the runner says why)."""


class _Verdict(BaseException):
    """A verdict reached while asking the program (it raised, returned no plain data, ...)."""

    def __init__(self, status: str, error: str):
        super().__init__(error)
        self.status, self.error = status, error


class _JudgeTimeout(BaseException):
    pass


def _clip(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


class _Conversation:
    """The judge's ends of one program process's pipes: requests out, plain-data replies in. Every
    byte that comes in is the program's: bounded, checked, never trusted to be well-formed."""

    _PRESEND_BYTES = 32 << 10  # asked for at once: never more than an empty pipe holds (no deadlock)

    def __init__(self, request_fd: int, reply_fd: int, runner: socket.socket, plan: _Plan):
        self.request_fd, self.reply_fd, self.runner = request_fd, reply_fd, runner
        self.buffer, self.eof, self.runner_done = bytearray(), False, False
        self.objects: list[str] = []  # types of the program objects (not plain data) it returned
        os.set_blocking(reply_fd, False)
        # Request k (1-based) asks for program step k - 1 up to `presented`, then whatever comes.
        batch = b""
        self.presented = 0
        while self.presented < plan.eager and len(batch) < self._PRESEND_BYTES:
            batch += _frame({"k": self.presented + 1, "i": self.presented, "a": []})
            self.presented += 1
        self.sent, self.answered = self.presented, 0
        try:
            self._write(batch)
        except _ProgramEnded:  # already gone: its replies (none) will say so
            pass
        if self.presented == len(plan.program_steps):  # nothing more to ask: the program may exit when done
            self._close_requests()

    def _close_requests(self) -> None:
        if self.request_fd >= 0:
            os.close(self.request_fd)
            self.request_fd = -1

    def close(self) -> None:
        self._close_requests()
        os.close(self.reply_fd)

    def _write(self, data: bytes) -> None:
        try:
            while data:
                data = data[os.write(self.request_fd, data) :]
        except BrokenPipeError:
            raise _ProgramEnded from None

    def ready(self, candidates: list[str]) -> list[str]:
        """Wait until set-up code and program have run; -> the allow-listed modules it imported."""
        message = self._next()
        if type(message) is not dict or set(message) != {"ready"} or type(message["ready"]) is not list:
            raise _Verdict("failed", "the program's process sent a malformed message instead of starting its tests")
        return [name for name in message["ready"] if name in candidates]

    def ask(self, step: int, *args):
        """The program's value of hole `step` for these judge-local arguments (the judge's `hole`)."""
        if step < self.presented:
            sequence = step + 1
            if sequence != self.answered + 1:  # a bug of ours, never the program's doing
                raise RuntimeError(f"the judge asked for step {step} out of the planned order")
        else:
            try:
                encoded = [_encode(a, [_MAX_ITEMS]) for a in args]
            except _NotPlainData as err:
                raise _Verdict("failed", f"the test would pass the program {err}") from None
            self.sent += 1
            sequence = self.sent
            self._write(_frame({"k": sequence, "i": step, "a": encoded}))
        message = self._next()
        self.answered += 1
        if type(message) is not dict or type(message.get("k")) is not int or message["k"] != sequence:
            raise _Verdict("failed", "the program's process answered out of turn or malformed")
        if set(message) == {"k", "v"}:
            state = _Decoding()
            try:
                value = _decode_value(message["v"], state)
                self.objects += state.objects
                return value
            except _Malformed as err:
                raise _Verdict("failed", f"the program's process sent a malformed value ({err})") from None
        if type(message.get("raised")) is str:
            status = "out-of-memory" if message.get("memory") is True else "failed"
            raise _Verdict(status, _clip(message["raised"]))
        if type(message.get("not_data")) is str:
            raise _Verdict("failed", f"returned {_clip(message['not_data'], 200)}")
        raise _Verdict("failed", "the program's process sent a malformed reply")

    def _next(self):
        """The program's next message; _ProgramEnded once it is gone and nothing complete is left."""
        while True:
            message = self._pop()
            if message is not None:
                return message
            if self.eof:
                raise _ProgramEnded
            if not self.runner_done:  # the runner reports only once the program and all its processes are gone
                ready, _, _ = select.select([self.reply_fd, self.runner], [], [])
                self.runner_done = self.runner in ready
            elif not select.select([self.reply_fd], [], [], 2.0)[0]:
                raise _ProgramEnded  # a writer outlived the runner (it crashed): nothing more will come
            try:
                data = os.read(self.reply_fd, 1 << 20)
            except BlockingIOError:
                continue
            self.eof = not data
            self.buffer += data

    def _pop(self):
        if len(self.buffer) < 4:
            return None
        size = int.from_bytes(self.buffer[:4], "big")
        if size > _MAX_FRAME:
            raise _Verdict("failed", f"the program's process sent a message of {size} bytes (limit {_MAX_FRAME})")
        if len(self.buffer) < 4 + size:
            return None
        data = bytes(self.buffer[4 : 4 + size])
        del self.buffer[: 4 + size]
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise _Verdict("failed", "the program's process sent a malformed message") from None


def _objects_hint(types_met: list[str]) -> str:
    if not types_met:
        return ""
    kinds = ", ".join(sorted(set(types_met))[:3])
    return f"; the program returned {kinds} values, which are not plain data: the judge sees only whether they are true"


def _on_alarm(*_):
    raise _JudgeTimeout


class _Judge:
    """One slot's trusted side: plans each job's tests, has the runner fork its program, evaluates
    every assert from the plain data the program returns, and answers every job."""

    def __init__(self, setup: dict):
        self.limits = Limits(**setup["limits"])
        self.runner_setup = {k: setup[k] for k in ("limits", "uid", "slot_dir", "mount_dir")}
        self.uid = setup["uid"]
        self.fallback: str | None = None  # why the runner has no minimal root, if it has none
        self.job = 0
        self.runner: subprocess.Popen | None = None
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)  # what a dead runner's programs leave comes back to us
        _prctl(_PR_SET_DUMPABLE, 0)
        signal.signal(signal.SIGALRM, _on_alarm)
        # A test's arithmetic on a value a program chose (`[0] * f(x)`) ends in a MemoryError
        # here, never in the machine's OOM killer.
        memory = max(4 << 30, 2 * self.limits.memory_mb << 20)
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        self.start_runner()

    def start_runner(self) -> None:
        """A fresh runner, with a minimal root unless making one failed before (the report says why)."""
        for minimal_root in (True, False) if self.fallback is None else (False,):
            ours, theirs = socket.socketpair()
            proc = subprocess.Popen(
                [sys.executable, "-I", os.path.abspath(__file__), "--runner"],
                stdin=theirs.fileno(),
                stdout=subprocess.DEVNULL,
                env=_SCRUBBED_ENV,
                cwd="/",
                close_fds=True,
            )
            theirs.close()
            _send_message(ours, {**self.runner_setup, "minimal_root": minimal_root})
            answer = _receive_message(ours)[0] if select.select([ours], [], [], 60.0)[0] else None
            if isinstance(answer, dict) and "report" in answer:
                self.runner, self.sock = proc, ours
                self.report = {"verdict": "in the judge, outside the program (plain data only)", **answer["report"]}
                if self.fallback:
                    self.report["minimal_root_unavailable"] = self.fallback
                return
            self.fallback = str((answer or {}).get("error", "the runner did not start"))
            ours.close()
            proc.kill()
            proc.wait()
        raise RuntimeError(f"the sandbox runner did not start: {self.fallback}")

    def restart_runner(self) -> None:
        """After a runner crashed or hung: kill it and everything below us, then start another."""
        if self.runner is not None:
            self.runner.kill()
            self.runner.wait()
            self.sock.close()
            self.runner = None
        if self.uid is not None:
            _kill_uid(self.uid)
        deadline = time.monotonic() + 5.0  # orphans of its programs came back to us (a subreaper)
        while time.monotonic() < deadline:
            left = _descendants(os.getpid())
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                pass
            if not left:
                break
            time.sleep(0.01)
        self.start_runner()

    def close(self) -> None:
        """The runner kills what is left of its uid and exits when our end of the socket closes."""
        if self.runner is not None:
            self.sock.close()
            try:
                self.runner.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.runner.kill()
                self.runner.wait()

    def run(self, job: dict) -> dict:
        """One job -> its Result (as a dict)."""
        try:
            plan = _plan_tests(str(job.get("setup", "")), str(job["tests"]), job.get("names") or ())
        except _UnsupportedTests as err:
            return asdict(Result("failed", str(err), "", 0.0, 0.0))
        self.job += 1
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        program_job = {"setup": str(job.get("setup", "")), "program": str(job["program"])}
        program_job.update(job=self.job, steps=plan.program_steps, modules=plan.modules)
        try:
            _send_message(self.sock, program_job, [request_r, reply_w])
        except BaseException:
            os.close(request_w)
            os.close(reply_r)
            raise
        finally:  # the program's ends now live in the runner
            os.close(request_r)
            os.close(reply_w)
        conversation = _Conversation(request_w, reply_r, self.sock, plan)
        try:
            verdict = self._judge_in_time(plan, conversation)
        finally:
            conversation.close()
        self._stop_unless_ending(conversation, verdict)
        raw = self._runner_result()
        status, error = verdict if verdict is not None else self._classify(raw)
        return asdict(Result(status, error, raw["output"], raw["wall"], raw["cpu"]))

    def _stop_unless_ending(self, conversation: _Conversation, verdict) -> None:
        """Have the runner kill the program now, unless it has ended or is ending by itself: a
        program that passed was told it has no more requests (honest ones exit at once; a
        hostile one that lingers gets half a second)."""
        ending = verdict is not None and verdict[0] == "passed" and conversation.request_fd < 0
        if conversation.runner_done or select.select([self.sock], [], [], 0.5 if ending else 0.0)[0]:
            return
        _send_message(self.sock, {"stop": self.job})

    def _judge_in_time(self, plan: _Plan, conversation: _Conversation) -> tuple[str, str] | None:
        """The verdict, or None when the program ended first. The program's time is the runner's
        to limit; this alarm only bounds the judge's own evaluation of what it returned."""
        try:
            signal.setitimer(signal.ITIMER_REAL, self.limits.wall + 5.0)
            try:
                return self._judge(plan, conversation)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _JudgeTimeout:
            return "timeout", f"the tests' own evaluation of the program's values exceeded {self.limits.wall + 5:g} s"

    def _judge(self, plan: _Plan, conversation: _Conversation) -> tuple[str, str] | None:
        namespace = {"__builtins__": _JUDGE_BUILTINS, _HOLE: conversation.ask}
        for code in plan.judge_imports:  # the set-up's imports of allow-listed modules
            try:
                exec(code, namespace)
            except ImportError:
                pass
        try:
            for name in conversation.ready(plan.modules):  # MBPP semantics: a module the program imported
                namespace.setdefault(name, importlib.import_module(name))
        except _ProgramEnded:
            return None
        except _Verdict as verdict:
            return verdict.status, verdict.error
        for step in plan.steps:
            outcome = self._step(step, namespace, conversation)
            if outcome is not True:
                return outcome
        return "passed", ""

    def _step(self, step: _Step, namespace: dict, conversation: _Conversation):
        """True when the step went through; else the verdict, or None if the program ended."""
        where = f" (test {step.number}: {_clip(step.source, 200)})"
        conversation.objects = []
        try:
            if step.test is None:
                conversation.ask(step.program_step)
                if step.judge_code is not None:
                    exec(step.judge_code, namespace)
                return True
            if eval(step.test, namespace):
                return True
            message = "" if step.message is None else f": {_clip(str(eval(step.message, namespace)))}"
            return "failed", f"AssertionError{message}{where}{_objects_hint(conversation.objects)}"
        except _ProgramEnded:
            return None
        except _Verdict as verdict:
            return verdict.status, verdict.error + where
        except Exception as err:  # the test's own operations on the program's values (TypeError, ...)
            return "failed", f"{type(err).__name__}: {_clip(str(err))}{where}{_objects_hint(conversation.objects)}"

    def _runner_result(self) -> dict:
        deadline = time.monotonic() + self.limits.wall + 30.0  # the runner enforces the limits; a backstop
        while time.monotonic() < deadline:
            if not select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            message, fds = _receive_message(self.sock)
            for fd in fds:
                os.close(fd)
            if message is None:
                raise RuntimeError("the sandbox runner died while running this program")
            if message.get("job") == self.job:
                return message
        raise RuntimeError("the sandbox runner hung while running this program")

    def _classify(self, raw: dict) -> tuple[str, str]:
        """Why a program that ended before its verdict did not pass."""
        lim, status, text = self.limits, raw["status"], raw["output"]
        last = text.strip().splitlines()[-1] if text.strip() else ""
        if raw["timed_out"]:
            return "timeout", f"wall-clock limit of {lim.wall:g} s exceeded"
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and raw["cpu"] >= int(lim.cpu_seconds + 0.999)):
                return "timeout", f"CPU time limit of {lim.cpu_seconds:g} s exceeded"
            if sig == signal.SIGXFSZ:
                return "failed", f"file size limit of {lim.max_file_mb} MB exceeded"
            return "failed", f"killed by {_signal_name(sig)}"
        code = os.WEXITSTATUS(status)
        if code == 0:
            return "failed", "exited with status 0 before its tests ran to completion"
        if code == _EXIT_MEMORY:
            return "out-of-memory", f"MemoryError (address-space limit {lim.memory_mb} MB)"
        if code == _EXIT_SYNTAX:
            return "syntax-error", last or "SyntaxError"
        if code in (_EXIT_EARLY, _EXIT_EXCEPTION):
            return "failed", last or "exception"
        if code == _EXIT_SETUP:
            return "failed", last or "sandbox set-up failed"
        return "failed", f"exited with status {code}" + (f": {last}" if last else "")


def _worker_main() -> None:
    # The protocol channel gets fresh descriptors; 0 and 1 point at /dev/null.
    jobs = os.fdopen(os.dup(0), "r")
    results = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for name in sorted(_TRUSTED_MODULES):
        importlib.import_module(name)
    judge = _Judge(json.loads(jobs.readline()))
    results.write(json.dumps(judge.report) + "\n")
    results.flush()
    for line in jobs:
        try:
            result = judge.run(json.loads(line))
        except BaseException as err:  # noqa: BLE001  (every job gets an answer; a new runner for the next)
            result = asdict(Result("failed", f"the sandbox failed on this program: {_clip(str(err))}", "", 0.0, 0.0))
            judge.restart_runner()
        results.write(json.dumps(result) + "\n")
        results.flush()
    judge.close()


# ---- the harness side ---------------------------------------------------------------------------
class _UidLease:
    """As root: uids for a pool's slots that no other pool on this machine holds. One exclusive
    flock per uid on a file in _UID_LOCK_DIR, held until release() (which removes the file, and
    the directory once empty) or this process's end (a crashed harness frees its uids; the next
    holder's runner kills whatever they left)."""

    def __init__(self, count: int, base: int):
        import pwd

        self.uids: list[int] = []
        self._locks: list[int] = []
        uid = base
        while len(self.uids) < count:
            if uid >= base + 1_000_000:
                self.release()
                raise RuntimeError(f"no free sandbox uid in [{base}, {base + 1_000_000})")
            try:
                pwd.getpwuid(uid)  # a real account: never ours to kill(-1)
            except KeyError:
                self._try_lock(uid)
            uid += 1

    @staticmethod
    def _open(path: str) -> int:
        for _ in range(100):  # a releasing pool may remove the directory between our steps
            os.makedirs(_UID_LOCK_DIR, mode=0o700, exist_ok=True)
            info = os.lstat(_UID_LOCK_DIR)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
                raise RuntimeError(f"{_UID_LOCK_DIR} must be a directory of this user that only it can write")
            try:
                return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except FileNotFoundError:
                continue
        raise RuntimeError(f"cannot create a lock file in {_UID_LOCK_DIR}")

    def _try_lock(self, uid: int) -> None:
        path = os.path.join(_UID_LOCK_DIR, str(uid))
        fd = self._open(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            mine, there = os.fstat(fd), os.stat(path)  # a releasing pool unlinks the file: then it is not ours
            if (mine.st_dev, mine.st_ino) != (there.st_dev, there.st_ino):
                raise BlockingIOError
        except OSError:
            os.close(fd)
            return
        self.uids.append(uid)
        self._locks.append(fd)

    def release(self) -> None:
        for uid, fd in zip(self.uids, self._locks):
            try:  # unlinked while still locked: whoever opened it before must see it is stale
                os.unlink(os.path.join(_UID_LOCK_DIR, str(uid)))
            except OSError:
                pass
            os.close(fd)
        if self._locks:
            try:
                os.rmdir(_UID_LOCK_DIR)
            except OSError:
                pass  # other pools still hold uids
        self._locks, self.uids = [], []


class _WorkerHandle:
    def __init__(self, slot: int, limits: Limits, setup: dict):
        self.slot, self.limits, self.setup = slot, limits, setup
        self.proc: subprocess.Popen | None = None
        self.report: dict = {}
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=dict(_SCRUBBED_ENV),  # nothing of the parent's
            cwd=self.setup["slot_dir"],
            start_new_session=True,
            close_fds=True,
            text=True,
            bufsize=1,
        )
        self.proc.stdin.write(json.dumps({"limits": asdict(self.limits), **self.setup}) + "\n")
        line = self._read_line(90.0)
        if line is None:
            self.stop(graceful=False)
            raise RuntimeError("sandbox worker failed to start")
        self.report = json.loads(line)

    def _read_line(self, timeout: float) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        return line or None

    def run(self, job: dict) -> Result:
        if self.proc is None:
            self.start()
        try:
            self.proc.stdin.write(json.dumps(job) + "\n")
            line = self._read_line(self.limits.wall + 60.0)  # the worker enforces the limits; this is a backstop
        except (BrokenPipeError, OSError):
            line = None
        if line is not None:
            return Result(**json.loads(line))
        self.stop(graceful=False)
        try:
            self.start()
        except RuntimeError:
            pass  # the next job finds no process and reports the same
        return Result("failed", "the sandbox worker died or hung while running this program", "", 0.0, 0.0)

    def stop(self, graceful: bool = True) -> bool:
        """Stop the worker; graceful: let its runner kill what its uid left first. -> whether it did."""
        if self.proc is None:
            return True
        clean = False
        if graceful:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10.0)
                clean = self.proc.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.proc = None
        return clean


class SandboxPool:
    """Pre-forked sandbox workers. `run(jobs)` executes each job (set-up, program, tests) in its own
    sandboxed process and returns one Result per job, in order, whatever the programs do.

        with SandboxPool(workers=2) as pool:
            results = pool.run([{"setup": "", "program": code, "tests": "assert f(1) == 2"}])

    A job may also carry "names": names its tests mean as the program's own even where they shadow
    a builtin or an allow-listed module (MBPP: the reference solution's top-level definitions).
    """

    def __init__(self, workers: int | None = None, limits: Limits | None = None):
        if not sys.platform.startswith("linux"):
            raise RuntimeError("the code-execution sandbox needs Linux (rlimits, process groups, /proc)")
        self.limits = limits or Limits()
        count = workers or len(os.sched_getaffinity(0))
        self.workers: list[_WorkerHandle] = []
        base = int(os.environ.get("DPT_DIST_SANDBOX_UID_BASE", _UID_BASE))  # read here: workers get no environment
        self._uids = _UidLease(count if os.geteuid() == 0 else 0, base)
        self.root_dir = tempfile.mkdtemp(prefix="dpt-dist-sandbox-")
        try:
            os.chmod(self.root_dir, 0o711)  # slot uids may enter their own directories, not list others
            for slot in range(count):
                self.workers.append(_WorkerHandle(slot, self.limits, self._slot(slot)))
        except BaseException:
            self.close()
            raise

    def _slot(self, slot: int) -> dict:
        """A slot's directories (its programs' parent directory, its runner's mount point) and uid."""
        slot_dir, mount_dir = (os.path.join(self.root_dir, f"{kind}-{slot}") for kind in ("slot", "mnt"))
        os.mkdir(slot_dir)
        os.mkdir(mount_dir)
        os.chmod(slot_dir, 0o711)
        os.chmod(mount_dir, 0o700)
        uid = self._uids.uids[slot] if self._uids.uids else None
        return {"slot": slot, "uid": uid, "slot_dir": slot_dir, "mount_dir": mount_dir}

    def isolation_report(self) -> dict:
        """What this machine isolates: slot 0's report, and any slot whose report differs (a runner
        that could not make its minimal root, say) under "slots_that_differ"."""
        first = {k: v for k, v in self.workers[0].report.items() if k != "uid"}
        differ = [h.report for h in self.workers[1:] if {k: v for k, v in h.report.items() if k != "uid"} != first]
        return {**self.workers[0].report, "slots_that_differ": differ} if differ else self.workers[0].report

    def run(self, jobs: list[dict], progress=None) -> list[Result]:
        todo: queue.Queue = queue.Queue()
        for i, job in enumerate(jobs):
            item = {"setup": str(job.get("setup", "")), "program": str(job["program"]), "tests": str(job["tests"])}
            if job.get("names"):
                item["names"] = [str(name) for name in job["names"]]
            todo.put((i, item))
        results: list[Result | None] = [None] * len(jobs)

        def serve(handle: _WorkerHandle) -> None:
            while True:
                try:
                    i, job = todo.get_nowait()
                except queue.Empty:
                    return
                results[i] = handle.run(job)
                if progress is not None:
                    progress()

        threads = [threading.Thread(target=serve, args=(h,), daemon=True) for h in self.workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop every worker, kill anything left under our uids, remove our directory. Never raises."""
        clean = True
        for handle in self.workers:
            try:
                clean = handle.stop() and clean
            except BaseException:  # noqa: BLE001
                clean = False
        for uid in [] if clean else self._uids.uids:
            try:
                _kill_uid(uid)
            except OSError:
                pass
        self._uids.release()
        _remove_tree(self.root_dir)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
elif __name__ == "__main__" and sys.argv[1:] == ["--runner"]:
    _runner_main()
