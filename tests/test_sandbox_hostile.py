"""The sandbox against programs written by an attacker, one group per class of issue 12: a forged
verdict (1), secrets (2), unix sockets (3), host IPC (4), signals (5), hostile directory trees and
crashes (6), and two harnesses at once (7). Every test checks that nothing passed that should
not, nothing was read that should not be, nothing was left behind, and every program was answered.

The whole file also runs as uid 65534 (tests/test_sandbox.py's unprivileged test): the tests that
need root to set up their bait skip themselves there."""

from __future__ import annotations

import ast
import ctypes
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dpt_dist.sandbox import Limits, SandboxPool, _decode_value, _descendants, _remove_tree

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="the sandbox needs Linux")

ROOT = Path(__file__).resolve().parents[1]
LIMITS = Limits(cpu_seconds=4, wall_seconds=8, memory_mb=256, max_processes=8, max_output_kb=8)
AS_ROOT = os.geteuid() == 0
CAPGET = {"x86_64": 125, "aarch64": 90}.get(os.uname().machine, 125)
CORRECT = {"program": "def f(x):\n    return x * x", "tests": "assert f(3) == 9"}
_libc = ctypes.CDLL(None, use_errno=True)


@pytest.fixture(scope="module")
def pool():
    with SandboxPool(workers=2, limits=LIMITS) as p:
        yield p
        assert not leftover_files(p), "programs left files in the sandbox's directory"
    assert not os.path.exists(p.root_dir)


