"""Helpers shared by the benchmark modules: running and measuring one
command, sizes, the machine's description, statistics.

Python 3 standard library only."""

import datetime
import errno
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

    def __init__(self, cmd, wall, cpu, maxrss_kib, rc, stdout, stderr, bg_cpu):
        self.cmd, self.wall, self.rc = cmd, wall, rc
        self.maxrss_kib = maxrss_kib
        self.cpu = cpu
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


def rusage_launcher(workdir):
    """The ss-rusage binary (bench/rusage.c): build/bench's, else compiled
    into workdir once. None when no compiler is at hand either."""
    built = os.path.join(ROOT, "build", "bench", "ss-rusage")
    if os.access(built, os.X_OK):
        return built
    own = os.path.join(workdir, "ss-rusage")
    if not os.access(own, os.X_OK):
        tmp = own + ".tmp"
        r = subprocess.run([os.environ.get("CC", "cc"), "-O2", "-std=c11", "-D_GNU_SOURCE", "-o", tmp,
                            os.path.join(HERE, "rusage.c")], capture_output=True)
        if r.returncode != 0:
            return None
        os.rename(tmp, own)
    return own


def run(cmd, workdir, env=None, check=True, unset=()):
    """Run cmd and measure it: wall and CPU seconds and peak RSS of this
    one command (and what it waited for).

    The command is started by ss-rusage, a small C process that forks it,
    times it and reports its wait4 rusage: a child forked from this Python
    process would report our own ~40 MiB as its peak RSS (see
    bench/rusage.c). Without a compiler it falls back to wait4 here, and
    the RSS figures are floors, not measurements.

    Output goes to files, not pipes: a chatty child must never block on a
    full pipe while we sit in wait4, and reading pipes concurrently would
    put our own work inside the timed interval."""
    out_path = os.path.join(workdir, ".stdout")
    err_path = os.path.join(workdir, ".stderr")
    ru_path = os.path.join(workdir, ".rusage")
    full_env = dict(os.environ)
    for k in unset:
        full_env.pop(k, None)
    if env:
        full_env.update(env)
    launcher = rusage_launcher(workdir)
    argv = [launcher, ru_path, "--"] + list(cmd) if launcher else list(cmd)
    rm(ru_path)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        busy0 = busy_cpu_seconds()
        t0 = time.perf_counter()
        p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=full_env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        busy = busy_cpu_seconds() - busy0
    p.returncode = os.waitstatus_to_exitcode(status)  # keeps Popen from waiting again
    cpu, maxrss = ru.ru_utime + ru.ru_stime, ru.ru_maxrss
    rc = p.returncode
    if launcher:
        try:
            with open(ru_path) as f:
                w_ns, ut, st, maxrss, status = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            raise CommandFailed("%s: ss-rusage reported nothing (exit %d)" % (" ".join(cmd), rc))
        wall, cpu, rc = w_ns / 1e9, (ut + st) / 1e6, os.waitstatus_to_exitcode(status)
    with open(out_path, "rb") as f:
        stdout = f.read().decode("utf-8", "replace")
    with open(err_path, "rb") as f:
        stderr = f.read().decode("utf-8", "replace")
    # What others ran meanwhile, as a fraction of the machine: the figures
    # of a run that shared the CPUs are not the tool's alone.
    bg = max(0.0, busy - cpu) / (wall * (os.cpu_count() or 1)) if wall > 0 else 0.0
    r = Result(cmd, wall, cpu, maxrss, rc, stdout, stderr, bg)
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



