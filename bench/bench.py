#!/usr/bin/python3
"""snapstream benchmark harness: snapstream against zstd, restic and casync.

Run from anywhere:

    /usr/bin/python3 bench/bench.py [--size 1G] [--runs 5] [--quick]
        [--workdir /dev/shm/ssbench] [--snapstream PATH] [--genimage PATH]
        [--out DIR] [--peers zstd,restic,casync]
        [--rss-sizes 1G,8G] [--sweep-chunks 16K,32K,64K]

Every figure is measured --runs times and reported as median and min-max.
Wall time and peak RSS come from os.wait4() on the child (ru_maxrss, which
on Linux also covers the child's own waited-for children). All data lives
on tmpfs and nothing is dropped from the page cache: these are warm-cache,
CPU/memory-bound figures, not disk figures. bench/README.md explains each
figure and the targets.

Python 3 standard library only.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MiB = 1 << 20
KNOWN_PEERS = ("zstd", "restic", "casync")
RESTIC_PASSWORD = "ssbench"  # throwaway repos on tmpfs; the key is not a secret


# ---------------------------------------------------------------- helpers

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


def run(cmd, workdir, env=None, check=True):
    """Run cmd and measure it with os.wait4 (not subprocess.run: only wait4
    gives the rusage of this one child rather than of all children so far).

    Output goes to files, not pipes: a chatty child must never block on a
    full pipe while we sit in wait4, and reading pipes concurrently would
    put our own work inside the timed interval."""
    out_path = os.path.join(workdir, ".stdout")
    err_path = os.path.join(workdir, ".stderr")
    full_env = dict(os.environ)
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


def files_equal(a, b):
    """cmp(1): byte equality, outside any timing."""
    return subprocess.run(["cmp", "-s", a, b]).returncode == 0


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


def machine_info(workdir):
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = meminfo()
    return {
        "cpu": cpu,
        "cores_online": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": mem.get("MemTotal"),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "workdir": workdir,
        "workdir_fs": fs_type(workdir),
        "page_cache": "warm (nothing dropped; all data on tmpfs)",
        "tmpfs_write_MBps": tmpfs_write_probe(workdir),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def fs_type(path):
    best, fstype = "", "?"
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            mnt = parts[1]
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
    return fstype


def tmpfs_write_probe(workdir, size=256 * MiB):
    """Write throughput of the workdir's filesystem, twice. On VMs whose
    memory the host backs lazily, writing to tmpfs can run several times
    slower than memcpy and vary from run to run; the figure is here so a
    reader can tell a slow machine from a slow tool."""
    path = os.path.join(workdir, ".probe")
    block = os.urandom(4 * MiB)
    rates = []
    for _ in range(2):
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
        rates.append(round(size / (time.perf_counter() - t0) / 1e6))
        os.unlink(path)
    return rates


def summarize(values):
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


# ---------------------------------------------------------------- harness

class Bench:
    def __init__(self, args):
        self.args = args
        self.wd = args.workdir
        self.samples = []   # every measured run, raw
        self.notes = []     # human-readable caveats, go into the report
        self.failures = []
        self.images = {}    # genimage reports
        self.env_restic = {"RESTIC_PASSWORD": RESTIC_PASSWORD,
                           "RESTIC_CACHE_DIR": os.path.join(self.wd, "restic-cache")}

    # -- tools

    def find_genimage(self):
        if self.args.genimage:
            return self.args.genimage
        for cand in (os.path.join(ROOT, "build", "bench", "ss-genimage"),):
            if os.access(cand, os.X_OK):
                return cand
        # Not built yet (the tree may not configure while modules are being
        # written): compile the single libc-only file ourselves.
        exe = os.path.join(self.wd, "ss-genimage")
        cc = os.environ.get("CC", "cc")
        log("ss-genimage not built; compiling %s with %s" % (os.path.join(HERE, "genimage.c"), cc))
        subprocess.run([cc, "-O2", "-std=c11", "-D_GNU_SOURCE", "-o", exe,
                        os.path.join(HERE, "genimage.c")], check=True)
        return exe

    def find_snapstream(self):
        if self.args.no_snapstream:
            return None
        if self.args.snapstream:
            if not os.access(self.args.snapstream, os.X_OK):
                sys.exit("bench: --snapstream %s is not an executable" % self.args.snapstream)
            return self.args.snapstream
        for cand in (os.path.join(ROOT, "build", "cli", "snapstream"),
                     os.path.join(ROOT, "build", "snapstream")):
            if os.access(cand, os.X_OK):
                return cand
        return shutil.which("snapstream")

    # -- recording

    def record(self, tool, scenario, run_idx, res=None, size=None, **extra):
        s = {"tool": tool, "scenario": scenario, "run": run_idx, "image_size": size or self.size}
        if res is not None:
            s.update({"wall_s": round(res.wall, 4), "cpu_s": round(res.cpu, 4),
                      "maxrss_kib": res.maxrss_kib, "bg_cpu_frac": round(res.bg_cpu, 3),
                      "rc": res.rc, "cmd": res.cmd})
        s.update(extra)
        self.samples.append(s)
        return s

    def attempt(self, tool, what, fn):
        """Run one tool's part of a run; a failure is recorded and reported,
        and the other tools go on, so one broken peer costs one column."""
        try:
            fn()
            return True
        except (CommandFailed, OSError, ValueError, KeyError) as e:
            msg = "%s %s failed: %s" % (tool, what, e)
            log(msg)
            self.failures.append(msg)
            self.record(tool, what, None, error=str(e))
            return False

    # -- images

    def gen(self, size, seed, out, report):
        r = run([self.genimage, "--size", str(size), "--seed", str(seed), "--out", out,
                 "--report-json", report, "--quiet"], self.wd)
        with open(report) as f:
            rep = json.load(f)
        rep["wall_s"] = round(r.wall, 3)
        return rep

    def gen_dirty(self, base, seed, out, report, fraction=0.01):
        r = run([self.genimage, "--dirty", str(fraction), "--base", base, "--seed", str(seed),
                 "--out", out, "--report-json", report, "--quiet"], self.wd)
        with open(report) as f:
            rep = json.load(f)
        rep["wall_s"] = round(r.wall, 3)
        return rep

    def check_space(self, need):
        avail = shutil.disk_usage(self.wd).free
        if avail < need:
            sys.exit("bench: %s has %.1f GiB free, this needs ~%.1f GiB"
                     % (self.wd, avail / (1 << 30), need / (1 << 30)))

    # -- snapstream

    def ss(self, *argv):
        cmd = [self.snapstream] + list(argv)
        if self.args.threads:
            cmd += ["--threads", str(self.args.threads)]
        return cmd

    def ss_push(self, image, snap, store, parent=None, chunk=None):
        cmd = self.ss("push", image, snap, "--store", store, "--json") + shlex.split(self.args.push_args)
        if parent:
            cmd += ["--parent", parent]
        if chunk:
            cmd += ["--chunk-avg", str(chunk), "--chunk-min", str(chunk // 4),
                    "--chunk-max", str(chunk * 4)]
        r = run(cmd, self.wd)
        return r, parse_json_output(r.stdout)

    def ss_pull(self, snap, dest, store):
        r = run(self.ss("pull", snap, dest, "--store", store, "--json"), self.wd)
        return r, parse_json_output(r.stdout)

    def run_snapstream(self, i, A, B, changed):
        d = os.path.join(self.wd, "snapstream")
        rm(d)
        store, snaps = os.path.join(d, "store"), os.path.join(d, "snaps")
        os.makedirs(snaps)
        snap = lambda name: os.path.join(snaps, name)

        r, j = self.ss_push(A, snap("a"), store)
        stored = du_sb(store)
        manifests = du_sb(snaps)
        self.record("snapstream", "cold", i, r, stored_bytes=stored, manifest_bytes=manifests, json=j)

        r, j = self.ss_push(A, snap("a-warm"), store)
        self.record("snapstream", "warm", i, r, json=j)

        # The same again naming the previous snapshot as parent, as a
        # checkpointer does for the next checkpoint of a workload: cut
        # points are predicted from the parent, so most chunking is skipped.
        r, j = self.ss_push(A, snap("a-warm-parent"), store, parent=snap("a"))
        self.record("snapstream", "warm-parent", i, r, json=j)

        before = du_sb(store, snaps)
        r, j = self.ss_push(B, snap("b"), store, parent=snap("a"))
        grown = du_sb(store, snaps) - before
        self.record("snapstream", "incremental", i, r, json=j, changed_bytes=changed,
                    uploaded_bytes=j["new_stored_bytes"], store_growth_bytes=grown,
                    ratio=j["new_stored_bytes"] / changed if changed else None)

        dest = os.path.join(d, "restore.img")
        r, j = self.ss_pull(snap("a"), dest, store)
        ok = files_equal(A, dest) if i == 0 or self.args.verify_all else None
        self.record("snapstream", "pull", i, r, json=j, verified=ok,
                    dest_allocated_bytes=os.stat(dest).st_blocks * 512)
        if ok is False:
            raise CommandFailed("pulled image differs from the pushed one")
        rm(d)

    # -- peers

    def run_zstd(self, i, A, B, changed):
        d = os.path.join(self.wd, "zstd")
        rm(d)
        os.makedirs(d)
        out = os.path.join(d, "a.zst")
        r = run(["zstd", "-1", "-T0", "-q", "-f", A, "-o", out], self.wd)
        self.record("zstd", "cold", i, r, stored_bytes=os.path.getsize(out))
        # Not a target, a reference point for pull: plain decompression.
        dest = os.path.join(d, "restore.img")
        r = run(["zstd", "-d", "-T0", "-q", "-f", out, "-o", dest], self.wd)
        ok = files_equal(A, dest) if i == 0 or self.args.verify_all else None
        self.record("zstd", "pull", i, r, verified=ok)
        if ok is False:
            raise CommandFailed("zstd -d output differs from the image")
        rm(d)

    def restic(self, repo, *argv):
        return ["restic", "-r", repo] + list(argv)

    def run_restic(self, i, A, B, changed):
        d = os.path.join(self.wd, "restic")
        rm(d)
        rm(self.env_restic["RESTIC_CACHE_DIR"])
        os.makedirs(d)
        repo = os.path.join(d, "repo")
        env = self.env_restic
        run(self.restic(repo, "init"), self.wd, env=env)  # outside timing

        r = run(self.restic(repo, "backup", "--quiet", A), self.wd, env=env)
        self.record("restic", "cold", i, r, stored_bytes=du_sb(repo))

        # A second backup of an unchanged path takes restic's parent-
        # snapshot shortcut (size/mtime/inode unchanged: the file is not
        # read at all). That is its real warm behaviour, recorded as
        # "warm"; "warm-force" re-reads and re-chunks like a push of a new
        # checkpoint must, and is what the warm target compares against.
        r = run(self.restic(repo, "backup", "--quiet", A), self.wd, env=env)
        self.record("restic", "warm", i, r)
        r = run(self.restic(repo, "backup", "--quiet", "--force", A), self.wd, env=env)
        self.record("restic", "warm-force", i, r)

        # Restore before B is backed up, so "latest" is image A.
        target = os.path.join(d, "restore")
        r = run(self.restic(repo, "restore", "latest", "--target", target), self.wd, env=env)
        restored = os.path.join(target, os.path.abspath(A).lstrip("/"))
        ok = files_equal(A, restored) if i == 0 or self.args.verify_all else None
        self.record("restic", "pull", i, r, verified=ok)
        if ok is False:
            raise CommandFailed("restic restore output differs from the image")
        rm(target)

        before = du_sb(repo)
        r = run(self.restic(repo, "backup", "--quiet", B), self.wd, env=env)
        grown = du_sb(repo) - before
        self.record("restic", "incremental", i, r, changed_bytes=changed, uploaded_bytes=grown,
                    ratio=grown / changed if changed else None)
        rm(d)
        rm(self.env_restic["RESTIC_CACHE_DIR"])

    def run_casync(self, i, A, B, changed):
        d = os.path.join(self.wd, "casync")
        rm(d)
        os.makedirs(d)
        store = os.path.join(d, "store")
        idx = lambda name: os.path.join(d, name + ".caibx")

        r = run(["casync", "make", "--store=" + store, idx("a"), A], self.wd)
        self.record("casync", "cold", i, r, stored_bytes=du_sb(store),
                    index_bytes=os.path.getsize(idx("a")))

        r = run(["casync", "make", "--store=" + store, idx("a-warm"), A], self.wd)
        self.record("casync", "warm", i, r)

        dest = os.path.join(d, "restore.img")
        r = run(["casync", "extract", "--store=" + store, idx("a"), dest], self.wd)
        ok = files_equal(A, dest) if i == 0 or self.args.verify_all else None
        self.record("casync", "pull", i, r, verified=ok,
                    dest_allocated_bytes=os.stat(dest).st_blocks * 512)
        if ok is False:
            raise CommandFailed("casync extract output differs from the image")
        rm(dest)

        before = du_sb(store)
        r = run(["casync", "make", "--store=" + store, idx("b"), B], self.wd)
        grown = du_sb(store) - before + os.path.getsize(idx("b"))
        self.record("casync", "incremental", i, r, changed_bytes=changed, uploaded_bytes=grown,
                    ratio=grown / changed if changed else None)
        rm(d)

    # -- phases

    def main_phase(self):
        size = self.size
        A = os.path.join(self.wd, "A-%s.img" % fmt_size(size))
        B = os.path.join(self.wd, "B-%s.img" % fmt_size(size))
        # image, dirtied image, a restore, stores: ~3.5x the image at most
        self.check_space(int(size * 3.5))
        log("generating %s image A (seed %d) and B = A with 1%% of pages dirtied"
            % (fmt_size(size), self.args.seed))
        self.images["A"] = self.gen(size, self.args.seed, A, A + ".json")
        self.images["B"] = self.gen_dirty(A, self.args.seed + 1, B, B + ".json")
        changed = self.images["B"]["changed_bytes"]

        tools = []
        if self.snapstream:
            tools.append(("snapstream", self.run_snapstream))
        for p in self.peers:
            tools.append((p, getattr(self, "run_" + p)))
        broken = set()
        # Tools interleave within each run, so slow drifts of the machine
        # (other tenants, host memory) spread over all of them alike.
        for i in range(self.args.runs):
            for name, fn in tools:
                if name in broken:
                    continue
                log("run %d/%d: %s" % (i + 1, self.args.runs, name))
                if not self.attempt(name, "run %d" % (i + 1), lambda: fn(i, A, B, changed)):
                    broken.add(name)  # a tool that failed once is not retried
                    rm(os.path.join(self.wd, name))
        for p in (A, B):
            rm(p)

    def rss_phase(self):
        """Peak RSS of snapstream push and pull against image size: memory
        must not grow with the image (requirement: 8 GiB within 10% of
        1 GiB). Images are deleted as soon as they are measured."""
        if not self.snapstream:
            self.notes.append("--rss-sizes skipped: snapstream not available")
            return
        for size in self.rss_sizes:
            img = os.path.join(self.wd, "rss-%s.img" % fmt_size(size))
            self.check_space(int(size * 2.1))  # image, store, sparse restore
            log("rss: generating %s image" % fmt_size(size))
            self.images["rss-" + fmt_size(size)] = self.gen(size, self.args.seed, img, img + ".json")
            d = os.path.join(self.wd, "snapstream-rss")
            try:
                for i in range(self.args.runs):
                    log("rss %s: run %d/%d" % (fmt_size(size), i + 1, self.args.runs))
                    rm(d)
                    snaps = os.path.join(d, "snaps")
                    os.makedirs(snaps)
                    store = os.path.join(d, "store")
                    snap = os.path.join(snaps, "a")

                    def one():
                        r, j = self.ss_push(img, snap, store)
                        self.record("snapstream", "rss-push", i, r, size=size, json=j)
                        dest = os.path.join(d, "restore.img")
                        r, j = self.ss_pull(snap, dest, store)
                        self.record("snapstream", "rss-pull", i, r, size=size, json=j)
                    if not self.attempt("snapstream", "rss %s run %d" % (fmt_size(size), i + 1), one):
                        break
            finally:
                rm(d)
                rm(img)

    def sweep_phase(self):
        """Chunk-size sweep (min = avg/4, max = 4 avg) to choose defaults."""
        if not self.snapstream:
            self.notes.append("--sweep-chunks skipped: snapstream not available")
            return
        size = self.size
        A = os.path.join(self.wd, "sweep-A.img")
        B = os.path.join(self.wd, "sweep-B.img")
        self.check_space(int(size * 3.5))
        self.images["sweep-A"] = self.gen(size, self.args.seed, A, A + ".json")
        self.images["sweep-B"] = self.gen_dirty(A, self.args.seed + 1, B, B + ".json")
        changed = self.images["sweep-B"]["changed_bytes"]
        d = os.path.join(self.wd, "snapstream-sweep")
        try:
            for avg in self.sweep:
                for i in range(self.args.runs):
                    log("sweep avg %s: run %d/%d" % (fmt_size(avg), i + 1, self.args.runs))
                    rm(d)
                    snaps = os.path.join(d, "snaps")
                    os.makedirs(snaps)
                    store = os.path.join(d, "store")

                    def one():
                        r, j = self.ss_push(A, os.path.join(snaps, "a"), store, chunk=avg)
                        self.record("snapstream", "sweep-cold", i, r, chunk_avg=avg,
                                    stored_bytes=du_sb(store), json=j)
                        r, j = self.ss_push(B, os.path.join(snaps, "b"), store, chunk=avg,
                                            parent=os.path.join(snaps, "a"))
                        self.record("snapstream", "sweep-incremental", i, r, chunk_avg=avg,
                                    changed_bytes=changed, uploaded_bytes=j["new_stored_bytes"],
                                    ratio=j["new_stored_bytes"] / changed if changed else None,
                                    json=j)
                    if not self.attempt("snapstream", "sweep %s run %d" % (fmt_size(avg), i + 1), one):
                        break
        finally:
            rm(d)
            rm(A)
            rm(B)

    # -- summary

    def stat(self, tool, scenario, key="wall_s", **match):
        vals = [s.get(key) for s in self.samples
                if s["tool"] == tool and s["scenario"] == scenario and "error" not in s
                and all(s.get(k) == v for k, v in match.items())]
        return summarize(vals)

    def peak_rss(self, tool, scenarios):
        vals = [s["maxrss_kib"] for s in self.samples if s["tool"] == tool
                and s["scenario"] in scenarios and "maxrss_kib" in s and "error" not in s]
        return max(vals) if vals else None

    def build_summary(self):
        tools = (["snapstream"] if self.snapstream else []) + list(self.peers)
        summ = {}
        for t in tools:
            summ[t] = {}
            for sc in ("cold", "warm", "warm-parent", "warm-force", "incremental", "pull"):
                summ[t][sc + "_s"] = self.stat(t, sc)
                summ[t][sc + "_cpu_s"] = self.stat(t, sc, "cpu_s")
                summ[t][sc + "_rss_kib"] = self.stat(t, sc, "maxrss_kib")
            summ[t]["stored_bytes"] = self.stat(t, "cold", "stored_bytes")
            summ[t]["incremental_uploaded_bytes"] = self.stat(t, "incremental", "uploaded_bytes")
            summ[t]["incremental_ratio"] = self.stat(t, "incremental", "ratio")
            summ[t]["peak_rss_kib"] = self.peak_rss(t, ("cold", "warm", "warm-parent", "warm-force",
                                                       "incremental", "pull",
                                                       "rss-push", "rss-pull", "sweep-cold",
                                                       "sweep-incremental"))
        if self.snapstream:
            summ["snapstream"]["manifest_bytes"] = self.stat("snapstream", "cold", "manifest_bytes")
        return summ

    def targets(self, summ):
        """The ratios the project's targets are stated in. Each is
        (name, value, target text, pass?) with value None when a side is
        missing."""
        def med(tool, key):
            v = summ.get(tool, {}).get(key)
            return v["median"] if v else None

        def speedup(peer, peer_key, ss_key):
            a, b = med(peer, peer_key), med("snapstream", ss_key)
            return a / b if a and b else None

        out = []
        def add(name, value, goal, ok, fmt):
            out.append({"name": name, "value": value, "target": goal,
                        "pass": (ok(value) if value is not None else None), "fmt": fmt})

        add("cold push: restic cold / snapstream cold", speedup("restic", "cold_s", "cold_s"),
            ">= 6x", lambda v: v >= 6, "%.2fx")
        add("cold push: zstd -1 -T0 / snapstream cold", speedup("zstd", "cold_s", "cold_s"),
            "> 1x (faster)", lambda v: v > 1, "%.2fx")
        add("warm push: restic --force / snapstream warm", speedup("restic", "warm-force_s", "warm_s"),
            ">= 4x", lambda v: v >= 4, "%.2fx")
        add("warm push: restic --force / snapstream warm --parent",
            speedup("restic", "warm-force_s", "warm-parent_s"), ">= 4x", lambda v: v >= 4, "%.2fx")
        add("warm push: restic (parent shortcut) / snapstream warm",
            speedup("restic", "warm_s", "warm_s"), "(information)", lambda v: True, "%.2fx")
        add("warm push: restic (parent shortcut) / snapstream warm --parent",
            speedup("restic", "warm_s", "warm-parent_s"), "(information)", lambda v: True, "%.2fx")
        add("pull: restic restore / snapstream pull", speedup("restic", "pull_s", "pull_s"),
            ">= 10x", lambda v: v >= 10, "%.2fx")
        ss_st, r_st = med("snapstream", "stored_bytes"), med("restic", "stored_bytes")
        man = med("snapstream", "manifest_bytes") or 0
        add("stored bytes: snapstream (store + manifests) / restic repo",
            (ss_st + man) / r_st if ss_st is not None and r_st else None,
            "<= 1.00", lambda v: v <= 1.0, "%.3f")
        add("incremental: snapstream uploaded / changed", med("snapstream", "incremental_ratio"),
            "<= 3", lambda v: v <= 3, "%.2f")
        rss = summ.get("snapstream", {}).get("peak_rss_kib")
        add("peak RSS: snapstream (MiB)", rss / 1024 if rss else None, "<= 256",
            lambda v: v <= 256, "%.0f")
        if self.rss_sizes and self.snapstream:
            small, big = min(self.rss_sizes), max(self.rss_sizes)
            for op in ("push", "pull"):
                a = self.stat("snapstream", "rss-" + op, "maxrss_kib", image_size=small)
                b = self.stat("snapstream", "rss-" + op, "maxrss_kib", image_size=big)
                add("peak RSS %s: %s / %s" % (op, fmt_size(big), fmt_size(small)),
                    b["max"] / a["max"] if a and b else None, "<= 1.10", lambda v: v <= 1.10, "%.3f")
        return out

    # -- report

    def contention_note(self):
        bg = [s["bg_cpu_frac"] for s in self.samples if "bg_cpu_frac" in s]
        if bg and max(bg) > 0.10:
            busy = sum(1 for b in bg if b > 0.10)
            self.notes.append(
                "the machine was not idle: in %d of %d measured commands other processes used "
                "> 10%% of the CPUs (median %.0f%%, max %.0f%%; per sample in results.json, "
                "bg_cpu_frac); wall times are inflated and spread, CPU seconds less so"
                % (busy, len(bg), 100 * statistics.median(bg), 100 * max(bg)))

    def report(self):
        self.contention_note()
        summ = self.build_summary()
        targets = self.targets(summ)
        md = self.markdown(summ, targets)
        os.makedirs(self.args.out, exist_ok=True)
        with open(os.path.join(self.args.out, "summary.md"), "w") as f:
            f.write(md)
        result = {
            "machine": self.machine,
            "config": {k: v for k, v in vars(self.args).items()},
            "tools": self.versions,
            "images": self.images,
            "summary": summ,
            "targets": [{k: v for k, v in t.items() if k != "fmt"} for t in targets],
            "notes": self.notes,
            "failures": self.failures,
            "samples": self.samples,
        }
        with open(os.path.join(self.args.out, "results.json"), "w") as f:
            json.dump(result, f, indent=1, sort_keys=False)
            f.write("\n")
        print(md)
        log("wrote %s and %s" % (os.path.join(self.args.out, "summary.md"),
                                 os.path.join(self.args.out, "results.json")))
        return targets

    def markdown(self, summ, targets):
        L = []
        m = self.machine
        L.append("# snapstream benchmark (%s image, %d runs)\n" % (fmt_size(self.size), self.args.runs))
        L.append("- machine: %s, %d cores online (%d usable), %.1f GiB RAM, kernel %s"
                 % (m["cpu"], m["cores_online"], m["cores_usable"], m["memory_bytes"] / (1 << 30), m["kernel"]))
        L.append("- data on %s (%s), page cache warm; tmpfs write probe %s MB/s"
                 % (m["workdir"], m["workdir_fs"], " / ".join(str(x) for x in m["tmpfs_write_MBps"])))
        L.append("- tools: " + "; ".join("%s: %s" % kv for kv in self.versions.items()))
        if "A" in self.images:
            a, b = self.images["A"], self.images["B"]
            mixes = ", ".join("%s %.1f%%" % (k[:-6], 100 * a[k] / a["pages"])
                              for k in a if k.endswith("_pages") and k != "dirty_pages")
            L.append("- image A: ss-genimage seed %d, %s; B: %d pages dirtied in %d runs, "
                     "%d bytes changed" % (a["seed"], mixes, b["dirty_pages"], b["dirty_runs"],
                                           b["changed_bytes"]))
        L.append("- each cell: median (min-max) over runs; times in seconds, sizes in MB (10^6 B), RSS in MiB\n")

        tools = (["snapstream"] if self.snapstream else []) + list(self.peers)
        heads = {"snapstream": "snapstream", "zstd": "zstd -1 -T0", "restic": "restic", "casync": "casync"}

        def cell(v, scale=1.0, f="%.2f"):
            if v is None:
                return "-"
            a, lo, hi = v["median"] / scale, v["min"] / scale, v["max"] / scale
            if self.args.runs == 1 or lo == hi:
                return f % a
            return (f + " (" + f + "-" + f + ")") % (a, lo, hi)

        rows = [
            ("cold push, s", "cold_s", 1, "%.2f"),
            ("cold push CPU (user+sys), s", "cold_cpu_s", 1, "%.2f"),
            ("warm push, s", "warm_s", 1, "%.2f"),
            ("warm push --parent, s", "warm-parent_s", 1, "%.2f"),
            ("warm push --force, s", "warm-force_s", 1, "%.2f"),
            ("incremental push (1% dirty), s", "incremental_s", 1, "%.2f"),
            ("incremental bytes uploaded, MB", "incremental_uploaded_bytes", 1e6, "%.2f"),
            ("incremental uploaded / changed", "incremental_ratio", 1, "%.2f"),
            ("pull (restore), s", "pull_s", 1, "%.2f"),
            ("pull CPU (user+sys), s", "pull_cpu_s", 1, "%.2f"),
            ("stored after cold push, MB", "stored_bytes", 1e6, "%.1f"),
            ("peak RSS cold push, MiB", "cold_rss_kib", 1024, "%.0f"),
            ("peak RSS incremental, MiB", "incremental_rss_kib", 1024, "%.0f"),
            ("peak RSS pull, MiB", "pull_rss_kib", 1024, "%.0f"),
        ]
        table = []
        for label, key, scale, f in rows:
            cells = [cell(summ[t].get(key), scale, f) for t in tools]
            if not all(c == "-" for c in cells):
                table.append("| %s | %s |" % (label, " | ".join(cells)))
        if table:
            L.append("| figure | " + " | ".join(heads[t] for t in tools) + " |")
            L.append("|---|" + "---|" * len(tools))
            L.extend(table)
            L.append("")

        L.append("## Targets\n")
        L.append("| ratio | value | target | |")
        L.append("|---|---|---|---|")
        for t in targets:
            if t["value"] is None and self.args.no_main:
                continue  # not measured in this mode, not missing
            v = "-" if t["value"] is None else t["fmt"] % t["value"]
            ok = {True: "ok", False: "**MISSED**", None: "n/a"}[t["pass"]]
            if t["target"] == "(information)":
                ok = ""
            L.append("| %s | %s | %s | %s |" % (t["name"], v, t["target"], ok))
        L.append("")

        if self.rss_sizes and self.snapstream:
            L.append("## Peak RSS against image size (snapstream)\n")
            L.append("| image | push MiB | pull MiB | push s | pull s |")
            L.append("|---|---|---|---|---|")
            for size in self.rss_sizes:
                g = lambda sc, k: self.stat("snapstream", sc, k, image_size=size)
                L.append("| %s | %s | %s | %s | %s |" % (
                    fmt_size(size), cell(g("rss-push", "maxrss_kib"), 1024, "%.0f"),
                    cell(g("rss-pull", "maxrss_kib"), 1024, "%.0f"),
                    cell(g("rss-push", "wall_s")), cell(g("rss-pull", "wall_s"))))
            L.append("")

        if self.sweep and self.snapstream:
            L.append("## Chunk size sweep (snapstream, min = avg/4, max = 4 avg)\n")
            L.append("| avg chunk | cold push, s | stored, MB | incremental uploaded / changed |")
            L.append("|---|---|---|---|")
            for avg in self.sweep:
                g = lambda sc, k: self.stat("snapstream", sc, k, chunk_avg=avg)
                L.append("| %s | %s | %s | %s |" % (
                    fmt_size(avg), cell(g("sweep-cold", "wall_s")),
                    cell(g("sweep-cold", "stored_bytes"), 1e6, "%.1f"),
                    cell(g("sweep-incremental", "ratio"))))
            L.append("")

        if self.notes or self.failures:
            L.append("## Notes\n")
            for n in self.notes:
                L.append("- " + n)
            for n in self.failures:
                L.append("- FAILED: " + n)
            L.append("")
        return "\n".join(L)

    # -- entry

    def main(self):
        a = self.args
        # The workdir is emptied at the end: never adopt a directory that
        # holds anything but our own leftovers.
        marker = os.path.join(self.wd, ".ssbench-workdir")
        if os.path.isdir(self.wd) and os.listdir(self.wd) and not os.path.exists(marker):
            sys.exit("bench: %s is not empty and not a bench workdir; pick another --workdir" % self.wd)
        os.makedirs(self.wd, exist_ok=True)
        open(marker, "a").close()
        self.size = a.size
        self.peers = a.peers
        self.rss_sizes = a.rss_sizes
        self.sweep = a.sweep_chunks
        self.genimage = self.find_genimage()
        self.snapstream = self.find_snapstream()
        self.versions = {}
        if self.snapstream:
            self.versions["snapstream"] = first_line([self.snapstream, "--version"]) or "?"
        else:
            self.notes.append("snapstream %s: its column and the target ratios are skipped" % (
                "left out (--no-snapstream)" if a.no_snapstream
                else "not found (build it, or pass --snapstream PATH)"))
            log(self.notes[-1])
        for p in list(self.peers):
            if not shutil.which(p):
                self.notes.append("%s not installed: skipped" % p)
                log(self.notes[-1])
                self.peers.remove(p)
                continue
            self.versions[p] = first_line({"zstd": ["zstd", "--version"],
                                           "restic": ["restic", "version"],
                                           "casync": ["casync", "--version"]}[p])
        if "restic" in self.peers:
            self.notes.append("restic 'warm' is a second backup of the same unchanged path: restic "
                              "skips reading it (parent snapshot, same size/mtime/inode). "
                              "'warm --force' re-reads it; the warm target uses that one")
            self.notes.append("restic restore writes every byte, zeros included (0.14 has no "
                              "--sparse); snapstream pull and casync extract write sparse files")
        self.machine = machine_info(self.wd)
        log("machine: %s, %d cores, %.1f GiB; tmpfs write %s MB/s" % (
            self.machine["cpu"], self.machine["cores_online"],
            self.machine["memory_bytes"] / (1 << 30), self.machine["tmpfs_write_MBps"]))
        try:
            if not a.no_main:
                self.main_phase()
            if self.rss_sizes:
                self.rss_phase()
            if self.sweep:
                self.sweep_phase()
        finally:
            if not a.keep:
                for name in os.listdir(self.wd):
                    if name not in ("ss-genimage", ".ssbench-workdir"):  # keep a self-built generator
                        rm(os.path.join(self.wd, name))
        targets = self.report()
        if self.failures:
            return 1
        if a.check and any(t["pass"] is False for t in targets):
            return 3
        return 0


def main():
    ap = argparse.ArgumentParser(
        description="Benchmark snapstream against zstd, restic and casync on a generated "
                    "memory-like image. See bench/README.md.")
    ap.add_argument("--size", type=parse_size, default=None, help="image size (default 1G; --quick: 256M)")
    ap.add_argument("--runs", type=int, default=None, help="runs per figure (default 5; --quick: 3)")
    ap.add_argument("--quick", action="store_true", help="3 runs on a 256M image")
    ap.add_argument("--seed", type=int, default=1, help="image seed (default 1)")
    ap.add_argument("--workdir", default="/dev/shm/ssbench",
                    help="scratch directory, on tmpfs (default /dev/shm/ssbench); emptied at the end")
    ap.add_argument("--snapstream", help="snapstream binary (default: build/cli/snapstream if built)")
    ap.add_argument("--genimage", help="ss-genimage binary (default: build/bench/ss-genimage, "
                                       "else compiled into the workdir)")
    ap.add_argument("--no-snapstream", action="store_true", help="measure the peers only")
    ap.add_argument("--threads", type=int, help="pass --threads N to snapstream")
    ap.add_argument("--push-args", default="",
                    help="extra arguments for every snapstream push, e.g. '--zstd-level 3'")
    ap.add_argument("--out", default=os.path.join(HERE, "out"),
                    help="report directory (default bench/out)")
    ap.add_argument("--peers", default=",".join(KNOWN_PEERS),
                    help="comma list of peers to compare (default zstd,restic,casync; '' for none)")
    ap.add_argument("--rss-sizes", default="",
                    help="also measure snapstream peak RSS at these image sizes, e.g. 1G,8G")
    ap.add_argument("--sweep-chunks", default="",
                    help="also sweep snapstream average chunk sizes, e.g. 16K,32K,64K")
    ap.add_argument("--no-main", action="store_true",
                    help="skip the main scenarios (run only --rss-sizes / --sweep-chunks)")
    ap.add_argument("--verify-all", action="store_true",
                    help="cmp every restored image, not only the first run's")
    ap.add_argument("--keep", action="store_true", help="leave the workdir's contents in place")
    ap.add_argument("--check", action="store_true", help="exit 3 if a target is missed")
    args = ap.parse_args()

    if args.size is None:
        args.size = 256 * MiB if args.quick else 1 << 30
    if args.runs is None:
        args.runs = 3 if args.quick else 5
    if args.runs < 1 or args.size < 4096:
        ap.error("--runs must be >= 1 and --size >= 4K")
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in peers:
        if p not in KNOWN_PEERS:
            ap.error("unknown peer %r (known: %s)" % (p, ", ".join(KNOWN_PEERS)))
    args.peers = peers
    try:
        args.rss_sizes = [parse_size(s) for s in args.rss_sizes.split(",") if s.strip()]
        args.sweep_chunks = [parse_size(s) for s in args.sweep_chunks.split(",") if s.strip()]
    except ValueError as e:
        ap.error("bad size: %s" % e)
    args.workdir = os.path.abspath(args.workdir)
    args.out = os.path.abspath(args.out)
    return Bench(args).main()


if __name__ == "__main__":
    sys.exit(main())