def is_runner(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().endswith(b"\0--runner\0")
    except OSError:
        return False


def leftover_processes(pool) -> list[int]:
    workers = {h.proc.pid for h in pool.workers if h.proc is not None}
    return [p for p in _descendants(os.getpid()) if p not in workers and not is_runner(p)]


def leftover_files(pool) -> list[str]:
    """Anything in the pool's directory but the slots' (empty) directories and mount points."""
    found = []
    for name in os.listdir(pool.root_dir):
        path = os.path.join(pool.root_dir, name)
        if not name.startswith(("slot-", "mnt-")) or os.listdir(path):
            found.append(path)
    return found


def run_all(pool, jobs: list[dict]):
    """Run a batch; every program answered, nothing of theirs left, the pool still judges right."""
    results = pool.run(jobs)
    assert len(results) == len(jobs) and all(
        r.status in ("passed", "failed", "timeout", "out-of-memory", "syntax-error") for r in results
    )
    assert not leftover_processes(pool), "a program left processes behind"
    assert not leftover_files(pool), "a program left files behind"
    return results


def run_one(pool, program: str, tests: str = "assert True", setup: str = ""):
    [result] = run_all(pool, [{"setup": setup, "program": program, "tests": tests}])
    return result


def secret_number() -> int:
    return random.SystemRandom().randrange(10**12, 10**13)


# ---- 1. the verdict cannot be forged from inside the program's process ---------------------------
FORGERIES = {
    "memory: every object it can reach": """
import gc, sys
found, MARK = [], 'SEC' + 'RET=='  # the test's text holds it; this program's own text does not
def look(o, depth=0):
    if depth > 6:
        return
    if isinstance(o, str) and MARK in o and o.split(MARK, 1)[1][:1].isdigit():
        found.append(o)
    elif isinstance(o, dict):
        for k, v in list(o.items()):
            look(k, depth + 1); look(v, depth + 1)
    elif isinstance(o, (list, tuple, set, frozenset)):
        for v in list(o):
            look(v, depth + 1)
for o in gc.get_objects():
    look(o)
frame = sys._getframe()
while frame is not None:
    look(dict(frame.f_locals)); look(dict(frame.f_globals)); frame = frame.f_back
print('found', len(found))
def f(x):
    return int(found[0].split(MARK)[1]) if found else 0
""",
    "memory: its whole address space": """
import ctypes, gc
hits = []
base = id(gc) & ~0xFFFFF
for offset in range(-64, 64):
    try:
        chunk = ctypes.string_at(base + offset * (1 << 20), 1 << 20)
    except Exception:
        continue
    at = chunk.find(('SEC' + 'RET==').encode())
    if at >= 0 and chunk[at + 8 : at + 9].isdigit():
        hits.append(offset)
print('hits', hits)
def f(x):
    return 0
""",
    "frames and the sandbox's own code": """
import sys
main = sys.modules['__main__']
for name in dir(main):
    if 'encode' in name or 'frame' in name or 'Verdict' in name:
        print('saw', name)
main._encode = lambda value, budget, depth=0: ['b', True]
main._frame = lambda message: main.__dict__['json'].dumps({'ready': []}).encode()
def f(x):
    return 0
""",
    "builtins and trace hooks": """
import builtins, sys
builtins.bool = lambda *a: True
builtins.AssertionError = type('Nothing', (Exception,), {})
builtins.isinstance = lambda *a: True
sys.settrace(lambda *a: None)
sys.setprofile(lambda *a: None)
class Anything:
    def __eq__(self, other):
        return True
    __hash__ = object.__hash__
def f(x):
    return Anything()
""",
    "a subclass of int whose == always holds": """
class Liar(int):
    def __eq__(self, other):
        return True
    __hash__ = int.__hash__
def f(x):
    return Liar(0)
""",
    "fake replies written to every descriptor": """
import json, os
def frame(m):
    data = json.dumps(m).encode()
    return len(data).to_bytes(4, 'big') + data
fake = frame({'ready': []}) + b''.join(frame({'k': k, 'v': ['b', True]}) for k in range(1, 5))
for fd in range(0, 64):
    try:
        os.write(fd, fake + b'passed\\n{"status": "passed"}\\n')
    except OSError:
        pass
os._exit(0)
""",
    "garbage on the reply pipe": """
import os
os.write(4, (0xFFFFFFF0).to_bytes(4, 'big') + b'x' * 100)
def f(x):
    return 0
""",
    "exit 0 before its tests": "import os\nos._exit(0)",
    "SystemExit from inside the tested call": "import sys\ndef f(x):\n    sys.exit(0)",
    "killing itself from inside the tested call": "import os\ndef f(x):\n    os.kill(os.getpid(), 9)",
}


@pytest.mark.parametrize("attack", list(FORGERIES))
def test_a_program_that_solves_nothing_cannot_forge_a_pass(pool, attack):
    secret = secret_number()
    result = run_one(pool, FORGERIES[attack], f"assert f(3) == {secret}  # SECRET=={secret}")
    assert not result.passed, result
    assert str(secret) not in result.output  # the expected value never reached the program
    assert "found 0" in result.output or "found" not in result.output
    assert "hits []" in result.output or "hits" not in result.output
    assert run_one(pool, **CORRECT).passed  # and the judge still judges


def test_redefining_the_builtins_an_assert_uses_changes_nothing(pool):
    sabotage = "import builtins\nbuiltins.sorted = builtins.set = builtins.len = lambda *a: None\n"
    sorted_ok = "def f(x):\n    return [3, 1, 2]\n"
    tests = "assert sorted(f(0)) == [1, 2, 3]\nassert set(f(0)) == {1, 2, 3}\nassert len(f(0)) == 3"
    assert run_one(pool, sabotage + sorted_ok, tests).passed  # the judge's sorted/set/len are the real ones
    forge = "sorted = set = len = lambda *a: [1, 2, 3]\ndef f(x):\n    return []\n"
    assert not run_one(pool, forge, tests).passed
    fake_math = "import math\nmath.isclose = lambda *a, **k: True\ndef f(x):\n    return 0.0\n"
    assert not run_one(pool, fake_math, "assert math.isclose(f(1), 3.14)", setup="import math").passed


def test_values_cross_exactly_and_nothing_else_crosses(pool):
    program = (
        "import collections, math\n"
        "def f(kind):\n"
        "    return {'int': 2 ** 200 + 1, 'float': 0.1 + 0.2, 'nan': math.nan, 'complex': 1.5 - 2j,\n"
        "            'nested': {(1, frozenset({2})): [b'x', None, {3}]}, 'counter': collections.Counter('aab'),\n"
        "            'gen': (i * i for i in range(4)), 'keys': {'a': 1}.keys(), 'range': range(1, 9, 2)}[kind]\n"
    )
    tests = "\n".join(
        [
            "assert f('int') == 2 ** 200 + 1 and type(f('int')) is int",
            "assert f('float') == 0.30000000000000004 and f('float') != 0.3",
            "assert f('nan') != f('nan')",
            "assert f('complex') == complex(1.5, -2)",
            "assert f('nested') == {(1, frozenset({2})): [b'x', None, {3}]}",
            "assert f('counter') == {'a': 2, 'b': 1} and type(f('counter')) is dict",
            "assert list(f('gen')) == [0, 1, 4, 9]",
            "assert f('keys') == {'a'}",
            "assert f('range') == range(1, 9, 2)",
        ]
    )
    assert run_one(pool, program, tests).passed
    opaque = run_one(pool, "class Node:\n    pass\ndef f(x):\n    return Node()", "assert f(1) == f(1)")
    assert not opaque.passed and "Node" in opaque.error and "not plain data" in opaque.error
    truthy = run_one(pool, "import re\ndef f(s):\n    return re.match('a', s)", "assert f('abc')\nassert not f('xyz')")
    assert truthy.passed  # a match object is only true or false to the judge: MBPP's `assert f(...)`


def test_values_too_big_for_the_judge_fail_cleanly(pool):
    cases = [
        ("def f(x):\n    return 'x' * (9 << 20)", "assert f(1) == 'x'", "bytes"),
        (
            "def f(x):\n    v = []\n    for _ in range(200):\n        v = [v]\n    return v",
            "assert f(1) == []",
            "deeper",
        ),
        ("def f(x):\n    return iter(int, 1)", "assert list(f(1)) == []", "iterator of more than"),
        ("def f(x):\n    return 10 ** 9", "assert [0] * f(1) == []", "MemoryError"),  # the judge's own arithmetic
    ]
    results = run_all(pool, [{"program": p, "tests": t} for p, t, _ in cases] + [CORRECT])
    for (_, _, why), result in zip(cases, results):
        assert result.status == "failed" and why in result.error, result
    assert results[-1].passed


MALFORMED_REPLIES = [
    b"{{{{{",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"k": 1, "v": ["S", [["l", []]]]}',  # an unhashable set member
    b'{"k": 1, "v": ["d", [[["l", []], ["n"]]]]}',  # an unhashable key
    b'{"k": 1, "v": ["i", "zz"]}',
    b'{"k": 1, "v": ["f", "0x1p99999"]}',
    b'{"k": 1, "v": ["r", "0", "5", "0"]}',  # a range of step 0
    b'{"k": 1, "v": ["o", "X", 5]}',  # an object's truth that is not a bool
    b'{"k": 1, "v": ["b", true], "extra": 1}',
    b'{"k": 2, "v": ["b", true]}',  # out of turn
    b'{"k": 1, "raised": 123}',
    b"\xff\xfe not even text",
]


