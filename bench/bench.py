#!/usr/bin/python3
"""snapstream benchmark harness. One command runs a suite and writes a
report directory (summary.md, results.json, charts/):

    bench/run --quick     # everyday: ~2-2.5 minutes on 2 cores, images included
    bench/run --full      # releases: every workload, target, peer and size

(bench/run is /usr/bin/python3 bench/bench.py.) What each mode runs is the
PLANS table below; bench/README.md explains every figure.

Modules: workloads.py (the images), tools.py (snapstream and the peers,
scenario by scenario), s3rver.py (the S3 server on loopback),
ateom_bench.py (the Ateom round trip), fleet.py (concurrent restores
through the node cache), keyed.py (sealed keyed stores against plain
ones), report.py (Markdown, JSON,
gnuplot charts), common.py (measuring one command, the machine).

Python 3 standard library only (the Ateom round trip also needs
python3-grpcio, as tests/ateom/e2e.py).
"""

import argparse
import datetime
import glob
import os
import shlex
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import ateom_bench  # noqa: E402
import fleet  # noqa: E402
import keyed  # noqa: E402
import report  # noqa: E402
import workloads  # noqa: E402
from common import (GiB, HERE, MiB, ROOT, CommandFailed, Skipped, first_line, fmt_size, fs_type,  # noqa: E402
                    log, machine_info, parse_size, read_through, rm, summarize, write_probe)
from s3rver import S3rver  # noqa: E402
from tools import SCENARIOS_MIN, Casync, Ctx, Restic, S3Copy, Snapstream, Target, Zstd  # noqa: E402

LOCAL = ["snapstream", "zstd-1", "zstd-3", "restic", "casync"]
S3_TOOLS = ["snapstream", "aws", "rclone"]

# Each entry: a workload and where and with what it is measured.
#   make:    how to build it (workloads.py)
#   tools:   local tools (tmpfs and disk targets)
#   targets: {target: runs}; "s3" uses S3_TOOLS (or s3_tools)
#   threads: also snapstream --threads 1 on tmpfs; dropped: on disk, also
#            with the page cache dropped (needs root)
#   primary: the workload of the summary's first rows and the target ratios
#   scenarios: only these (tools.SCENARIOS_MIN: cold, next checkpoints,
#            pull), to keep the quick mode short; default all
#   group:   the workloads a make builds together (the sparse file and its
#            dense reference) with the tools each is measured with; their
#            runs interleave
#
# The page-granular, small-file and sparse workloads are measured against
# zstd in the same run (report.py's "Same-run comparisons" and targets).
SPARSE_GROUP = {"sparse": ["snapstream"], "dense": ["snapstream", "zstd-1"]}
PLANS = {
    "quick": [
        dict(make=("memory", "256M", (0.01,)), tools=["snapstream", "zstd-1", "restic"],
             targets={"tmpfs": 2, "s3": 1}, s3_tools=["snapstream", "aws"], threads=True,
             primary=True),
        dict(make=("memory", "64M", ()), tools=["snapstream", "zstd-1"], targets={"tmpfs": 3}),
        dict(make=("pages", "64M", ()), tools=["snapstream", "zstd-1"], targets={"tmpfs": 3},
             scenarios=SCENARIOS_MIN),
        dict(make=("pages", "256M", (0.03,)), tools=["snapstream", "zstd-1", "restic"],
             targets={"tmpfs": 3}, scenarios=SCENARIOS_MIN),
        dict(make=("files", 2000, 42_000_000), tools=["snapstream", "zstd-1"], targets={"tmpfs": 3},
             scenarios=SCENARIOS_MIN),
        dict(make=("sparse", "16G", "64M"), group=SPARSE_GROUP, targets={"tmpfs": 3},
             scenarios=SCENARIOS_MIN),
    ],
    "full": [
        dict(make=("memory", "1G", (0.01, 0.10)), tools=LOCAL,
             targets={"tmpfs": 5, "disk": 3, "s3": 3}, threads=True, dropped=True, primary=True),
        dict(make=("memory", "256M", (0.01, 0.10)), tools=LOCAL, targets={"tmpfs": 5}),
        dict(make=("memory", "64M", ()), tools=["snapstream", "zstd-1", "restic"], targets={"tmpfs": 5}),
        dict(make=("pages", "1G", (0.03,)), tools=LOCAL, targets={"tmpfs": 5}),
        dict(make=("pages", "256M", (0.03,)), tools=["snapstream", "zstd-1", "restic"],
             targets={"tmpfs": 5}),
        dict(make=("pages", "64M", ()), tools=["snapstream", "zstd-1", "restic"], targets={"tmpfs": 5}),
        dict(make=("files", 2000, 42_000_000), tools=LOCAL, targets={"tmpfs": 5}),
        dict(make=("sparse", "16G", "64M"), group=SPARSE_GROUP, targets={"tmpfs": 5}),
        dict(make=("memory", "4G", ()), tools=["snapstream", "zstd-1"], targets={"tmpfs": 2}),
        dict(make=("uniform", "random", "1G"), tools=LOCAL, targets={"tmpfs": 3}),
        dict(make=("uniform", "zero", "1G"), tools=LOCAL, targets={"tmpfs": 3}),
        dict(make=("firecracker", "512M"), tools=LOCAL, targets={"tmpfs": 3}),
        dict(make=("criu", "512M"), tools=LOCAL, targets={"tmpfs": 3}),
        dict(make=("gvisor", "gvisor-small", 8, 1), tools=LOCAL, targets={"tmpfs": 3}),
        dict(make=("gvisor", "gvisor-large", 300, 16), tools=LOCAL, targets={"tmpfs": 3}),
    ],
}
# The Ateom round trip (ateom_bench.py), on local disk and on tmpfs. The
# quick mode runs it only when --only names it (one run: ~3 minutes).
ATEOM = {"quick": {"mb": 256, "runs": 1, "opt_in": True}, "full": {"mb": 256, "runs": 3}}
# The fleet scenario (fleet.py): N concurrent restores of related
# snapshots through s3rver, without and with the node cache.
FLEET = {"quick": None, "full": {"mb": 256, "actors": 8, "runs": 3}}
# The keyed scenario (keyed.py): a sealed keyed store against a plain one,
# cold push and pull of the memory-like image, interleaved in one run.
KEYED = {"quick": {"mb": 256, "runs": 3}, "full": {"mb": 1024, "runs": 5}}


