"""Running untrusted, model-generated Python programs: a pre-forked pool of sandbox workers.

Nothing here runs unless the caller opted in (`dpt-dist eval-mbpp --allow-code-execution`; the
opt-in is checked by the callers, this module only executes). Stdlib only: each worker is this
file run as a script by a fresh `python -I`, with an environment that holds nothing of ours.

    harness (your process) --JSON lines--> worker (one per slot, warm interpreter)
        worker --fork--> program process: own session, fresh temp dir, limits, isolation
        worker: waits (CPU and wall-clock limits), reads capped output, then kills every
                process the program left and removes its directory

Isolation of each program (`isolation_report()` says which of these this machine gives):
- always: its own process and session, a fresh temporary working directory (removed after),
  a scrubbed environment, rlimits on CPU time, address space, file size, open files and
  core dumps, a wall-clock limit, and every process it started killed afterwards;
- Landlock (Linux >= 5.13, unprivileged): writes only inside its directory, reads only the
  Python installation and system directories (not /proc, /home, /root, /tmp), and from
  Landlock ABI 4 / 6 no TCP bind or connect and no signals to processes outside the sandbox;
- a private network namespace (no interfaces but a down loopback) when the kernel lets us
  create one (as root, or through an unprivileged user namespace);
- as root: each worker slot runs its programs under its own unused uid (no shell, no files),
  so the process-count limit is exact, nothing of yours can be signalled or overwritten, and
  cleanup is one kill(-1) as that uid, which the kernel performs atomically against fork;
  the uid keeps CAP_DAC_READ_SEARCH only (to read the Python installation even if it lives
  under a private home) and only when Landlock confines its reads;
- not root: the process limit counts all of your user's processes, so it is set to your
  current count plus the allowance, and cleanup walks the worker's process tree (the worker is
  a child subreaper, so orphans and daemons come back to it) until nothing is left.
Not isolated: CPU caches and timing, the kernel itself (this is not a VM), reads of
world-readable system files (/etc, /usr), and UDP when no network namespace could be created.

A program passes only if its tests ran to the end: after the last test the program process
writes a per-run random token to a pipe that the program does not know about and exits 0.
Exiting 0 earlier (sys.exit, os._exit) is a failure.
"""

from __future__ import annotations

import ctypes
import json
import os
import queue
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass

STATUSES = ("passed", "failed", "timeout", "out-of-memory", "syntax-error")
OPT_IN_ERROR = (
    "executing model-generated code is refused without --allow-code-execution "
    "(read the README's 'Executing generated code' section for what the sandbox isolates)"
)

# exit codes of the program process (a program can forge these, but only ever into a failure)
_EXIT_EXCEPTION, _EXIT_MEMORY, _EXIT_SYNTAX, _EXIT_EARLY, _EXIT_SETUP = 70, 71, 72, 73, 74
_TOKEN_FD = 3
_UID_BASE = int(os.environ.get("DPT_DIST_SANDBOX_UID_BASE", "2000000000"))  # as root: slot i runs as uid base + i
# Imported once in each worker so programs do not pay for them (what MBPP solutions import).
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


# ---- Linux primitives (ctypes: Python 3.11 has no os.unshare) --------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWUSER, _CLONE_NEWNET = 0x10000000, 0x40000000
_PR_SET_PDEATHSIG, _PR_SET_KEEPCAPS, _PR_SET_NO_NEW_PRIVS, _PR_SET_CHILD_SUBREAPER = 1, 8, 38, 36
_SYS_CAPSET = {"x86_64": 126, "aarch64": 91}.get(os.uname().machine)
_SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (same on every arch)
_CAP_DAC_READ_SEARCH = 2


def _prctl(option: int, arg: int) -> bool:
    return _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0) == 0