@pytest.mark.parametrize("reply", MALFORMED_REPLIES, ids=range(len(MALFORMED_REPLIES)))
def test_a_malformed_reply_is_a_failure_never_a_crash_or_a_pass(pool, reply):
    program = (
        f"import os, time\ndef f(x):\n    os.write(4, {len(reply).to_bytes(4, 'big') + reply!r})\n    time.sleep(3)"
    )
    result = run_one(pool, program, "assert f(1)")
    assert result.status == "failed" and "malformed" in result.error, result
    assert run_one(pool, **CORRECT).passed


def test_the_judge_decodes_any_bytes_to_a_value_or_a_refusal():
    rng = random.Random(1)
    alphabet = [
        '["n"]',
        '["b",true]',
        '["i","-1f"]',
        '["f","nan"]',
        '["S",[["l",[]]]]',
        '["d",[[["l",[]],1]]]',
        "[",
        "]",
    ]
    for _ in range(3000):
        text = "".join(
            rng.choice(alphabet + [",", '"', "x", "1e999", '["r","0","1","0"]']) for _ in range(rng.randrange(1, 12))
        )
        try:
            node = json.loads(text)
        except ValueError:
            continue
        try:
            _decode_value(node)
        except Exception as err:  # noqa: BLE001
            assert type(err).__name__ == "_Malformed", (text, err)
    deep = ["l", []]
    for _ in range(5000):
        deep = ["l", [deep]]
    with pytest.raises(Exception, match="too deep"):
        _decode_value(deep)


