# I/O accounting shim: runs a qemu program as a child and logs the bytes it moved through syscalls.
#
# Usage (through the wrappers io-accounting.mjs writes): python3 io-shim.py PROGRAM ARGS...
# Runs /usr/bin/PROGRAM ARGS (BENCH_IO_REAL_DIR overrides /usr/bin), waits for it with
# waitid(WNOWAIT) so the exited child is still a zombie whose /proc/PID/io can be read, reads
# that, reaps it, appends one JSON line to the file named by BENCH_IO_LOG and exits as the child
# did (same code, or the same signal). Signals sent to the shim are forwarded to the child.
#
# /proc/PID/io of a whole thread group: rchar/wchar are the bytes passed through read/write
# syscalls (read, pread, readv, preadv, write, ...; page-cache hits included; NOT recvmsg/sendmsg
# on sockets), read_bytes/write_bytes what reached the block layer.
#
# qemu-nbd --fork daemonises (fork, then daemon(3)): the shim then forks a keeper that marks
# itself child subreaper, runs qemu-nbd, hands the foreground parent's exit status back at once,
# and keeps waiting for the reparented daemon, whose I/O it logs when the daemon exits; a last
# "keeper-done" line says the keeper has logged everything.
import ctypes
import json
import os
import signal
import sys
import time

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
PR_SET_CHILD_SUBREAPER = 36
IO_FIELDS = ("rchar", "wchar", "syscr", "syscw", "read_bytes", "write_bytes", "cancelled_write_bytes")


def read_io(pid):
    """The counters of /proc/PID/io as a dict (empty if unreadable)."""
    try:
        with open(f"/proc/{pid}/io") as f:
            pairs = (line.split(":") for line in f)
            return {k.strip(): int(v) for k, v in pairs if k.strip() in IO_FIELDS}
    except OSError:
        return {}


def log(entry):
    """Appends one JSON line to BENCH_IO_LOG in a single write (O_APPEND)."""
    path = os.environ.get("BENCH_IO_LOG")
    if not path:
        return
    data = (json.dumps(entry) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def wait_and_account(pid, argv, role, started):
    """Waits for child `pid` (or any child if pid is None), logs its I/O, reaps it; returns (pid, status)."""
    idtype, ident = (os.P_ALL, 0) if pid is None else (os.P_PID, pid)
    info = os.waitid(idtype, ident, os.WEXITED | os.WNOWAIT)
    if info is None:
        raise ChildProcessError
    io = read_io(info.si_pid)
    _, status = os.waitpid(info.si_pid, 0)
    log({"argv": argv, "pid": info.si_pid, "role": role, "seconds": round(time.monotonic() - started, 3), **io})
    return info.si_pid, status


def exit_like(status):
    """Exits with the child's exit code, or dies of the signal that killed it."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        os._exit(128 + sig)
    os._exit(os.WEXITSTATUS(status))


def spawn(real, args):
    """Starts the real program with signal forwarding in place (a signal before the spawn is kept)."""
    state = {"pid": None, "pending": []}

    def forward(sig, _frame):
        if state["pid"] is None:
            state["pending"].append(sig)
        else:
            try:
                os.kill(state["pid"], sig)
            except ProcessLookupError:
                pass

    for sig in FORWARDED:
        signal.signal(sig, forward)
    # exec resets caught signals to their default in the child: only the shim forwards.
    state["pid"] = os.posix_spawn(real, [real, *args], os.environ)
    for sig in state["pending"]:
        os.kill(state["pid"], sig)
    return state["pid"]


def run_plain(real, argv):
    started = time.monotonic()
    pid = spawn(real, argv[1:])
    _, status = wait_and_account(pid, argv, "main", started)
    exit_like(status)


def run_forking(real, argv):
    """qemu-nbd --fork: the keeper accounts for the daemon after the foreground has returned."""
    started = time.monotonic()
    status_r, status_w = os.pipe()
    keeper = os.fork()
    if keeper > 0:
        os.close(status_w)
        data = b""
        while chunk := os.read(status_r, 64):
            data += chunk
        exit_like(int(data) if data else 1 << 8)
    os.close(status_r)
    os.setsid()
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    pid = spawn(real, argv[1:])
    # The caller may be reading our stdout/stderr to EOF: only qemu-nbd keeps them now.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _, status = wait_and_account(pid, argv, "main", started)
    os.write(status_w, str(status).encode())
    os.close(status_w)
    while True:
        try:
            wait_and_account(None, argv, "descendant", started)
        except ChildProcessError:
            break
    log({"argv": argv, "role": "keeper-done", "pid": pid})
    os._exit(0)


def main():
    program = sys.argv[1]
    real = os.path.join(os.environ.get("BENCH_IO_REAL_DIR", "/usr/bin"), program)
    argv = [program, *sys.argv[2:]]
    if program == "qemu-nbd" and "--fork" in argv:
        run_forking(real, argv)
    else:
        run_plain(real, argv)


main()