def data_extents(fd, size):
    """[(start, end)] of a file's data (SEEK_DATA/SEEK_HOLE); the whole
    file where the filesystem cannot tell."""
    out, off = [], 0
    try:
        while off < size:
            try:
                d = os.lseek(fd, off, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            h = os.lseek(fd, d, os.SEEK_HOLE)
            out.append((d, h))
            off = h
    except OSError:
        return [(0, size)]
    return out


def same_sparse(a, b):
    """Byte equality of two files, reading only where either has data:
    holes read as zeros, so where both have holes they are equal. cmp(1)
    would read a 16 GiB sparse file's every zero, twice."""
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    size = os.path.getsize(a)
    with open(a, "rb") as fa, open(b, "rb") as fb:
        spans = sorted(data_extents(fa.fileno(), size) + data_extents(fb.fileno(), size))
        end = 0
        for start, stop in spans:
            start = max(start, end)
            while start < stop:
                n = min(stop - start, 4 * MiB)
                if os.pread(fa.fileno(), n, start) != os.pread(fb.fileno(), n, start):
                    return False
                start += n
            end = max(end, stop)
    return True


def same_content(a, b):
    """cmp(1) for files (same_sparse for a file that is mostly holes),
    diff -r for directories: byte equality, outside any timing."""
    if os.path.isdir(a):
        return subprocess.run(["diff", "-r", "-q", "--no-dereference", a, b],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
    st = os.stat(a)
    if st.st_blocks * 512 < st.st_size // 2 and os.path.isfile(b):
        return same_sparse(a, b)
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


def settle_memory(directory, nbytes, cap=4 << 30):
    """Write nbytes (at most cap) to a file in directory and remove it, so
    that the next command takes memory whose first touch is cheap.

    On a VM whose host reclaims guest memory that has sat idle (a PVM or
    Firecracker guest, say), a page the guest frees and allocates again
    much later costs several times a warm one at its first touch: in one
    run a restore's 700 MB of tmpfs pages took 1.6 s to write at one
    moment and 0.15 s right after. Which command meets such memory
    depends on what ran before it, not on the tool, so every measured
    command gets the same start: the pages this write touched and freed
    are the first the kernel hands out again. Returns the seconds it
    took (not part of any measurement). Only a directory in memory is
    used: on a disk it would write gigabytes for nothing."""
    if fs_type(os.path.realpath(directory)) not in ("tmpfs", "ramfs"):
        return 0.0
    n = min(int(nbytes), cap)
    try:
        st = os.statvfs(directory)
        n = min(n, st.f_bavail * st.f_frsize // 2)
    except OSError:
        return 0.0
    if n <= 0:
        return 0.0
    path = os.path.join(directory, ".settle")
    block = bytes(4 * MiB)
    t0 = time.perf_counter()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            left = n
            while left > 0:
                left -= os.write(fd, block[:min(left, len(block))])
        finally:
            os.close(fd)
    except OSError:
        pass
    finally:
        rm(path)
    return time.perf_counter() - t0


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



def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_caches():
    """'L1d 32K, L2 1024K, L3 32768K' of CPU 0, from sysfs."""
    out = []
    base = "/sys/devices/system/cpu/cpu0/cache"
    for d in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        level, kind, size = (_read(os.path.join(base, d, x)) for x in ("level", "type", "size"))
        if level and size and kind != "Instruction":
            out.append("L%s%s %s" % (level, "d" if kind == "Data" else "", size))
    return ", ".join(out) or None


def machine_info(workdir=None):
    """What the figures came from: CPU model and features, cores, caches,
    memory, kernel, transparent huge pages, and the workdir's filesystem
    (tmpfs or a disk)."""
    cpu, flags, mhz = "?", set(), None
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name") and cpu == "?":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("cpu MHz") and mhz is None:
                mhz = float(line.split(":", 1)[1])
    mem = meminfo()
    virt = None
    try:
        out = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True, timeout=10)
        virt = out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled") or ""
    up = _read("/proc/uptime")
    info = {
        "cpu": cpu,
        "cpu_mhz": mhz,
        "cpu_features": sorted(flags & {"avx2", "avx512f", "avx512bw", "sha_ni", "bmi2", "sse4_2"}),
        "cpu_caches": cpu_caches(),
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": mem.get("MemTotal"),
        "memory_available_bytes": mem.get("MemAvailable"),
        "swap_bytes": mem.get("SwapTotal"),
        "transparent_hugepages": thp[thp.find("[") + 1:thp.find("]")] if "[" in thp else thp or None,
        "kernel": platform.release(),
        "virtualization": virt,
        "uptime_s": round(float(up.split()[0])) if up else None,
        "python": platform.python_version(),
        "loadavg_at_start": [float(x) for x in load],
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    if workdir:
        info["workdir"] = workdir
        info["workdir_fs"] = fs_type(workdir)
    return info


def machine_line(m):
    usable = m.get("cores_usable")
    return "%s, %d cores%s, %.1f GiB RAM, kernel %s%s" % (
        m["cpu"], m["cores_online"],
        " (%d usable)" % usable if usable and usable != m["cores_online"] else "",
        m["memory_bytes"] / GiB, m["kernel"],
        " (virtualization: %s)" % m["virtualization"]
        if m.get("virtualization") not in (None, "none") else "")


def machine_details(m):
    """The rest of what the figures depend on, for the report's header;
    older results.json files lack some of it."""
    parts = []
    if m.get("cpu_mhz"):
        parts.append("%.0f MHz" % m["cpu_mhz"])
    if m.get("cpu_features"):
        parts.append("features " + " ".join(m["cpu_features"]))
    if m.get("cpu_caches"):
        parts.append("caches " + m["cpu_caches"])
    if m.get("memory_available_bytes"):
        parts.append("%.1f GiB available at the start" % (m["memory_available_bytes"] / GiB))
    if m.get("swap_bytes") is not None:
        parts.append("swap %.1f GiB" % (m["swap_bytes"] / GiB))
    if m.get("transparent_hugepages"):
        parts.append("transparent huge pages: %s" % m["transparent_hugepages"])
    if m.get("uptime_s") is not None:
        parts.append("up %.1f h" % (m["uptime_s"] / 3600))
    if m.get("workdir"):
        parts.append("workdir %s on %s" % (m["workdir"], m.get("workdir_fs", "?")))
    return "; ".join(parts)


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