# ---- 2. nothing readable that an unprivileged user could not read -------------------------------
def test_secrets_and_the_hosts_files_are_out_of_reach(pool, tmp_path):
    secret = f"root-only-{secret_number()}"
    baits = []
    if AS_ROOT:  # a root-only file inside a directory the program may read (/usr/lib), and one outside
        for folder in ("/usr/lib", str(tmp_path)):
            bait = Path(folder) / f"dpt-dist-bait-{os.getpid()}"
            bait.write_text(secret)
            os.chmod(bait, 0o600)
            baits.append(str(bait))
    probes = [
        *baits,
        "/etc/shadow",
        "/etc/passwd",
        "/root/.bash_history",
        "/proc/1/environ",
        "/proc/self/status",
        str(ROOT / "data" / "mbpp" / "mbpp.jsonl"),
        "/var/log/dpkg.log",
        os.path.expanduser("~/.ssh/id_rsa"),
    ]
    program = f"""
import ctypes, os
for path in {probes!r}:
    try:
        print('READ', path, open(path).read()[:40])
    except OSError as err:
        print('DENIED', path, type(err).__name__)
header, data = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
ctypes.CDLL(None).syscall({CAPGET}, ctypes.byref(header), ctypes.byref(data))
print('CAPS', list(data))
for name, folder in (('ROOT', '/'), ('TMP', '/tmp')):
    try:
        print(name, sorted(os.listdir(folder)))
    except OSError as err:
        print(name, [])  # Landlock: not even a listing
"""
    try:
        result = run_one(pool, program)
    finally:
        for bait in baits:
            os.remove(bait)
    assert "READ" not in result.output and secret not in result.output, result.output
    assert "CAPS [0, 0, 0, 0, 0, 0]" in result.output  # no capability at all
    if pool.isolation_report()["filesystem"].startswith("minimal root"):
        listed = next(line for line in result.output.splitlines() if line.startswith("ROOT"))
        assert not {"home", "proc", "sys", "var", "run", "work", "opt", "srv"} & set(ast.literal_eval(listed[5:]))
        tmp_listing = next(line for line in result.output.splitlines() if line.startswith("TMP"))
        assert all(name.startswith("dpt-dist-sandbox-") for name in ast.literal_eval(tmp_listing[4:]))


# ---- 3. unix sockets -----------------------------------------------------------------------------
@pytest.fixture
def host_sockets():
    """A world-writable stream and datagram socket under /tmp, and an abstract one, listening."""
    folder = Path("/tmp") / f"dpt-dist-sockets-{os.getpid()}-{secret_number()}"
    folder.mkdir(mode=0o777)
    os.chmod(folder, 0o777)
    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_STREAM)
    addresses = (str(folder / "stream.sock"), str(folder / "dgram.sock"), f"\0dpt-dist-abstract-{secret_number()}")
    sockets = [socket.socket(socket.AF_UNIX, kind) for kind in kinds]
    try:
        for sock, kind, address in zip(sockets, kinds, addresses):
            sock.bind(address)
            sock.settimeout(0.3)
            if kind == socket.SOCK_STREAM:
                sock.listen(4)
            if not address.startswith("\0"):
                os.chmod(address, 0o777)
        yield sockets, list(zip(kinds, addresses))
    finally:
        for sock in sockets:
            sock.close()
        _remove_tree(str(folder))