def make_name(make):
    kind = make[0]
    if kind == "memory":
        return "mem-" + make[1]
    if kind == "uniform":
        return "%s-%s" % (make[1], make[2])
    if kind == "firecracker":
        return "fc-" + make[1]
    if kind == "criu":
        return "criu-" + make[1]
    if kind == "pages":
        return "pages-" + make[1]
    if kind == "files":
        return "files-%d" % make[1]
    if kind == "sparse":
        return "sparse-" + make[1]
    return make[1]


def tmpfs_need(make):
    """Bytes of tmpfs a workload needs at its peak (images, a store, a restore)."""
    kind = make[0]
    if kind == "memory":
        size = parse_size(make[1])
        return int(size * (1 + len(make[2]) + 1.5))
    if kind == "uniform":
        return int(parse_size(make[2]) * 3.2)
    if kind in ("firecracker", "criu"):
        return int(parse_size(make[1]) * 4.2)
    if kind == "pages":
        return int(parse_size(make[1]) * (1 + len(make[2]) + 1.5))
    if kind == "files":
        return int(make[2] * 5)
    if kind == "sparse":
        # the data twice (sparse and dense), a store, a restore of each
        return int(parse_size(make[2]) * 6)
    return int(make[2] * MiB * 6)


class Harness:
    def __init__(self, args):
        self.a = args
        self.wd = args.workdir
        self.samples = []
        self.notes, self.failures = [], []
        self.workloads = {}
        self.targets_desc = {}
        self.phase_s = {}
        self.primary = None
        self.broken = {}

    # -- setup

    def claim(self, d):
        """Use d as a scratch directory; it is emptied at the end, so never
        adopt one that holds anything but our own leftovers."""
        marker = os.path.join(d, ".ssbench-workdir")
        if os.path.isdir(d) and os.listdir(d) and not os.path.exists(marker):
            sys.exit("bench: %s is not empty and not a bench workdir; pick another" % d)
        os.makedirs(d, exist_ok=True)
        open(marker, "a").close()

    def empty(self, d):
        if os.path.isdir(d):
            for name in os.listdir(d):
                if name != ".ssbench-workdir":
                    rm(os.path.join(d, name))

    def freeze(self, exe, sub):
        """Copy a built binary and the library beside it into the workdir:
        a rebuild of the tree during the run must not change what is
        measured. build/X/exe finds ../engine/libsnapstream.so.N through its
        $ORIGIN run path, so the copy keeps that layout."""
        d = os.path.join(self.wd, "bin")
        dst = os.path.join(d, sub, os.path.basename(exe))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(exe, dst)
        lib = os.path.join(os.path.dirname(os.path.dirname(exe)), "engine")
        # The name the binary asks for is the library's SONAME
        # (libsnapstream.so.<major>); old builds had .so.0, new ones .so.1.
        for so in sorted(glob.glob(os.path.join(lib, "libsnapstream.so.[0-9]"))):
            # A rebuild in progress may have removed the library for a moment.
            for _ in range(60):
                if os.path.exists(so):
                    break
                time.sleep(1)
            if not os.path.exists(so):
                sys.exit("bench: %s is missing (a build in progress?)" % so)
            os.makedirs(os.path.join(d, "engine"), exist_ok=True)
            shutil.copy2(os.path.realpath(so), os.path.join(d, "engine", os.path.basename(so)))
        return dst

    def find_tools(self):
        a = self.a
        exe = a.snapstream or os.path.join(ROOT, "build", "cli", "snapstream")
        if not os.access(exe, os.X_OK):
            exe = shutil.which("snapstream")
        if not exe:
            sys.exit("bench: no snapstream binary (build it: scripts/setup.sh, or --snapstream PATH)")
        self.snapstream = self.freeze(exe, "cli")
        built = subprocess.run(["git", "-C", os.path.dirname(os.path.realpath(exe)), "describe",
                                "--always", "--dirty"], capture_output=True, text=True).stdout.strip()
        self.versions = {"snapstream": "%s (%s%s)" % (
            first_line([self.snapstream, "--version"]) or "?", exe,
            ", built in a tree at " + built if built else "")}
        git = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                             capture_output=True, text=True)
        self.tree = git.stdout.strip() or None
        gen = a.genimage or os.path.join(ROOT, "build", "bench", "ss-genimage")
        if not os.access(gen, os.X_OK):
            # Not built: compile the single libc-only file ourselves.
            gen = os.path.join(self.wd, "ss-genimage")
            subprocess.run([os.environ.get("CC", "cc"), "-O2", "-std=c11", "-D_GNU_SOURCE", "-o", gen,
                            os.path.join(HERE, "genimage.c")], check=True)
        self.genimage = gen
        ateom = a.ateom or os.path.join(ROOT, "build", "ateom", "ateom")
        self.ateom = self.freeze(ateom, "ateom") if os.access(ateom, os.X_OK) else None
        self.tools = {"snapstream": Snapstream(self.snapstream, a.push_args)}
        vers = {"zstd": ["zstd", "--version"], "restic": ["restic", "version"],
                "casync": ["casync", "--version"]}
        for name, cls in (("zstd", None), ("restic", Restic), ("casync", Casync)):
            if not shutil.which(name):
                self.notes.append("%s is not installed: its columns are empty" % name)
                continue
            self.versions[name] = (first_line(vers[name]) or "?").strip("* ")
            if name == "zstd":
                self.tools["zstd-1"], self.tools["zstd-3"] = Zstd(1), Zstd(3)
            else:
                self.tools[name] = cls()
        for name in ("aws", "rclone"):
            # Debian's aws CLI first (another one may come first on PATH)
            exe = "/usr/bin/aws" if name == "aws" and os.access("/usr/bin/aws", os.X_OK) \
                else shutil.which(name)
            if not exe:
                self.notes.append("%s is not installed: its column is empty" % name)
                continue
            self.tools[name] = S3Copy(name, exe)
            self.versions[name] = first_line([exe, "--version"] if name == "aws" else [exe, "version"])
        if S3rver.available():
            self.versions["s3rver"] = S3rver.version()
        if shutil.which("runsc"):
            self.versions["runsc"] = first_line(["runsc", "--version"])

    # -- workloads

    def build(self, spec):
        make = spec["make"]
        kind, g, wd = make[0], self.genimage, os.path.join(self.wd, "images")
        os.makedirs(wd, exist_ok=True)
        if kind == "memory":
            return workloads.memory(g, wd, parse_size(make[1]), make[2], seed=self.a.seed)
        if kind == "uniform":
            return workloads.uniform(g, wd, make[1], parse_size(make[2]), seed=self.a.seed)
        if kind == "firecracker":
            return workloads.firecracker(g, wd, parse_size(make[1]), seed=self.a.seed)
        if kind == "criu":
            return workloads.criu(g, wd, parse_size(make[1]), seed=self.a.seed)
        if kind == "pages":
            return workloads.pages(g, wd, parse_size(make[1]), make[2], seed=self.a.seed,
                                   args=shlex.split(self.a.pages_args))
        if kind == "files":
            return workloads.smallfiles(g, wd, make[1], make[2], seed=self.a.seed)
        if kind == "sparse":
            return workloads.sparse(g, wd, parse_size(make[1]), parse_size(make[2]), seed=self.a.seed)
        if kind == "gvisor":
            return workloads.gvisor(wd, make[1], make[2], make[3])
        raise ValueError(kind)

    def runs(self, n):
        return self.a.runs if self.a.runs else n

    def run_target(self, spec, wl, tgt_name, tools=None, only_run=None):
        """Every run of wl on one target (only run number only_run when
        given: a group's workloads interleave run by run); tools: the
        spec's unless given."""
        a = self.a
        runs = self.runs(spec["targets"][tgt_name])
        c = self.ctx
        A, nexts, cleanup = wl.path, wl.nexts, []
        scenarios = None if a.all_scenarios else spec.get("scenarios")
        if tgt_name == "tmpfs":
            root = os.path.join(self.wd, "t")
            tgt = Target("tmpfs", root, "warm", threads=spec.get("threads", False),
                         scenarios=scenarios)
            tools = tools or spec["tools"]
            self.targets_desc["tmpfs"] = (
                "tmpfs: images, stores and restores in %s (%s); page cache warm (tmpfs is the page "
                "cache); write probe %s MB/s" % (self.wd, fs_type(self.wd),
                                                 " / ".join(map(str, self.probe_tmpfs))))
        elif tgt_name == "disk":
            root = os.path.join(a.disk_dir, "t")
            dropped = spec.get("dropped", False) and os.geteuid() == 0
            tgt = Target("disk", root, "warm", dropped=dropped, scenarios=scenarios)
            tools = tools or spec["tools"]
            # The images are copied to the disk (untimed): a checkpoint
            # written to local disk, pushed into a store on the same disk.
            img = os.path.join(a.disk_dir, "images")
            rm(img)
            os.makedirs(img)
            A = self.copy(wl.path, img)
            nexts = [workloads.Next(n.tag, self.copy(n.path, img), n.changed_bytes, n.label, n.report)
                     for n in wl.nexts]
            cleanup.append(img)
            self.targets_desc["disk"] = (
                "disk: images, stores and restores in %s (%s, %s); page cache warm except in the "
                "'page cache dropped' rows (sync; echo 3 > /proc/sys/vm/drop_caches just before); "
                "tools keep their default durability (snapstream fsyncs packs and manifests); write "
                "probe with fsync %s MB/s" % (a.disk_dir, fs_type(a.disk_dir),
                                             self.disk_dev(), " / ".join(map(str, self.probe_disk))))
            if spec.get("dropped") and not dropped:
                self.notes.append("disk: page cache not dropped (needs root): no 'dropped' rows")
        else:
            root = os.path.join(self.wd, "t")
            tgt = Target("s3", root, "warm", scenarios=scenarios)
            tools = spec.get("s3_tools", S3_TOOLS)
        os.makedirs(root, exist_ok=True)
        tools = [t for t in tools if t in self.tools]
        # a tool that failed once is not retried, across a group's calls too
        broken = self.broken.setdefault((wl.name, tgt_name), set())
        try:
            if tgt_name == "s3":
                self.srv = S3rver(self.wd)
                self.srv.start()
                c.srv, c.s3_env = self.srv, self.srv.env()
                cpu0 = self.srv.cpu()
            for i in range(runs) if only_run is None else (only_run,):
                if tgt_name == "s3":
                    c.bucket = "ssbench-%s-run%d" % (wl.name.lower(), i + 1)
                    self.srv.make_bucket(c.bucket)
                for t in tools:
                    if t in broken:
                        continue
                    log("%s, %s, run %d/%d: %s" % (wl.name, tgt_name, i + 1, runs, t))
                    try:
                        if tgt.dropped:
                            # The previous tool dropped the page cache: load
                            # the images again, so "warm" rows are warm.
                            for p in [A] + [n.path for n in nexts]:
                                read_through(p)
                        self.tools[t].run(c, i, wl, tgt, A, nexts)
                    except (CommandFailed, OSError, ValueError, KeyError) as e:
                        msg = "%s on %s, %s: %s" % (t, wl.name, tgt_name, e)
                        log("FAILED: " + msg)
                        self.failures.append(msg)
                        self.samples.append({"workload": wl.name, "target": tgt_name, "tool": t,
                                             "scenario": "error", "run": i, "error": str(e)})
                        broken.add(t)
                        rm(os.path.join(root, t))
                if tgt_name == "s3":
                    self.srv.drop_bucket(c.bucket)
            if tgt_name == "s3":
                self.targets_desc["s3"] = (
                    "s3rver: %s on 127.0.0.1, data on tmpfs, a fresh bucket per run; it shares the "
                    "CPUs with the tool measured (its CPU seconds are in the s3rver rows; %.1f s in "
                    "all, peak RSS %.0f MiB)" % (S3rver.version(), self.srv.cpu() - cpu0,
                                                 (self.srv.peak_rss_kib() or 0) / 1024))
        finally:
            if tgt_name == "s3":
                self.srv.stop()
                c.srv = None
            for p in cleanup:
                rm(p)
            rm(root)

    def copy(self, src, dest_dir):
        dst = os.path.join(dest_dir, os.path.basename(src))
        subprocess.run(["cp", "-a", "--sparse=never", src, dst], check=True)
        return dst

    def disk_dev(self):
        best, dev = "", "?"
        with open("/proc/mounts") as f:
            for line in f:
                p = line.split()
                if self.a.disk_dir.startswith(p[1].rstrip("/") + "/") and len(p[1]) >= len(best):
                    best, dev = p[1], p[0]
        return dev

    def workload(self, spec):
        name = make_name(spec["make"])
        need = tmpfs_need(spec["make"])
        free = shutil.disk_usage(self.wd).free
        if free < need:
            msg = "%s skipped: %s has %.1f GiB free, it needs ~%.1f GiB" % (
                name, self.wd, free / GiB, need / GiB)
            log(msg)
            self.failures.append(msg)
            return
        t0 = time.time()
        log("%s: building the images" % name)
        try:
            built = self.build(spec)
        except Skipped as e:
            self.notes.append("%s skipped: %s" % (name, e))
            log(self.notes[-1])
            return
        except (CommandFailed, OSError, subprocess.SubprocessError) as e:
            self.failures.append("%s: building the images failed: %s" % (name, e))
            log(self.failures[-1])
            return
        # A group (a tuple) is measured run by run, each workload with its
        # own tools, so a drift of the machine hits the pair alike.
        group = list(built) if isinstance(built, tuple) else [built]
        tools = {w.name: spec["group"][w.name.split("-")[0]] if "group" in spec else None
                 for w in group}
        for wl in group:
            self.workloads[wl.name] = wl
        if spec.get("primary"):
            self.primary = group[0].name
        log("%s: %.0f MB built in %.1f s" % (name, sum(w.bytes for w in group) / 1e6,
                                             time.time() - t0))
        try:
            for tgt in spec["targets"]:
                if tgt in self.a.skip:
                    continue
                if tgt == "s3" and not S3rver.available():
                    self.notes.append("s3rver is not installed (scripts/setup.sh runs npm ci in "
                                      "tests/s3): no object-store rows")
                    continue
                t1 = time.time()
                if len(group) == 1:
                    self.run_target(spec, group[0], tgt)
                else:
                    for i in range(self.runs(spec["targets"][tgt])):
                        for wl in group:
                            self.run_target(spec, wl, tgt, tools=tools[wl.name], only_run=i)
                self.phase_s["%s/%s" % (name, tgt)] = round(time.time() - t1, 1)
        finally:
            for wl in group:
                wl.remove()
        self.phase_s[name] = round(time.time() - t0, 1)

    def ateom_phase(self, cfg):
        a = self.a
        res = {"mb": cfg["mb"], "runs": self.runs(cfg["runs"]), "targets": {}}
        samples = []

        def record(tgt, tool, sc, i, wall, **extra):
            samples.append(dict(target=tgt, tool=tool, scenario=sc, run=i, wall_s=round(wall, 4),
                                **extra))
        targets = []
        # Local disk first: the targets are set there.
        if "disk" not in a.skip:
            self.claim(a.disk_dir)
            targets.append(("disk", a.disk_dir))
        if "tmpfs" not in a.skip:
            targets.append(("tmpfs", self.wd))
        t0 = time.time()
        try:
            ateom_bench.roundtrip(self.ateom, targets, cfg["mb"], res["runs"], record,
                                  snapstream=self.snapstream)
        except Skipped as e:
            res["skipped"] = str(e)
            self.notes.append("Ateom round trip skipped: %s" % e)
        except (CommandFailed, OSError, subprocess.SubprocessError) as e:
            res["skipped"] = "failed: %s" % e
            self.failures.append("Ateom round trip: %s" % e)
        res["samples"] = samples
        for tgt, d in targets:
            mine_t = [s for s in samples if s["target"] == tgt]
            if not mine_t:
                continue
            stats = {}
            for tool in ("ateom", "ateom-nostream", "runsc", "push-after", "runsc-idle-spin",
                         "fetch-alone"):
                for sc in ("checkpoint", "checkpoint-2", "restore", "restore-fetch"):
                    mine = [s for s in mine_t if s["tool"] == tool and s["scenario"] == sc]
                    if not mine:
                        continue
                    for key, suffix in (("wall_s", ""), ("machine_cpu_s", "/cpu"),
                                        ("own_cpu_s", "/own_cpu"), ("server_cpu_s", "/server_cpu"),
                                        ("sandbox_cpu_s", "/sandbox_cpu"),
                                        ("others_frac", "/others_frac"), ("load1", "/load1"),
                                        ("stored_bytes", "/stored")):
                        v = summarize([s[key] for s in mine if key in s])
                        if v:
                            stats["%s/%s%s" % (tool, sc, suffix)] = v
                    names = []
                    for s in mine:
                        names += [n for n in s.get("phases_ms", {}) if n not in names]
                    for n in names:
                        v = summarize([s["phases_ms"][n] / 1e3 for s in mine
                                       if n in s.get("phases_ms", {})])
                        if v:
                            stats["%s/%s/phase/%s" % (tool, sc, n)] = v
            # Per-run ratios: a drift of the machine between runs cancels.
            by_run = {}
            for s in mine_t:
                by_run.setdefault(s["run"], {})["%s/%s" % (s["tool"], s["scenario"])] = s
            for name, num, den in (("checkpoint", "ateom/checkpoint", "runsc/checkpoint"),
                                   ("restore", "ateom/restore", "runsc/restore"),
                                   ("restore-nostream", "ateom-nostream/restore", "runsc/restore")):
                v = summarize([r[num]["wall_s"] / r[den]["wall_s"] for r in by_run.values()
                               if num in r and den in r])
                if v:
                    stats["ratio/" + name] = v
            v = summarize([r["ateom/checkpoint-2"]["stored_bytes"] /
                           r["ateom/checkpoint"]["stored_bytes"] for r in by_run.values()
                           if "stored_bytes" in r.get("ateom/checkpoint-2", {}) and
                           r.get("ateom/checkpoint", {}).get("stored_bytes")])
            if v:
                stats["ratio/stored-2"] = v
            imgs = [s["image_bytes"] for s in mine_t if "image_bytes" in s]
            res["targets"][tgt] = {"dir": d, "fs": fs_type(d), "stats": stats,
                                   "image_bytes": max(imgs) if imgs else None}
        # The first target's figures where one set is wanted (the README).
        first = next(iter(res["targets"].values()), None)
        res["stats"] = first["stats"] if first else {}
        if first and first.get("image_bytes"):
            res["image_bytes"] = first["image_bytes"]
        res["cores"] = len(os.sched_getaffinity(0))
        self.phase_s["ateom"] = round(time.time() - t0, 1)
        return res

    def fleet_phase(self, cfg):
        res = {"runs": self.runs(cfg["runs"])}
        samples = []
        t0 = time.time()
        try:
            res.update(fleet.scenario(
                self.snapstream, self.genimage, self.wd,
                lambda name, i, **kw: samples.append(dict(tool="snapstream", scenario=name, run=i,
                                                          **kw)),
                size=cfg["mb"] * MiB, actors=cfg["actors"], runs=res["runs"]))
        except Skipped as e:
            res["skipped"] = str(e)
            self.notes.append("fleet scenario skipped: %s" % e)
        except (CommandFailed, OSError, subprocess.SubprocessError) as e:
            res["skipped"] = "failed: %s" % e
            self.failures.append("fleet scenario: %s" % e)
        res["samples"] = samples
        self.phase_s["fleet"] = round(time.time() - t0, 1)
        return res

    def keyed_phase(self, cfg):
        res = {"runs": self.runs(cfg["runs"])}
        t0 = time.time()
        try:
            res.update(keyed.scenario(self.snapstream, self.genimage, self.wd,
                                      lambda *x, **kw: None, cfg["mb"] * MiB, res["runs"],
                                      seed=self.a.seed))
        except (CommandFailed, OSError, ValueError, subprocess.SubprocessError) as e:
            res["skipped"] = "failed: %s" % e
            self.failures.append("keyed scenario: %s" % e)
        self.phase_s["keyed"] = round(time.time() - t0, 1)
        return res

    # -- entry

    def main(self):
        a = self.a
        t_start = time.time()
        self.claim(self.wd)
        plan = [s for s in PLANS[a.mode] if not a.only or make_name(s["make"]) in a.only]
        if any("disk" in s["targets"] for s in plan) and "disk" not in a.skip:
            self.claim(a.disk_dir)
        self.ctx = Ctx(self.wd, self.samples, a.verify_all)
        ateom_res = fleet_res = keyed_res = None
        try:
            self.find_tools()
            self.machine = machine_info(self.wd)
            self.probe_tmpfs = write_probe(self.wd)
            self.probe_disk = write_probe(a.disk_dir) if os.path.exists(
                os.path.join(a.disk_dir, ".ssbench-workdir")) else []
            log("machine: %s; tmpfs write %s MB/s" % (self.machine["cpu"], self.probe_tmpfs))
            for spec in plan:
                skip = [k for k in ("gvisor",) if k in a.skip and spec["make"][0] == k]
                if skip:
                    continue
                self.workload(spec)
            cfg = ATEOM[a.mode]
            if cfg and "ateom" not in a.skip and (
                    ("ateom" in a.only) if a.only or cfg.get("opt_in") else True):
                ateom_res = self.ateom_phase(cfg)
            cfg = FLEET[a.mode]
            if cfg and "fleet" not in a.skip and "s3" not in a.skip and (
                    not a.only or "fleet" in a.only):
                fleet_res = self.fleet_phase(cfg)
            cfg = KEYED[a.mode]
            if cfg and "keyed" not in a.skip and (not a.only or "keyed" in a.only):
                keyed_res = self.keyed_phase(cfg)
        finally:
            if not a.keep:
                self.empty(self.wd)
                if os.path.isdir(a.disk_dir) and os.path.exists(os.path.join(a.disk_dir, ".ssbench-workdir")):
                    self.empty(a.disk_dir)
        runs = sorted({"%s %s: %d" % (make_name(s["make"]), t, self.runs(n)) for s in plan
                       for t, n in s["targets"].items()})
        res = {
            "mode": a.mode,
            "machine": self.machine,
            "targets": {k: self.targets_desc[k] for k in ("tmpfs", "disk", "s3")
                        if k in self.targets_desc},
            "versions": self.versions,
            "tree": self.tree,
            "config": {k: v for k, v in vars(a).items()},
            "primary": self.primary,
            "workloads": {k: w.as_json() for k, w in self.workloads.items()},
            "runs_note": ", ".join(runs) if a.runs is None else "%d per figure" % a.runs,
            "ateom": ateom_res,
            "fleet": fleet_res,
            "keyed": keyed_res,
            "phase_s": self.phase_s,
            "elapsed_s": round(time.time() - t_start, 1),
            "notes": self.notes,
            "failures": self.failures,
            "samples": self.samples,
        }
        if self.primary is None:
            res["primary"] = next(iter(self.workloads), None)
        md = report.write(a.out, res)
        print(md)
        log("report in %s (%.0f s)" % (a.out, res["elapsed_s"]))
        if self.failures:
            return 1
        if a.check and any(t["pass"] is False for t in res.get("target_ratios", [])):
            return 3
        return 0


