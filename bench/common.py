"""Helpers shared by the benchmark modules: running and measuring one
command, sizes, the machine's description, statistics.

Python 3 standard library only."""

import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MiB = 1 << 20
GiB = 1 << 30


def parse_size(s):
    """'1G' -> 2**30. Binary suffixes, like ss-genimage."""
    s = s.strip()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    for suffix in ("iB", "B"):
        if s.endswith(suffix) and len(s) > len(suffix):
            s = s[: -len(suffix)]
            break
    if s and s[-1].upper() in mult:
        return int(float(s[:-1]) * mult[s[-1].upper()])
    return int(s)


def fmt_size(n):
    """Binary size label for file names and headings: 1G, 256M, 16K."""
    for unit, suffix in ((1 << 30, "G"), (1 << 20, "M"), (1 << 10, "K")):
        if n >= unit and n % unit == 0:
            return "%d%s" % (n // unit, suffix)
    return str(n)


def log(msg):
    print("[bench] " + msg, file=sys.stderr, flush=True)


class CommandFailed(Exception):
    pass



class Skipped(Exception):
    """A phase or workload that cannot run here (no root, no runsc, ...)."""

class Result:
    """One child process: wall seconds, CPU seconds, peak RSS, exit status,
    output, and how busy the rest of the machine was meanwhile."""

    def __init__(self, cmd, wall, ru, rc, stdout, stderr, bg_cpu):
        self.cmd, self.wall, self.rc = cmd, wall, rc
        self.maxrss_kib = ru.ru_maxrss
        self.cpu = ru.ru_utime + ru.ru_stime
        self.stdout, self.stderr = stdout, stderr
        self.bg_cpu = bg_cpu

    def tail(self, n=5):
        lines = (self.stderr or self.stdout).strip().splitlines()
        return " | ".join(lines[-n:])


_HZ = os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds():
    """CPU seconds the whole machine has spent busy (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: all but idle/iowait
    return (sum(v[:8]) - v[3] - v[4]) / _HZ


def run(cmd, workdir, env=None, check=True, unset=()):
    """Run cmd and measure it with os.wait4 (not subprocess.run: only wait4
    gives the rusage of this one child rather than of all children so far).

    Output goes to files, not pipes: a chatty child must never block on a
    full pipe while we sit in wait4, and reading pipes concurrently would
    put our own work inside the timed interval."""
    out_path = os.path.join(workdir, ".stdout")
    err_path = os.path.join(workdir, ".stderr")
    full_env = dict(os.environ)
    for k in unset:
        full_env.pop(k, None)
    if env:
        full_env.update(env)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        busy0 = busy_cpu_seconds()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        busy = busy_cpu_seconds() - busy0
    p.returncode = os.waitstatus_to_exitcode(status)  # keeps Popen from waiting again
    with open(out_path, "rb") as f:
        stdout = f.read().decode("utf-8", "replace")
    with open(err_path, "rb") as f:
        stderr = f.read().decode("utf-8", "replace")
    # What others ran meanwhile, as a fraction of the machine: the figures
    # of a run that shared the CPUs are not the tool's alone.
    bg = max(0.0, busy - ru.ru_utime - ru.ru_stime) / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0
    r = Result(cmd, wall, ru, p.returncode, stdout, stderr, bg)
    if check and r.rc != 0:
        raise CommandFailed("%s exited %d: %s" % (" ".join(cmd), r.rc, r.tail()))
    return r



def du_sb(*paths):
    """Apparent size in bytes, as `du -sb` (the figure the targets use)."""
    total = 0
    for p in paths:
        if os.path.exists(p):
            out = subprocess.run(["du", "-sb", p], check=True, capture_output=True, text=True).stdout
            total += int(out.split()[0])
    return total


def rm(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)



def same_content(a, b):
    """cmp(1) for files, diff -r for directories: byte equality, outside
    any timing."""
    if os.path.isdir(a):
        return subprocess.run(["diff", "-r", "-q", "--no-dereference", a, b],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


def logical_bytes(path):
    """Apparent bytes of a file, or of every file below a directory."""
    if os.path.isdir(path):
        total = 0
        for d, _, files in os.walk(path):
            for f in files:
                total += os.lstat(os.path.join(d, f)).st_size
        return total
    return os.path.getsize(path)


def allocated_bytes(path):
    """Bytes the filesystem allocated (sparse restores allocate less)."""
    if os.path.isdir(path):
        total = 0
        for d, _, files in os.walk(path):
            for f in files:
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
        return total
    return os.stat(path).st_blocks * 512


def drop_caches():
    """Write back and drop the page cache, dentries and inodes (root only):
    the next read of a file comes from the disk. Returns False when not
    permitted."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def read_through(path):
    """Read a file, or every file below a directory, to load it into the
    page cache (untimed)."""
    paths = [path]
    if os.path.isdir(path):
        paths = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs]
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.read(4 * MiB):
                pass


def parse_json_output(text):
    """The contract is one JSON object on stdout; accept it on the last
    non-empty line too, in case a tool prints a banner first."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        lines = [l for l in text.splitlines() if l.strip()]
        if lines:
            return json.loads(lines[-1])
        raise


def first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        text = (out.stdout or out.stderr).strip()
        return text.splitlines()[0] if text else "?"
    except (OSError, subprocess.SubprocessError):
        return None


def meminfo():
    info = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, v = line.split(":", 1)
            info[k] = int(v.split()[0]) * 1024
    return info



def machine_info():
    """What the figures came from: CPU model, cores, memory, kernel."""
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = meminfo()
    virt = None
    try:
        out = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True, timeout=10)
        virt = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return {
        "cpu": cpu,
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": mem.get("MemTotal"),
        "memory_available_bytes": mem.get("MemAvailable"),
        "kernel": platform.release(),
        "virtualization": virt,
        "python": platform.python_version(),
        "loadavg_at_start": [float(x) for x in load],
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def machine_line(m):
    return "%s, %d cores, %.1f GiB RAM, kernel %s%s" % (
        m["cpu"], m["cores_online"], m["memory_bytes"] / GiB, m["kernel"],
        " (virtualization: %s)" % m["virtualization"]
        if m.get("virtualization") not in (None, "none") else "")


def fs_type(path):
    best, fstype = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
    return fstype




def write_probe(directory, size=256 * MiB):
    """Write throughput of a directory's filesystem, twice, fsync
    included. On VMs whose memory the host backs lazily, writing to tmpfs
    can run several times slower than memcpy and vary from run to run; the
    figure is here so a reader can tell a slow machine from a slow tool."""
    path = os.path.join(directory, ".probe")
    block = os.urandom(4 * MiB)
    rates = []
    for _ in range(2):
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
            f.flush()
            os.fsync(f.fileno())
        rates.append(round(size / (time.perf_counter() - t0) / 1e6))
        os.unlink(path)
    return rates


def summarize(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}
