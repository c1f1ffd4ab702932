#!/usr/bin/python3
"""snapstream benchmark harness: snapstream against zstd, restic and casync,
and through an S3 server (s3rver on loopback) against aws s3 cp and rclone.

Run from anywhere:

    /usr/bin/python3 bench/bench.py [--size 1G] [--runs 5] [--quick]
        [--workdir /dev/shm/ssbench] [--snapstream PATH] [--genimage PATH]
        [--out DIR] [--peers zstd,restic,casync]
        [--rss-sizes 1G,8G] [--sweep-chunks 16K,32K,64K]
        [--s3 | --no-s3 | --s3-only] [--s3-peers aws,rclone]

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
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

MiB = 1 << 20
KNOWN_PEERS = ("zstd", "restic", "casync")
KNOWN_S3_PEERS = ("aws", "rclone")
S3RVER_JS = os.path.join(ROOT, "tests", "s3", "node_modules", "s3rver", "bin", "s3rver.js")
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


# ---------------------------------------------------------------- s3rver

# Loaded into s3rver's node with -r: counts the HTTP requests the server
# receives, by method, and answers GET /__ssbench_counts with the counts so
# far (that request is answered before s3rver sees it and is not counted).
# This is the server's side of "requests per GiB pushed".
S3_COUNTER_JS = r"""'use strict';
const http = require('http');
const counts = {};
const emit = http.Server.prototype.emit;
http.Server.prototype.emit = function (ev, req, res) {
  if (ev === 'request') {
    if (req.url === '/__ssbench_counts') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(counts));
      return true;
    }
    counts[req.method] = (counts[req.method] || 0) + 1;
  }
  return emit.apply(this, arguments);
};
"""

# What the S3 tools must not inherit from the caller: another account,
# profile or endpoint, or a CA bundle (rclone refuses to start when
# AWS_CA_BUNDLE names a file, even for plain http). As tests/s3/harness.py.
S3_UNSET = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3",
            "AWS_CA_BUNDLE", "SNAPSTREAM_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


class S3rver:
    """s3rver from tests/s3/node_modules, started as tests/s3/harness.py
    starts it (node --openssl-legacy-provider, 127.0.0.1, a free port,
    --silent), with its data directory in the (tmpfs) workdir and the
    request counter preloaded. s3rver checks no signatures, so the untimed
    housekeeping here (make/empty buckets, copy objects out) is plain
    unsigned HTTP."""

    def __init__(self, wd):
        self.wd = wd
        self.proc = None
        self.data = os.path.join(wd, "s3rver-data")
        self.url = None

    @staticmethod
    def available():
        return bool(shutil.which("node")) and os.path.exists(S3RVER_JS)

    @staticmethod
    def version():
        try:
            with open(os.path.join(os.path.dirname(os.path.dirname(S3RVER_JS)), "package.json")) as f:
                v = json.load(f)["version"]
        except (OSError, ValueError, KeyError):
            v = "?"
        return "s3rver %s on node %s" % (v, first_line(["node", "--version"]) or "?")

    def start(self, timeout=30):
        rm(self.data)
        os.makedirs(self.data)
        preload = os.path.join(self.wd, "s3rver-count.js")
        with open(preload, "w") as f:
            f.write(S3_COUNTER_JS)
        out_path = os.path.join(self.wd, "s3rver.out")
        self.err_path = os.path.join(self.wd, "s3rver.err")
        # s3rver encrypts continuation tokens with DES, which OpenSSL 3
        # keeps in its legacy provider.
        cmd = [shutil.which("node"), "--openssl-legacy-provider", "-r", preload, S3RVER_JS,
               "-d", self.data, "-a", "127.0.0.1", "-p", "0", "--silent"]
        with open(out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        end = time.time() + timeout
        while time.time() < end:
            with open(out_path, "rb") as f:
                for line in f.read().decode("utf-8", "replace").splitlines():
                    if "listening on" in line:
                        self.port = int(line.rsplit(":", 1)[1])
                        self.url = "http://127.0.0.1:%d" % self.port
                        return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        with open(self.err_path, "rb") as f:
            tail = f.read().decode("utf-8", "replace").strip().splitlines()[-3:]
        raise CommandFailed("s3rver did not start: %s" % " | ".join(tail))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        rm(self.data)

    def cpu(self):
        """s3rver's CPU seconds so far (user+sys, all its threads)."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        # after the comm: state(3) ... utime(14) stime(15), 1-based
        return (int(fields[11]) + int(fields[12])) / _HZ

    def peak_rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        return None

    def http(self, method, path, body=None, timeout=120):
        req = urllib.request.Request(self.url + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def counts(self):
        st, body = self.http("GET", "/__ssbench_counts")
        if st != 200:
            raise CommandFailed("s3rver request counter answered HTTP %d" % st)
        return json.loads(body)

    def make_bucket(self, bucket):
        st, body = self.http("PUT", "/" + bucket)
        if st != 200:
            raise CommandFailed("s3rver: creating bucket %s: HTTP %d %s" % (bucket, st, body[:200]))

    def keys(self, bucket, prefix=""):
        """(key, size) of every object under prefix (ListObjectsV2, paged)."""
        out, token = [], None
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            st, body = self.http("GET", "/%s?%s" % (bucket, urllib.parse.urlencode(q)))
            if st != 200:
                raise CommandFailed("s3rver: listing %s: HTTP %d" % (bucket, st))
            root = ET.fromstring(body)
            tag = lambda el: el.tag.rsplit("}", 1)[-1]
            token = None
            truncated = False
            for el in root:
                if tag(el) == "Contents":
                    f = {tag(c): c.text for c in el}
                    out.append((f["Key"], int(f.get("Size") or 0)))
                elif tag(el) == "NextContinuationToken":
                    token = el.text
                elif tag(el) == "IsTruncated":
                    truncated = el.text == "true"
            if not (truncated and token):
                return out

    def delete(self, bucket, key):
        st, _ = self.http("DELETE", "/%s/%s" % (bucket, urllib.parse.quote(key, safe="/")))
        if st not in (200, 204):
            raise CommandFailed("s3rver: deleting %s/%s: HTTP %d" % (bucket, key, st))

    def drop_bucket(self, bucket):
        for key, _ in self.keys(bucket):
            self.delete(bucket, key)
        self.http("DELETE", "/" + bucket)

    def mirror(self, bucket, prefix, dest):
        """Copy every object under prefix to dest/<key>: the bucket's layout
        is a local store's layout (as tests/s3_e2e.sh's aws s3 cp copy)."""
        for key, _ in self.keys(bucket, prefix):
            path = os.path.join(dest, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            req = urllib.request.Request("%s/%s/%s" % (self.url, bucket, urllib.parse.quote(key, safe="/")))
            with urllib.request.urlopen(req, timeout=300) as r, open(path, "wb") as f:
                shutil.copyfileobj(r, f, 4 * MiB)


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

    # -- object store (s3rver on loopback)

    def s3_env(self):
        """The environment every S3 tool gets: s3rver's fixed account, its
        endpoint, us-east-1, no user configuration (as tests/s3/harness.py),
        and rclone's remote S3R: defined by variables alone, no config file."""
        url = self.srv.url
        return {
            "AWS_ACCESS_KEY_ID": "S3RVER",
            "AWS_SECRET_ACCESS_KEY": "S3RVER",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": url,
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_PAGER": "",
            "RCLONE_CONFIG": "/dev/null",
            "RCLONE_CONFIG_S3R_TYPE": "s3",
            "RCLONE_CONFIG_S3R_PROVIDER": "Other",
            "RCLONE_CONFIG_S3R_ENDPOINT": url,
            "RCLONE_CONFIG_S3R_ACCESS_KEY_ID": "S3RVER",
            "RCLONE_CONFIG_S3R_SECRET_ACCESS_KEY": "S3RVER",
        }

    def s3_run(self, cmd):
        """run() against s3rver, also taking s3rver's CPU seconds and the
        requests it received while the command ran. s3rver shares the CPUs
        with the tool; its CPU is taken out of bg_cpu_frac (kept as
        bg_cpu_frac_incl_s3rver) so that figure still means other tenants."""
        cpu0, n0 = self.srv.cpu(), self.srv.counts()
        r = run(cmd, self.wd, env=self.s3_env(), unset=S3_UNSET)
        cpu1, n1 = self.srv.cpu(), self.srv.counts()
        srv_cpu = cpu1 - cpu0
        by_method = {m: n1.get(m, 0) - n0.get(m, 0) for m in n1 if n1.get(m, 0) != n0.get(m, 0)}
        ncpu = os.cpu_count() or 1
        raw_bg = r.bg_cpu
        if r.wall > 0:
            r.bg_cpu = max(0.0, raw_bg * r.wall * ncpu - srv_cpu) / (r.wall * ncpu)
        return r, {"s3rver_cpu_s": round(srv_cpu, 3),
                   "s3rver_requests": sum(by_method.values()),
                   "s3rver_requests_by_method": by_method,
                   "bg_cpu_frac_incl_s3rver": round(raw_bg, 3)}

    def run_s3_snapstream(self, i, A, bucket):
        gib = self.size / (1 << 30)
        snap = lambda name: "s3://%s/snaps/%s" % (bucket, name)

        def push(scenario, name, parent=None):
            cmd = self.ss("push", A, snap(name), "--json") + shlex.split(self.args.push_args)
            if parent:
                cmd += ["--parent", snap(parent)]
            r, x = self.s3_run(cmd)
            j = parse_json_output(r.stdout)
            self.record("snapstream", scenario, i, r, json=j, requests=j["requests"],
                        requests_per_gib=j["requests"] / gib,
                        s3rver_requests_per_gib=x["s3rver_requests"] / gib,
                        uploaded_bytes=j["transferred_bytes"], **x)

        # Default store: s3://bucket/.snapstream, fresh in this run's bucket.
        push("s3-cold", "a")
        push("s3-warm", "a-warm")
        push("s3-warm-parent", "a-warm-parent", parent="a")

        dest = os.path.join(self.wd, "s3-restore.img")
        r, x = self.s3_run(self.ss("pull", snap("a"), dest, "--json"))
        j = parse_json_output(r.stdout)
        ok = files_equal(A, dest) if i == 0 or self.args.verify_all else None
        self.record("snapstream", "s3-pull", i, r, json=j, verified=ok, requests=j["requests"],
                    downloaded_bytes=j["transferred_bytes"],
                    dest_allocated_bytes=os.stat(dest).st_blocks * 512, **x)
        rm(dest)
        if ok is False:
            raise CommandFailed("pulled image differs from the pushed one")

        # References, to tell what the object store costs: the same
        # snapshot pulled from a local copy of the bucket (copied outside
        # timing; the bucket's key layout is a local store's), and a cold
        # push of the same image into an empty local store.
        local = os.path.join(self.wd, "s3-local")
        rm(local)
        self.srv.mirror(bucket, ".snapstream/", local)
        self.srv.mirror(bucket, "snaps/a/", local)
        r, j = self.ss_pull(os.path.join(local, "snaps", "a"), dest, os.path.join(local, ".snapstream"))
        self.record("snapstream", "s3-local-pull", i, r, json=j)
        rm(dest)
        rm(local)
        os.makedirs(os.path.join(local, "snaps"))
        r, j = self.ss_push(A, os.path.join(local, "snaps", "a"), os.path.join(local, "store"))
        self.record("snapstream", "s3-local-cold", i, r, json=j)
        rm(local)

    def s3_peer_roundtrip(self, tool, i, A, bucket, up, down, key, dest):
        """Upload the raw image, download it back to dest, delete the object."""
        r, x = self.s3_run(up)
        self.record(tool, "s3-upload", i, r, uploaded_bytes=self.size,
                    s3rver_requests_per_gib=x["s3rver_requests"] / (self.size / (1 << 30)), **x)
        r, x = self.s3_run(down)
        ok = files_equal(A, dest) if i == 0 or self.args.verify_all else None
        self.record(tool, "s3-download", i, r, verified=ok, downloaded_bytes=self.size,
                    dest_allocated_bytes=os.stat(dest).st_blocks * 512, **x)
        rm(dest)
        self.srv.delete(bucket, key)  # keeps tmpfs use down; outside timing
        if ok is False:
            raise CommandFailed("%s download differs from the image" % tool)

    def run_s3_aws(self, i, A, bucket):
        key = "raw/aws-A.img"
        aws = [self.s3_tools["aws"], "--endpoint-url", self.srv.url, "--region", "us-east-1",
               "s3", "cp", "--only-show-errors"]
        dest = os.path.join(self.wd, "s3-aws-restore.img")
        self.s3_peer_roundtrip("aws", i, A, bucket, aws + [A, "s3://%s/%s" % (bucket, key)],
                               aws + ["s3://%s/%s" % (bucket, key), dest], key, dest)

    def run_s3_rclone(self, i, A, bucket):
        key = "raw/rclone-A.img"
        rc = [self.s3_tools["rclone"], "copyto"]
        dest = os.path.join(self.wd, "s3-rclone-restore.img")
        self.s3_peer_roundtrip("rclone", i, A, bucket, rc + [A, "S3R:%s/%s" % (bucket, key)],
                               rc + ["S3R:%s/%s" % (bucket, key), dest], key, dest)

    def s3_phase(self):
        """Object-store scenarios (issue 3): snapstream, `aws s3 cp` and
        `rclone copyto` against one s3rver on loopback, in the same run.
        Every run uses a fresh bucket (created and emptied outside timing),
        so cold is cold; tools interleave within each run."""
        size = self.size
        A = os.path.join(self.wd, "A-%s.img" % fmt_size(size))
        # image, s3rver's copy of it (+ parts while a multipart upload
        # completes), the snapstream store, one download
        self.check_space(int(size * 4.5))
        if not os.path.exists(A):
            log("s3: generating %s image A (seed %d)" % (fmt_size(size), self.args.seed))
            self.images["s3-A"] = self.gen(size, self.args.seed, A, A + ".json")
        self.srv = S3rver(self.wd)
        tools = []
        if self.snapstream:
            tools.append(("snapstream", self.run_s3_snapstream))
        for p in self.s3_peers:
            tools.append((p, getattr(self, "run_s3_" + p)))
        broken = set()
        try:
            self.srv.start()
            log("s3: s3rver on %s (pid %d)" % (self.srv.url, self.srv.proc.pid))
            cpu0 = self.srv.cpu()
            for i in range(self.args.runs):
                bucket = "ssbench-run%d" % (i + 1)
                self.srv.make_bucket(bucket)
                for name, fn in tools:
                    if name in broken:
                        continue
                    log("s3 run %d/%d: %s" % (i + 1, self.args.runs, name))
                    if not self.attempt(name, "s3 run %d" % (i + 1), lambda: fn(i, A, bucket)):
                        broken.add(name)
                        for f in os.listdir(self.wd):
                            if f.startswith("s3-") and f != "s3rver-data":
                                rm(os.path.join(self.wd, f))
                self.srv.drop_bucket(bucket)
            self.s3_server = {"version": S3rver.version(), "url": self.srv.url,
                              "peak_rss_kib": self.srv.peak_rss_kib(),
                              "cpu_s_total": round(self.srv.cpu() - cpu0, 2)}
        except (CommandFailed, OSError, ValueError) as e:  # e.g. s3rver died
            msg = "s3 phase failed: %s" % e
            log(msg)
            self.failures.append(msg)
        finally:
            self.srv.stop()
            rm(A)
            rm(A + ".json")

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
        rm(B)
        if not self.run_s3:
            rm(A)  # else the object-store phase uses it, and removes it

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
        if self.run_s3:
            summ["s3"] = self.build_s3_summary()
        return summ

    S3_SCENARIOS = {"snapstream": ("s3-cold", "s3-warm", "s3-warm-parent", "s3-pull",
                                   "s3-local-pull", "s3-local-cold"),
                    "aws": ("s3-upload", "s3-download"),
                    "rclone": ("s3-upload", "s3-download")}
    S3_KEYS = ("wall_s", "cpu_s", "maxrss_kib", "s3rver_cpu_s", "requests", "s3rver_requests",
               "requests_per_gib", "s3rver_requests_per_gib", "uploaded_bytes", "downloaded_bytes",
               "bg_cpu_frac")

    def build_s3_summary(self):
        """{tool: {scenario: {key: median/min/max}}} for the object-store phase."""
        out = {}
        for tool, scenarios in self.S3_SCENARIOS.items():
            for sc in scenarios:
                for key in self.S3_KEYS:
                    v = self.stat(tool, sc, key)
                    if v is not None:
                        out.setdefault(tool, {}).setdefault(sc, {})[key] = v
        return out

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
        section = ["local"]
        def add(name, value, goal, ok, fmt):
            out.append({"name": name, "value": value, "target": goal, "section": section[0],
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

        # Object store (issue 3): all against the same s3rver, same runs.
        section[0] = "s3"
        s3 = summ.get("s3", {})

        def s3med(tool, sc, key="wall_s"):
            v = s3.get(tool, {}).get(sc, {}).get(key)
            return v["median"] if v else None

        def s3ratio(peer, peer_sc, ss_sc):
            a, b = s3med(peer, peer_sc), s3med("snapstream", ss_sc)
            return a / b if a and b else None

        add("S3 cold push: aws s3 cp upload / snapstream cold push",
            s3ratio("aws", "s3-upload", "s3-cold"), ">= 2x", lambda v: v >= 2, "%.2fx")
        add("S3 warm push: aws s3 cp upload / snapstream warm push",
            s3ratio("aws", "s3-upload", "s3-warm"), ">= 10x", lambda v: v >= 10, "%.2fx")
        add("S3 warm push: aws s3 cp upload / snapstream warm push --parent",
            s3ratio("aws", "s3-upload", "s3-warm-parent"), "(information)", lambda v: True, "%.2fx")
        add("S3 pull: aws s3 cp download / snapstream pull",
            s3ratio("aws", "s3-download", "s3-pull"), ">= 2x", lambda v: v >= 2, "%.2fx")
        add("S3 cold push: rclone copyto upload / snapstream cold push",
            s3ratio("rclone", "s3-upload", "s3-cold"), "(information)", lambda v: True, "%.2fx")
        add("S3 warm push: rclone copyto upload / snapstream warm push",
            s3ratio("rclone", "s3-upload", "s3-warm"), "(information)", lambda v: True, "%.2fx")
        add("S3 pull: rclone copyto download / snapstream pull",
            s3ratio("rclone", "s3-download", "s3-pull"), "(information)", lambda v: True, "%.2fx")
        add("S3 requests per GiB pushed, cold push (snapstream's count)",
            s3med("snapstream", "s3-cold", "requests_per_gib"), "<= 64", lambda v: v <= 64, "%.1f")
        add("S3 requests per GiB pushed, cold push (s3rver's count)",
            s3med("snapstream", "s3-cold", "s3rver_requests_per_gib"), "<= 64", lambda v: v <= 64, "%.1f")
        add("S3 requests per GiB pushed, warm push (s3rver's count)",
            s3med("snapstream", "s3-warm", "s3rver_requests_per_gib"), "(information)",
            lambda v: True, "%.1f")
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
        if "A" in self.images and "B" in self.images:
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
            if t["value"] is None and (self.args.no_main if t["section"] == "local" else not self.run_s3):
                continue  # not measured in this mode, not missing
            v = "-" if t["value"] is None else t["fmt"] % t["value"]
            ok = {True: "ok", False: "**MISSED**", None: "n/a"}[t["pass"]]
            if t["target"] == "(information)":
                ok = ""
            L.append("| %s | %s | %s | %s |" % (t["name"], v, t["target"], ok))
        L.append("")

        if self.run_s3:
            L.extend(self.s3_markdown(summ.get("s3", {}), cell))

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

    def s3_markdown(self, s3, cell):
        L = ["## Object store: s3rver on loopback\n"]
        srv = getattr(self, "s3_server", None) or {}
        L.append("- server: %s at %s, data on tmpfs (%s); one server for every tool and run, "
                 "a fresh bucket per run" % (srv.get("version", S3rver.version()),
                                             srv.get("url", "?"), self.wd))
        L.append("- s3rver runs on the same %d cores as the tool measured: its CPU competes with "
                 "the tool's, and it is a single node.js process, so it can be the bottleneck. "
                 "Its own CPU seconds during each command are in the 's3rver CPU' rows "
                 "(from /proc/PID/stat); over the whole phase it used %s s of CPU and peaked at "
                 "%s MiB RSS" % (os.cpu_count() or 1, srv.get("cpu_s_total", "?"),
                                 "%.0f" % (srv["peak_rss_kib"] / 1024) if srv.get("peak_rss_kib") else "?"))
        L.append("- snapstream: `push IMAGE s3://BUCKET/snaps/NAME` (default store "
                 "s3://BUCKET/.snapstream), `pull`; aws: Debian's `aws s3 cp` (%s), default "
                 "multipart settings; rclone: `rclone copyto` (%s), remote from environment "
                 "variables, default settings" % (self.versions.get("aws", "-"),
                                                  self.versions.get("rclone", "-")))
        L.append("- the raw-image downloads (aws, rclone) write every byte, zeros included; "
                 "snapstream pull writes a sparse file")
        L.append("- requests: snapstream's own count (`requests` in its JSON; a conditional PUT "
                 "counts once, s3rver sees its HEAD and PUT) and the HTTP requests s3rver received "
                 "during the command; per GiB of image pushed (the target is set for 1 GiB: on "
                 "small images a push's fixed requests dominate)\n")
        tools = [t for t in ("snapstream", "aws", "rclone") if t in s3]
        if not tools:
            L.append("(nothing measured)\n")
            return L
        heads = {"snapstream": "snapstream", "aws": "aws s3 cp", "rclone": "rclone copyto"}
        up = {"snapstream": "s3-cold", "aws": "s3-upload", "rclone": "s3-upload"}
        down = {"snapstream": "s3-pull", "aws": "s3-download", "rclone": "s3-download"}
        ss_only = lambda sc: {"snapstream": sc}
        rows = [
            ("upload (snapstream: cold push), s", up, "wall_s", 1, "%.2f"),
            ("upload CPU (user+sys), s", up, "cpu_s", 1, "%.2f"),
            ("s3rver CPU during upload, s", up, "s3rver_cpu_s", 1, "%.2f"),
            ("peak RSS upload, MiB", up, "maxrss_kib", 1024, "%.0f"),
            ("bytes uploaded, MB", up, "uploaded_bytes", 1e6, "%.1f"),
            ("requests, upload (client's count)", up, "requests", 1, "%.0f"),
            ("requests, upload (s3rver's count)", up, "s3rver_requests", 1, "%.0f"),
            ("requests per GiB pushed (client's count)", up, "requests_per_gib", 1, "%.1f"),
            ("requests per GiB pushed (s3rver's count)", up, "s3rver_requests_per_gib", 1, "%.1f"),
            ("warm push (same image, new name), s", ss_only("s3-warm"), "wall_s", 1, "%.2f"),
            ("warm push CPU, s", ss_only("s3-warm"), "cpu_s", 1, "%.2f"),
            ("s3rver CPU during warm push, s", ss_only("s3-warm"), "s3rver_cpu_s", 1, "%.2f"),
            ("requests, warm push (s3rver's count)", ss_only("s3-warm"), "s3rver_requests", 1, "%.0f"),
            ("warm push --parent, s", ss_only("s3-warm-parent"), "wall_s", 1, "%.2f"),
            ("warm push --parent CPU, s", ss_only("s3-warm-parent"), "cpu_s", 1, "%.2f"),
            ("download (snapstream: pull), s", down, "wall_s", 1, "%.2f"),
            ("download CPU (user+sys), s", down, "cpu_s", 1, "%.2f"),
            ("s3rver CPU during download, s", down, "s3rver_cpu_s", 1, "%.2f"),
            ("peak RSS download, MiB", down, "maxrss_kib", 1024, "%.0f"),
            ("requests, download (s3rver's count)", down, "s3rver_requests", 1, "%.0f"),
            ("reference: cold push into a local store, s", ss_only("s3-local-cold"), "wall_s", 1, "%.2f"),
            ("reference: pull of the same snapshot from a local copy, s",
             ss_only("s3-local-pull"), "wall_s", 1, "%.2f"),
            ("reference: that local pull's CPU, s", ss_only("s3-local-pull"), "cpu_s", 1, "%.2f"),
        ]
        L.append("| figure | " + " | ".join(heads[t] for t in tools) + " |")
        L.append("|---|" + "---|" * len(tools))
        for label, scs, key, scale, f in rows:
            cells = [cell(s3.get(t, {}).get(scs[t], {}).get(key), scale, f) if t in scs else "-"
                     for t in tools]
            if not all(c == "-" for c in cells):
                L.append("| %s | %s |" % (label, " | ".join(cells)))
        L.append("")
        return L

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
        self.run_s3 = False
        self.s3_peers, self.s3_tools = [], {}
        if a.s3 is not False:
            if S3rver.available():
                self.run_s3 = True
                self.versions["s3rver"] = S3rver.version()
            else:
                self.notes.append("s3rver not installed (scripts/setup.sh runs npm ci in tests/s3): "
                                  "object-store scenarios skipped")
                log(self.notes[-1])
                if a.s3:
                    self.failures.append("--s3 given but s3rver is not installed")
        if self.run_s3:
            for p in a.s3_peers:
                # Debian's aws CLI first (another one may come first on PATH)
                exe = ("/usr/bin/aws" if p == "aws" and os.access("/usr/bin/aws", os.X_OK)
                       else shutil.which(p))
                if not exe:
                    self.notes.append("%s not installed: skipped in the object-store scenarios" % p)
                    log(self.notes[-1])
                    continue
                self.s3_peers.append(p)
                self.s3_tools[p] = exe
                self.versions[p] = first_line([exe, "--version"] if p == "aws" else [exe, "version"])
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
            if self.run_s3:
                self.s3_phase()
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
                    "memory-like image, and against aws s3 cp and rclone through s3rver on "
                    "loopback. See bench/README.md.")
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
    ap.add_argument("--s3", dest="s3", action="store_const", const=True, default=None,
                    help="run the object-store scenarios (s3rver on loopback; default: in the "
                         "full run when s3rver is installed, not with --no-main)")
    ap.add_argument("--no-s3", dest="s3", action="store_const", const=False,
                    help="skip the object-store scenarios")
    ap.add_argument("--s3-only", action="store_true",
                    help="run only the object-store scenarios (= --s3 --no-main)")
    ap.add_argument("--s3-peers", default=",".join(KNOWN_S3_PEERS),
                    help="peers in the object-store scenarios (default aws,rclone; '' for none)")
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
    if args.s3_only:
        if args.s3 is False:
            ap.error("--s3-only and --no-s3 contradict each other")
        args.s3, args.no_main, args.peers = True, True, []
    elif args.s3 is None and args.no_main:
        args.s3 = False  # --no-main: only the phases asked for
    s3_peers = [p.strip() for p in args.s3_peers.split(",") if p.strip()]
    for p in s3_peers:
        if p not in KNOWN_S3_PEERS:
            ap.error("unknown S3 peer %r (known: %s)" % (p, ", ".join(KNOWN_S3_PEERS)))
    args.s3_peers = s3_peers
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