def _landlock_abi() -> int:
    try:
        return max(0, _libc.syscall(_SYS_LANDLOCK[0], None, ctypes.c_size_t(0), ctypes.c_uint32(1)))
    except Exception:
        return 0


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def _landlock(abi: int, read_dirs: list[str], write_dir: str) -> None:
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
    rules = [(p, read) for p in read_dirs] + [
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


def _keep_only_dac_read_search() -> None:
    """After setuid with KEEPCAPS: effective = permitted = {CAP_DAC_READ_SEARCH}, nothing inheritable."""
    if _SYS_CAPSET is None:
        return
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    bit = 1 << _CAP_DAC_READ_SEARCH
    data = (ctypes.c_uint32 * 6)(bit, bit, 0, 0, 0, 0)  # effective, permitted, inheritable (x2 words)
    _libc.syscall(_SYS_CAPSET, ctypes.byref(header), ctypes.byref(data))


def _processes() -> list[tuple[int, int, int]]:
    """(pid, ppid, real uid) of every process."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            out.append((int(name), int(fields["PPid"]), int(fields["Uid"].split()[0])))
        except (OSError, KeyError, ValueError):
            continue
    return out


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in _processes():
        children.setdefault(ppid, []).append(pid)
    out, stack = [], list(children.get(root, []))
    while stack:
        pid = stack.pop()
        out.append(pid)
        stack += children.get(pid, [])
    return out


# ---- the worker (runs as `python -I sandbox.py --worker`) -------------------------------------
class _Worker:
    def __init__(self, slot: int, limits: dict, root_dir: str):
        self.limits = Limits(**limits)
        self.root_dir = root_dir
        self.as_root = os.geteuid() == 0
        self.uid = _UID_BASE + slot if self.as_root else None
        self.landlock = _landlock_abi()
        self.read_dirs = sorted(
            {
                os.path.realpath(p)
                for p in (
                    sys.prefix,
                    sys.base_prefix,
                    sys.exec_prefix,
                    *[p for p in sys.path if p and os.path.isdir(p)],
                    "/usr",
                    "/lib",
                    "/lib64",
                    "/lib32",
                    "/bin",
                    "/sbin",
                    "/etc",
                    "/opt",
                )
                if os.path.exists(p)
            }
            - {os.path.realpath(root_dir), "/"}
        )
        self.network_flags = _CLONE_NEWNET if self.as_root else _CLONE_NEWUSER | _CLONE_NEWNET
        self.netns = self._probe_netns()
        self.user_processes = sum(1 for _, _, uid in _processes() if uid == os.getuid())
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select() when a program ends
        # Orphans (daemons) of programs come back to us. No PDEATHSIG here: it fires when the
        # harness *thread* that started us ends; a dead harness closes our stdin instead.
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        if self.as_root:  # a previous worker of this slot that was killed may have left processes
            self._kill_leftovers(0)

    def _probe_netns(self) -> bool:
        pid = os.fork()
        if pid == 0:
            os._exit(0 if _libc.unshare(self.network_flags) == 0 else 1)
        return os.waitpid(pid, 0)[1] == 0

    def report(self) -> dict:
        return {
            "uid": self.uid,
            "landlock_abi": self.landlock,
            "network_namespace": self.netns,
            "filesystem": "landlock" if self.landlock else ("uid" if self.as_root else "none"),
            "tcp_blocked": self.netns or self.landlock >= 4,
            "udp_blocked": self.netns,
            "signals_confined": self.as_root or self.landlock >= 6,
            "process_cleanup": "kill(-1) as the slot's uid" if self.as_root else "process-tree walk (subreaper)",
        }

    # -- in the program process ----------------------------------------------------------------
    def _enter_sandbox(self, workdir: str, out_w: int, token_w: int) -> None:
        os.setsid()
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(out_w, 1)
        os.dup2(out_w, 2)
        os.dup2(token_w, _TOKEN_FD)
        os.closerange(_TOKEN_FD + 1, 1 << 16)
        os.chdir(workdir)
        os.environ.clear()
        os.environ.update(
            PATH="/usr/local/bin:/usr/bin:/bin", HOME=workdir, TMPDIR=workdir, LANG="C.UTF-8", PYTHONHASHSEED="0"
        )
        if self.netns:
            _libc.unshare(self.network_flags)
        lim = self.limits
        cpu = max(1, int(lim.cpu_seconds + 0.999))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_AS, (lim.memory_mb << 20, lim.memory_mb << 20))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim.max_file_mb << 20, lim.max_file_mb << 20))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
        # As root each slot has its own uid; otherwise the limit counts all of this user's processes.
        nproc = lim.max_processes + 1 if self.as_root else self.user_processes + lim.max_processes
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        if self.landlock:
            _landlock(self.landlock, self.read_dirs, workdir)
        if self.as_root:
            _prctl(_PR_SET_KEEPCAPS, int(bool(self.landlock)))
            os.setgroups([])
            os.setresgid(self.uid, self.uid, self.uid)
            os.setresuid(self.uid, self.uid, self.uid)
            if self.landlock:
                _keep_only_dac_read_search()
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    def _program(self, job: dict, workdir: str, out_w: int, token_w: int, token: bytes) -> None:
        """The forked program process. Never returns."""
        import builtins
        import traceback

        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        try:
            self._enter_sandbox(workdir, out_w, token_w)
        except BaseException as err:  # noqa: BLE001
            os.write(2, f"sandbox set-up failed: {err!r}\n".encode())
            os._exit(_EXIT_SETUP)
        try:
            program = compile(job["program"], "<program>", "exec")
        except (SyntaxError, ValueError) as err:
            os.write(2, "".join(traceback.format_exception_only(type(err), err)).encode())
            os._exit(_EXIT_SYNTAX)
        try:
            setup = compile(job.get("setup", ""), "<test setup>", "exec")
            tests = compile(job["tests"], "<tests>", "exec")
        except (SyntaxError, ValueError) as err:
            os.write(2, f"the tests do not compile: {err}\n".encode())
            os._exit(_EXIT_EXCEPTION)
        namespace = {"__name__": "__main__", "__builtins__": builtins}
        try:  # one script, in the order the MBPP protocol runs it: set-up code, program, tests
            exec(setup, namespace)
            exec(program, namespace)
            exec(tests, namespace)
        except MemoryError:
            os._exit(_EXIT_MEMORY)
        except SystemExit as err:
            os.write(2, f"\nexited (status {err.code!r}) before its tests completed\n".encode())
            os._exit(_EXIT_EARLY)
        except BaseException as err:  # noqa: BLE001
            try:
                text = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-3:])
            except BaseException:  # noqa: BLE001
                text = f"{type(err).__name__}\n"
            os.write(2, text.encode(errors="replace"))
            os._exit(_EXIT_MEMORY if isinstance(err, MemoryError) else _EXIT_EXCEPTION)
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os.write(_TOKEN_FD, token)
        os._exit(0)

    # -- in the worker -------------------------------------------------------------------------
    def _kill_leftovers(self, pid: int) -> None:
        """Kill every process the program started, and reap them all. Orphans come back to the
        worker (a subreaper), so "the worker has no children left" means nothing is left."""
        deadline = time.monotonic() + 10.0
        while True:
            if self.as_root:
                helper = os.fork()
                if helper == 0:  # kill(-1) as the slot's uid: every process of that uid, atomically
                    try:
                        os.setresuid(self.uid, self.uid, self.uid)
                        os.kill(-1, signal.SIGKILL)
                    except OSError:
                        pass
                    os._exit(0)
                os.waitpid(helper, 0)
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
                for p in _descendants(os.getpid()):
                    try:
                        os.kill(p, signal.SIGKILL)
                    except OSError:
                        pass

    def _wait_reading(self, pid: int, open_fds: dict, deadline: float, keep: int):
        """Wait for the program to exit (or the wall-clock deadline) while draining its pipes
        into `open_fds`' buffers; -> (status or None if timed out, rusage, timed_out)."""
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                return status, usage, False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, None, True
            ready, _, _ = select.select([*open_fds, self.wake_r], [], [], min(remaining, 1.0))
            for fd in ready:
                if fd == self.wake_r:
                    try:
                        os.read(fd, 4096)
                    except BlockingIOError:
                        pass
                    continue
                data = os.read(fd, 1 << 16)
                if not data:
                    del open_fds[fd]
                    continue
                _append_tail(open_fds[fd], data, keep)

    def run(self, job: dict) -> dict:
        lim = self.limits
        workdir = tempfile.mkdtemp(prefix="prog-", dir=self.root_dir)
        if self.as_root:
            os.chown(workdir, self.uid, self.uid)
        out_r, out_w = os.pipe()
        token_r, token_w = os.pipe()
        token = os.urandom(16).hex().encode()
        started = time.monotonic()
        pid = os.fork()
        if pid == 0:
            try:
                self._program(job, workdir, out_w, token_w, token)
            finally:
                os._exit(_EXIT_SETUP)
        os.close(out_w)
        os.close(token_w)
        output, got_token = bytearray(), bytearray()
        keep = lim.max_output_kb << 10
        open_fds = {out_r: output, token_r: got_token}
        status, usage, timed_out = self._wait_reading(pid, open_fds, started + lim.wall, keep)
        wall = time.monotonic() - started
        if status is None:  # timed out: the program process first, so that its status is ours to read
            os.kill(pid, signal.SIGKILL)
            _, status, usage = os.wait4(pid, 0)
        self._kill_leftovers(pid)
        for fd, buf in open_fds.items():  # whatever is still buffered (writers are all dead now)
            os.set_blocking(fd, False)
            try:
                while data := os.read(fd, 1 << 16):
                    _append_tail(buf, data, keep)
            except BlockingIOError:
                pass
        os.close(out_r)
        os.close(token_r)
        shutil.rmtree(workdir, ignore_errors=True)
        cpu = usage.ru_utime + usage.ru_stime if usage else 0.0
        text = bytes(output[-keep:]).decode("utf-8", errors="replace")
        return asdict(
            Result(
                *self._classify(status, timed_out, cpu, bytes(got_token) == token, text),
                text,
                round(wall, 4),
                round(cpu, 4),
            )
        )

    def _classify(self, status: int, timed_out: bool, cpu: float, token_ok: bool, text: str) -> tuple[str, str]:
        lim = self.limits
        last = text.strip().splitlines()[-1] if text.strip() else ""
        if timed_out:
            return "timeout", f"wall-clock limit of {lim.wall:g} s exceeded"
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= int(lim.cpu_seconds + 0.999)):
                return "timeout", f"CPU time limit of {lim.cpu_seconds:g} s exceeded"
            if sig == signal.SIGXFSZ:
                return "failed", f"file size limit of {lim.max_file_mb} MB exceeded"
            return "failed", f"killed by {signal.Signals(sig).name}"
        code = os.WEXITSTATUS(status)
        if code == 0 and token_ok:
            return "passed", ""
        if code == 0:
            return "failed", "exited with status 0 before its tests ran to completion"
        if code == _EXIT_MEMORY:
            return "out-of-memory", f"MemoryError (address-space limit {lim.memory_mb} MB)"
        if code == _EXIT_SYNTAX:
            return "syntax-error", last or "SyntaxError"
        if code == _EXIT_EARLY:
            return "failed", last
        if code == _EXIT_EXCEPTION:
            return "failed", last or "exception"
        if code == _EXIT_SETUP:
            return "failed", last or "sandbox set-up failed"
        return "failed", f"exited with status {code}" + (f": {last}" if last else "")