def main():
    ap = argparse.ArgumentParser(
        description="Benchmark snapstream against zstd, restic, casync, aws s3 cp and rclone on "
                    "generated and real checkpoint images; write a report directory. "
                    "See bench/README.md.")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="the everyday subset, ~2-2.5 minutes on 2 cores (the default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="every workload, target, peer and size: the release figures")
    ap.set_defaults(mode="quick")
    ap.add_argument("--out", help="report directory (default bench/reports/DATE-MODE)")
    ap.add_argument("--workdir", default="/dev/shm/ssbench",
                    help="scratch directory on tmpfs (default /dev/shm/ssbench); emptied at the end")
    ap.add_argument("--disk-dir", default="/var/tmp/ssbench",
                    help="scratch directory on the disk, for the disk target (default /var/tmp/ssbench)")
    ap.add_argument("--runs", type=int, help="runs per figure, overriding the plan's")
    ap.add_argument("--only", default="",
                    help="comma list of workloads to run (e.g. mem-1G,criu-512M; 'ateom' for the "
                         "Ateom round trip, 'fleet' for the node cache's fleet scenario, 'keyed' "
                         "for sealed against plain stores)")
    ap.add_argument("--skip", default="",
                    help="comma list of targets or phases to leave out: tmpfs, disk, s3, gvisor, "
                         "ateom, fleet, keyed")
    ap.add_argument("--seed", type=int, default=1, help="image seed (default 1)")
    ap.add_argument("--snapstream", help="snapstream binary (default build/cli/snapstream)")
    ap.add_argument("--ateom", help="ateom binary (default build/ateom/ateom)")
    ap.add_argument("--genimage", help="ss-genimage binary (default build/bench/ss-genimage)")
    ap.add_argument("--push-args", default="",
                    help="extra arguments for every snapstream push, e.g. '--zstd-level 3'")
    ap.add_argument("--pages-args", default="",
                    help="extra ss-genimage options for the page-granular images, to imitate "
                         "others of the class, e.g. '--mix zero=20,repeat=30,text=30,random=20 "
                         "--pool 3000'")
    ap.add_argument("--all-scenarios", action="store_true",
                    help="every scenario on every workload (the quick mode measures only cold "
                         "push, next checkpoints and pull on the page-granular, small-file and "
                         "sparse workloads)")
    ap.add_argument("--verify-all", action="store_true",
                    help="compare every restore with its image, not only the first run's")
    ap.add_argument("--keep", action="store_true", help="leave the scratch directories' contents")
    ap.add_argument("--check", action="store_true", help="exit 3 if a target ratio is missed")
    ap.add_argument("--report-from", metavar="RESULTS_JSON",
                    help="measure nothing: write the report again from a results.json "
                         "(into --out, default the file's directory)")
    ap.add_argument("--update-readme", metavar="RESULTS_JSON",
                    help="measure nothing: replace the Benchmarks section of README.md with the "
                         "summary of a full report's results.json")
    a = ap.parse_args()
    if a.update_readme:
        import json
        with open(a.update_readme) as f:
            res = json.load(f)
        if res.get("mode") != "full":
            ap.error("%s is a %s report; the README shows a full one" % (a.update_readme,
                                                                          res.get("mode")))
        report.update_readme(os.path.join(ROOT, "README.md"), res)
        print("README.md: Benchmarks section from %s" % a.update_readme)
        return 0
    if a.report_from:
        import json
        with open(a.report_from) as f:
            res = json.load(f)
        print(report.write(os.path.abspath(a.out or os.path.dirname(a.report_from)), res))
        return 0
    a.only = [x.strip() for x in a.only.split(",") if x.strip()]
    a.skip = [x.strip() for x in a.skip.split(",") if x.strip()]
    for x in a.skip:
        if x not in ("tmpfs", "disk", "s3", "gvisor", "ateom", "fleet", "keyed"):
            ap.error("unknown --skip %r" % x)
    names = [make_name(s["make"]) for s in PLANS[a.mode]] + (["ateom"] if ATEOM[a.mode] else []) \
        + (["fleet"] if FLEET[a.mode] else []) + (["keyed"] if KEYED[a.mode] else [])
    for x in a.only:
        if x not in names:
            ap.error("unknown workload %r in %s mode (known: %s)" % (x, a.mode, ", ".join(names)))
    if a.runs is not None and a.runs < 1:
        ap.error("--runs must be >= 1")
    if not a.out:
        a.out = os.path.join(HERE, "reports", "%s-%s" % (
            datetime.datetime.now().strftime("%Y-%m-%d-%H%M"), a.mode))
    a.workdir = os.path.abspath(a.workdir)
    a.disk_dir = os.path.abspath(a.disk_dir)
    a.out = os.path.abspath(a.out)
    return Harness(a).main()


if __name__ == "__main__":
    sys.exit(main())