def test_unix_sockets_outside_its_directory_are_unreachable(pool, host_sockets):
    sockets, targets = host_sockets
    program = f"""
import socket
for kind, target in {targets!r}:
    s = socket.socket(socket.AF_UNIX, kind)
    try:
        s.connect(target) if kind == socket.SOCK_STREAM else s.sendto(b'stolen', target)
        s.sendall(b'stolen') if kind == socket.SOCK_STREAM else None
        print('REACHED', target)
    except OSError as err:
        print('BLOCKED', err)
"""
    result = run_one(pool, program)
    reached = []
    for sock, (kind, _) in zip(sockets, targets):
        try:
            reached.append(sock.accept()[0] if kind == socket.SOCK_STREAM else sock.recv(100))
        except OSError:
            pass
    if pool.isolation_report()["unix_sockets_blocked"]:
        assert not reached and "REACHED" not in result.output, result.output
    # its own directory's sockets work (it is a normal program there)
    own = """
import socket
server, client = socket.socket(socket.AF_UNIX), socket.socket(socket.AF_UNIX)
server.bind('me.sock')
server.listen(1)
client.connect('me.sock')
def f(x):
    return x * x
"""
    assert run_one(pool, own, "assert f(3) == 9").passed


# ---- 4. IPC --------------------------------------------------------------------------------------
IPC_CREAT, IPC_RMID = 0o1000, 0


def sysv_keys(kind: str) -> set[int]:
    with open(f"/proc/sysvipc/{kind}") as f:
        return {int(line.split()[0]) for line in f.readlines()[1:]}


def test_host_ipc_is_unreachable_and_a_programs_ipc_vanishes(pool):
    key, leak_key = random.randrange(1 << 20, 1 << 30), random.randrange(1 << 20, 1 << 30)
    secret = f"shm-secret-{secret_number()}".encode()
    _libc.shmat.restype = ctypes.c_void_p
    shmid = _libc.shmget(key, 4096, IPC_CREAT | 0o644)
    msqid = _libc.msgget(key, IPC_CREAT | 0o666)
    assert shmid >= 0 and msqid >= 0
    address = _libc.shmat(shmid, None, 0)
    ctypes.memmove(address, secret, len(secret))
    _libc.shmdt(ctypes.c_void_p(address))
    program = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
print('SHMGET', libc.shmget({key}, 0, 0), 'MSGGET', libc.msgget({key}, 0))
address = libc.shmat({shmid}, None, 0)
if address not in (None, ctypes.c_void_p(-1).value):
    print('ATTACHED', ctypes.string_at(address, 40))