def _worker_main() -> None:
    # The protocol channel gets fresh descriptors; 0 and 1 point at /dev/null so nothing a
    # program inherits can reach it.
    jobs = os.fdopen(os.dup(0), "r")
    results = os.fdopen(os.dup(1), "w")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    for name in _PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    setup = json.loads(jobs.readline())
    worker = _Worker(setup["slot"], setup["limits"], setup["root_dir"])
    results.write(json.dumps(worker.report()) + "\n")
    results.flush()
    for line in jobs:
        results.write(json.dumps(worker.run(json.loads(line))) + "\n")
        results.flush()


# ---- the harness side ---------------------------------------------------------------------------
class _WorkerHandle:
    def __init__(self, slot: int, limits: Limits, root_dir: str):
        self.slot, self.limits, self.root_dir = slot, limits, root_dir
        self.proc: subprocess.Popen | None = None
        self.report: dict = {}
        self.start()

    def start(self) -> None:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}  # nothing of the parent's
        self.proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__), "--worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=self.root_dir,
            start_new_session=True,
            close_fds=True,
            text=True,
            bufsize=1,
        )
        self.proc.stdin.write(
            json.dumps({"slot": self.slot, "limits": asdict(self.limits), "root_dir": self.root_dir}) + "\n"
        )
        line = self._read_line(60.0)
        if line is None:
            self.stop()
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
            line = self._read_line(self.limits.wall + 30.0)  # the worker enforces the limits; this is a backstop
        except (BrokenPipeError, OSError):
            line = None
        if line is not None:
            return Result(**json.loads(line))
        self.stop()
        try:
            self.start()
        except RuntimeError:
            pass  # the next job finds no process and reports the same
        return Result("failed", "the sandbox worker died or hung while running this program", "", 0.0, 0.0)

    def stop(self) -> None:
        if self.proc is None:
            return
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