# and leave objects of its own behind, SysV and POSIX
print(libc.shmget({leak_key}, 4096, 0o1666), libc.msgget({leak_key}, 0o1666), libc.semget({leak_key}, 1, 0o1666))
print('MQ', libc.mq_open(b'/dpt-dist-leak-{leak_key}', os.O_CREAT | os.O_RDWR, 0o666, None))
"""
    try:
        result = run_one(pool, program)
    finally:
        _libc.shmctl(shmid, IPC_RMID, None)
        _libc.msgctl(msqid, IPC_RMID, None)
    assert secret not in result.output.encode() and "ATTACHED" not in result.output, result.output
    if pool.isolation_report()["ipc_namespace"]:
        assert "SHMGET -1 MSGGET -1" in result.output
        for kind in ("shm", "msg", "sem"):
            assert leak_key not in sysv_keys(kind), f"a SysV {kind} object outlived its program"
        assert _libc.mq_open(f"/dpt-dist-leak-{leak_key}".encode(), os.O_RDONLY) == -1  # no POSIX queue left


# ---- 5. signals ----------------------------------------------------------------------------------
def test_every_signal_a_program_can_send_itself_gets_one_answer(pool):
    numbers = [n for n in range(1, signal.SIGRTMAX + 1) if n not in (signal.SIGKILL, signal.SIGSTOP)]
    jobs = [
        {"program": f"import os\nos.kill(os.getpid(), {n})\ndef f(x):\n    return x * x", "tests": "assert f(3) == 9"}
        for n in numbers
    ]
    results = run_all(pool, jobs)
    by_number = dict(zip(numbers, results))
    assert by_number[40].status == "failed" and by_number[40].error == "killed by signal 40"
    assert by_number[signal.SIGSEGV].error == "killed by SIGSEGV"
    for n in (signal.SIGCHLD, signal.SIGURG, signal.SIGWINCH):  # ignored by default: the program goes on
        assert by_number[n].passed
    assert all(r.status in ("failed", "passed", "timeout") for r in results)
    stopped = run_one(pool, "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)")
    assert stopped.status == "timeout"


def test_signals_to_the_harness_and_its_runners_do_not_reach_them(pool):
    targets = sorted(
        {h.proc.pid for h in pool.workers} | {p for p in _descendants(os.getpid()) if is_runner(p)} | {os.getpid()}
    )
    program = f"""
import os
for pid in {targets!r} + [-1, 1]:
    try:
        os.kill(pid, 9)
        print('KILLED', pid)
    except OSError:
        pass
"""
    result = run_one(pool, program)
    assert not any(f"KILLED {pid}\n" in result.output for pid in targets), result.output  # kill(-1): only itself
    assert {h.proc.pid for h in pool.workers} <= set(targets) and run_one(pool, **CORRECT).passed


# ---- 6. hostile directory trees, crashes: every program answered, nothing left -------------------
TREES = {
    # deeper than the recursion limit (shutil.rmtree) and PATH_MAX
    "1500 nested directories": "import os\nfor i in range(1500):\n    os.mkdir('level')\n    os.chdir('level')\n",
    "unreadable, unwritable directories": """