class SandboxPool:
    """Pre-forked sandbox workers. `run(jobs)` executes each job (set-up, program, tests) in its own
    sandboxed process and returns one Result per job, in order, whatever the programs do.

        with SandboxPool(workers=2) as pool:
            results = pool.run([{"setup": "", "program": code, "tests": "assert f(1) == 2"}])
    """

    def __init__(self, workers: int | None = None, limits: Limits | None = None):
        if not sys.platform.startswith("linux"):
            raise RuntimeError("the code-execution sandbox needs Linux (rlimits, process groups, /proc)")
        self.limits = limits or Limits()
        self.root_dir = tempfile.mkdtemp(prefix="dpt-dist-sandbox-")
        os.chmod(self.root_dir, 0o711)  # slot uids may enter their own directories, not list others
        count = workers or len(os.sched_getaffinity(0))
        self.workers = [_WorkerHandle(i, self.limits, self.root_dir) for i in range(count)]

    def isolation_report(self) -> dict:
        return self.workers[0].report

    def run(self, jobs: list[dict], progress=None) -> list[Result]:
        todo: queue.Queue = queue.Queue()
        for i, job in enumerate(jobs):
            todo.put(
                (i, {"setup": str(job.get("setup", "")), "program": str(job["program"]), "tests": str(job["tests"])})
            )
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
        for handle in self.workers:
            handle.stop()
        shutil.rmtree(self.root_dir, ignore_errors=True)

    def __enter__(self) -> SandboxPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_main()