import os
os.makedirs('a/b/c')
open('a/b/c/f', 'w').write('x')
os.chmod('a/b/c', 0)
os.chmod('a/b', 0o500)
os.chmod('a', 0)
os.chmod('.', 0o500)
""",
    "a symlink outside": "import os\nos.symlink('{outside}', 'link')\nos.symlink('{outside}/keep', 'f')\n",
    "many files": "for i in range(5000):\n    open(f'f{{i}}', 'w').close()\n",
    "fifos and sockets": "import os, socket\nos.mkfifo('fifo')\nsocket.socket(socket.AF_UNIX).bind('sock')\n",
}


def test_hostile_directory_trees_are_removed_and_cost_no_other_program_its_result(pool, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("keep me")
    jobs = []
    for program in TREES.values():
        jobs += [
            {"program": program.format(outside=outside) + "def f(x):\n    return x * x", "tests": "assert f(3) == 9"},
            CORRECT,
        ]
    results = run_all(pool, jobs)
    assert all(r.passed for r in results), [(r.status, r.error, r.output[-300:]) for r in results if not r.passed]
    assert (outside / "keep").read_text() == "keep me"


def test_the_tree_remover_needs_neither_recursion_nor_permissions(tmp_path):
    top = tmp_path / "tree"
    os.makedirs(top)
    here = os.open(top, os.O_RDONLY)
    for _ in range(1500):  # deeper than the recursion limit, and than PATH_MAX
        os.mkdir("level-dir", dir_fd=here)
        there = os.open("level-dir", os.O_RDONLY, dir_fd=here)
        os.close(here)
        here = there
    os.close(here)
    os.makedirs(top / "x" / "y")
    os.chmod(top / "x" / "y", 0)
    os.chmod(top / "x", 0)
    assert _remove_tree(str(top)) and not top.exists()
    assert _remove_tree(str(top))  # already gone is fine


def test_a_runner_killed_mid_program_costs_only_that_program(pool):
    runners = [p for p in _descendants(os.getpid()) if is_runner(p)]
    outcome = {}
    job = threading.Thread(
        target=lambda: outcome.update(r=pool.run([{"program": "import time\ntime.sleep(30)", "tests": ""}] * 2))
    )
    job.start()
    time.sleep(1.0)
    for pid in runners:
        os.kill(pid, signal.SIGKILL)
    job.join(timeout=90)
    assert all(r.status == "failed" and "runner" in r.error for r in outcome["r"]), outcome["r"]
    results = run_all(pool, [CORRECT] * 4)
    assert all(r.passed for r in results)


# ---- 7. two harnesses at once -------------------------------------------------------------------
HARNESS = """
import json, sys
from dpt_dist.sandbox import Limits, SandboxPool
with SandboxPool(workers=2, limits=Limits(cpu_seconds=5, wall_seconds=20)) as pool:
    print(json.dumps([h.report["uid"] for h in pool.workers]), flush=True)
    sys.stdin.readline()  # both harnesses are up: go
    if sys.argv[1] == "slow":
        slow = "import time\\ndef f():\\n    time.sleep(2)\\n    return 1"
        jobs = [{"program": slow, "tests": "assert f() == 1"}] * 2
    else:  # every program, and every cleanup after it, is a kill(-1) as its slot's uid
        jobs = [{"program": "import os, signal\\nos.kill(-1, signal.SIGKILL)", "tests": ""}] * 30
    print(json.dumps([r.status for r in pool.run(jobs)]), flush=True)
"""


def test_two_harnesses_never_share_a_uid_nor_kill_each_others_programs(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HARNESS, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for mode in ("slow", "killer")
    ]
    uids = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    statuses = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.stdin.close()
        assert p.wait(timeout=60) == 0
    if AS_ROOT:
        assert not set(uids[0]) & set(uids[1]) and None not in uids[0] + uids[1]
    assert statuses[0] == ["passed", "passed"], statuses  # the other harness's kill(-1)s never reached them
    assert len(statuses[1]) == 30


def test_two_eval_mbpp_runs_at_once_give_the_statuses_of_one_run_alone(tmp_path):
    from dpt_dist.tasks.mbpp import load_problems

    problems = load_problems(ROOT / "data" / "mbpp" / "mbpp.jsonl")
    pairs = [(tid, problems[tid]["code"]) for tid in range(11, 36)]
    pairs += [(36, "def nothing():\n    pass"), (37, "import os\nos.kill(-1, 9)"), (38, "while True:\n    pass")]
    pairs += [(39, "import time\ntime.sleep(2)\n" + problems[39]["code"])]
    completions = tmp_path / "c.jsonl"
    completions.write_text("".join(json.dumps({"task_id": t, "completion": c}) + "\n" for t, c in pairs))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(out: str) -> subprocess.Popen:
        args = ["eval-mbpp", "--completions", str(completions), "--allow-code-execution", "--timeout", "1"]
        return subprocess.Popen(
            [sys.executable, "-m", "dpt_dist.cli", *args, "--workers", "2", "--out", str(tmp_path / out)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def statuses(out: str) -> list[tuple]:
        rows = [json.loads(line) for line in (tmp_path / out / "samples.jsonl").read_text().splitlines()]
        return [(r["task_id"], r["status"]) for r in rows]

    alone = start("alone")
    assert alone.wait(timeout=300) == 0, alone.stderr.read()
    together = [start("a"), start("b")]
    for p in together:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    expected = statuses("alone")
    assert statuses("a") == expected and statuses("b") == expected
    assert dict(expected)[39] == "passed" and dict(expected)[38] == "timeout" and dict(expected)[37] == "failed"
