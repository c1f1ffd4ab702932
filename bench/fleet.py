"""The fleet scenario: N concurrent restores of related snapshots on one
node, through s3rver, with and without the node cache (docs/DESIGN.md,
"The node cache").

A golden memory image and N actor images derived from it (a fraction of
pages dirtied each, different seeds) are pushed to a bucket, the actors
with the golden as --parent. Then, per run and in this order:

  none   N pulls at once, no cache
  cold   N pulls at once through an empty cache
  warm   N pulls at once through the cache the cold pulls filled

and once: one actor pulled again through the warm cache (repull); the
node restores that actor, checkpoints its next state (push with the
cache, the actor as --parent) and restores that (pushed); the same with
the golden restored and a new actor checkpointed (pushed-golden); and
one restore from a local store, from the warm cache in front of the
bucket, and from a warm cache in front of the local store, alternating,
medians.

Bytes are what s3rver sent in GET response bodies (its preloaded counter,
bench/s3rver.py): the HTTP layer, not snapstream's counters. Wall time
is from starting the N pulls to the last one's exit; CPU time is the
pulls' (user + system, all N) and s3rver's, which on a shared machine say
what the wall times would on a quiet one.

Python 3 standard library only. Standalone:
  /usr/bin/python3 bench/fleet.py --snapstream build/cli/snapstream \\
      --genimage build/bench/ss-genimage [--size 256M] [--actors 8] [--runs 1]
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import MiB, CommandFailed, Skipped, log, parse_size, rm  # noqa: E402
from s3rver import S3_UNSET, S3rver  # noqa: E402

BUCKET = "fleet"


class Fleet:
    def __init__(self, snapstream, genimage, wd, size, actors, dirty, threads=None):
        self.ss, self.gen, self.wd = snapstream, genimage, os.path.join(wd, "fleet")
        self.size, self.actors, self.dirty = size, actors, dirty
        self.threads = threads
        self.srv = None
        self.cache = os.path.join(self.wd, "cache")
        self.b = "s3://%s" % BUCKET

    def env(self):
        e = dict(os.environ)
        for k in S3_UNSET:
            e.pop(k, None)
        e.update(self.srv.env())
        for k in ("SNAPSTREAM_CACHE", "SNAPSTREAM_CACHE_SIZE"):
            e.pop(k, None)
        return e

    def cmd(self, *args):
        c = [self.ss] + list(args) + ["--quiet"]
        if self.threads:
            c += ["--threads", str(self.threads)]
        return c

    def run(self, *args):
        p = subprocess.run(self.cmd(*args), env=self.env(), capture_output=True, text=True)
        if p.returncode:
            raise CommandFailed("%s: exit %d: %s" % (" ".join(args), p.returncode,
                                                     p.stderr.strip()[-400:]))

    def get_bytes(self):
        return self.srv.bytes_sent().get("GET", 0)

    def images(self):
        img = os.path.join(self.wd, "img")
        os.makedirs(img, exist_ok=True)
        g = os.path.join(img, "golden")
        subprocess.run([self.gen, "--size", str(self.size), "--seed", "16", "--out", g, "--quiet"],
                       check=True)
        for i in range(self.actors + 1):
            subprocess.run([self.gen, "--dirty", str(self.dirty), "--base", g, "--seed",
                            str(100 + i), "--out", os.path.join(img, "a%d" % i), "--quiet"],
                           check=True)
        one = "a%d" % min(3, self.actors - 1)
        subprocess.run([self.gen, "--dirty", str(self.dirty), "--base", os.path.join(img, one),
                        "--seed", "200", "--out", os.path.join(img, one + "-next"), "--quiet"],
                       check=True)
        return img

    def setup(self):
        rm(self.wd)
        os.makedirs(self.wd)
        self.img = self.images()
        self.srv = S3rver(self.wd)
        self.srv.start()
        self.srv.make_bucket(BUCKET)
        self.run("push", os.path.join(self.img, "golden"), self.b + "/golden")
        for i in range(self.actors):
            self.run("push", os.path.join(self.img, "a%d" % i), "%s/a%d" % (self.b, i),
                     "--parent", self.b + "/golden")
        self.bucket_bytes = sum(n for _, n in self.srv.keys(BUCKET))

    def pulls(self, names, cache):
        """Pull names at once; (wall seconds, GET bytes s3rver sent)."""
        out = os.path.join(self.wd, "out")
        rm(out)
        os.makedirs(out)
        extra = ["--cache", cache] if cache else []
        b0 = self.get_bytes()
        s0 = self.srv.cpu()
        t0 = time.monotonic()
        ps = [subprocess.Popen(self.cmd("pull", "%s/%s" % (self.b, n), os.path.join(out, n),
                                        *extra),
                               env=self.env(), stdout=subprocess.DEVNULL,
                               stderr=open(os.path.join(self.wd, "err-" + n), "w"))
              for n in names]
        cpu, rcs = 0.0, {}
        for n, p in zip(names, ps):
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            cpu += ru.ru_utime + ru.ru_stime
            rcs[n] = p.returncode
        wall = time.monotonic() - t0
        self.last_cpu = (cpu, self.srv.cpu() - s0)
        got = self.get_bytes() - b0
        for n, rc in rcs.items():
            if rc:
                with open(os.path.join(self.wd, "err-" + n)) as f:
                    err = f.read()
                raise CommandFailed("pull %s: exit %d: %s" % (n, rc, err.strip()[-400:]))
        for n in names:
            src = os.path.join(self.img, "golden" if n == "golden" else n)
            if not same_file(src, os.path.join(out, n)):
                raise CommandFailed("pull %s: the restored image differs" % n)
        rm(out)
        return wall, got

    def stop(self):
        if self.srv:
            self.srv.stop()
            self.srv = None


def same_file(a, b):
    with open(a, "rb") as x, open(b, "rb") as y:
        while True:
            p, q = x.read(4 * MiB), y.read(4 * MiB)
            if p != q:
                return False
            if not p:
                return True


def scenario(snapstream, genimage, wd, record, size=256 * MiB, actors=8, dirty=0.03, runs=1,
             local_runs=11):
    """Run the fleet scenario; record(name, run, **figures) once per
    measurement. Returns the summary dict."""
    if not S3rver.available():
        raise Skipped("s3rver is not installed (scripts/setup.sh runs npm ci in tests/s3)")
    f = Fleet(snapstream, genimage, wd, size, actors, dirty)
    names = ["a%d" % i for i in range(actors)]
    res = {"image_bytes": size, "actors": actors, "dirty": dirty}
    try:
        f.setup()
        res["bucket_bytes"] = f.bucket_bytes
        walls = {"none": [], "cold": [], "warm": []}
        fetched = {"none": [], "cold": [], "warm": []}
        cpus = {"none": [], "cold": [], "warm": []}
        for i in range(runs):
            for mode in ("none", "cold", "warm"):
                if mode == "cold":
                    rm(f.cache)
                w, b = f.pulls(names, f.cache if mode != "none" else None)
                walls[mode].append(w)
                fetched[mode].append(b)
                cpus[mode].append(f.last_cpu)
                record("fleet-%s" % mode, i, wall_s=round(w, 4), fetched_bytes=b,
                       cpu_s=round(f.last_cpu[0], 3), s3rver_cpu_s=round(f.last_cpu[1], 3))
                log("fleet %s run %d: %.2f s, %.1f MiB fetched, CPU %.2f s + s3rver %.2f s"
                    % (mode, i, w, b / MiB, f.last_cpu[0], f.last_cpu[1]))
        one = names[min(3, actors - 1)]
        w, b = f.pulls([one], f.cache)
        record("fleet-repull", 0, wall_s=round(w, 4), fetched_bytes=b)
        res["repull_bytes"] = b
        # A sandbox restored on this node (through an empty cache), run,
        # checkpointed here (push with the cache, its restore as --parent)
        # and restored here again.
        rm(f.cache)
        f.pulls([one], f.cache)
        nxt = one + "-next"
        f.run("push", os.path.join(f.img, nxt), "%s/%s" % (f.b, nxt), "--parent",
              "%s/%s" % (f.b, one), "--cache", f.cache)
        w, b = f.pulls([nxt], f.cache)
        record("fleet-pushed", 0, wall_s=round(w, 4), fetched_bytes=b)
        res["pushed_bytes"] = b
        # The same with the golden restored and a new actor checkpointed
        # with the golden as parent: chunks the push found in other
        # actors' packs (stored by other nodes) were never on this node.
        rm(f.cache)
        f.pulls(["golden"], f.cache)
        new = "a%d" % actors
        f.run("push", os.path.join(f.img, new), "%s/%s" % (f.b, new), "--parent",
              f.b + "/golden", "--cache", f.cache)
        w, b = f.pulls([new], f.cache)
        record("fleet-pushed-golden", 0, wall_s=round(w, 4), fetched_bytes=b)
        res["pushed_golden_bytes"] = b
        # One restore: from a local store on the same file system (the
        # golden and that actor pushed there too), from the warm cache in
        # front of the bucket (its manifest still comes from s3rver), and
        # from the warm cache in front of that local store; alternating,
        # medians.
        local = os.path.join(f.wd, "local")
        f.run("push", os.path.join(f.img, "golden"), os.path.join(local, "golden"))
        f.run("push", os.path.join(f.img, one), os.path.join(local, one), "--parent",
              os.path.join(local, "golden"))
        lcache = os.path.join(f.wd, "lcache")
        f.pulls([one], f.cache)
        kinds = {"local": (os.path.join(local, one), []),
                 "cache": ("%s/%s" % (f.b, one), ["--cache", f.cache]),
                 "local-cache": (os.path.join(local, one), ["--cache", lcache])}
        times = {k: [] for k in kinds}
        out = os.path.join(f.wd, "out1")
        order = list(kinds)
        for i in range(local_runs + 1):
            # A different kind first in each round: a drift of the shared
            # host (page-fault cost, a neighbour's load) then falls on all
            # three alike.
            for kind in order[i % 3:] + order[:i % 3]:
                src, extra = kinds[kind]
                rm(out)
                t0 = time.monotonic()
                p = subprocess.run(f.cmd("pull", src, out, *extra), env=f.env(),
                                   capture_output=True, text=True)
                t = time.monotonic() - t0
                if p.returncode:
                    raise CommandFailed("pull %s: %s" % (src, p.stderr.strip()[-300:]))
                if i:   # the first round fills lcache
                    times[kind].append(t)
                    record("fleet-one-%s" % kind, i, wall_s=round(t, 4))
        rm(out)
        for kind in kinds:
            res["one_%s_s" % kind.replace("-", "_")] = statistics.median(times[kind])
        for mode in walls:
            res["%s_wall_s" % mode] = statistics.median(walls[mode])
            res["%s_bytes" % mode] = statistics.median(fetched[mode])
            res["%s_cpu_s" % mode] = statistics.median(c for c, _ in cpus[mode])
            res["%s_s3rver_cpu_s" % mode] = statistics.median(c for _, c in cpus[mode])
        bb = f.bucket_bytes
        res["targets"] = [
            dict(name="%d concurrent pulls through an empty cache fetch <= 1.15x the bucket" % actors,
                 value=res["cold_bytes"] / bb, limit=1.15, unit="x bucket",
                 ok=res["cold_bytes"] <= 1.15 * bb),
            dict(name="pulling one again fetches <= 2 MiB", value=res["repull_bytes"] / MiB,
                 limit=2, unit="MiB", ok=res["repull_bytes"] <= 2 * MiB),
            dict(name="pulling one pushed on the node fetches <= 2 MiB",
                 value=res["pushed_bytes"] / MiB, limit=2, unit="MiB",
                 ok=res["pushed_bytes"] <= 2 * MiB),
            dict(name="%d cached (cold) pulls >= 1.5x faster than uncached" % actors,
                 value=res["none_wall_s"] / res["cold_wall_s"], limit=1.5, unit="x",
                 ok=res["none_wall_s"] >= 1.5 * res["cold_wall_s"]),
            dict(name="%d cached (warm) pulls >= 1.5x faster than uncached" % actors,
                 value=res["none_wall_s"] / res["warm_wall_s"], limit=1.5, unit="x",
                 ok=res["none_wall_s"] >= 1.5 * res["warm_wall_s"]),
            dict(name="a pull from the cache is as fast as from a local store",
                 value=res["one_local_s"] / res["one_cache_s"], limit=1.0, unit="x",
                 ok=res["one_cache_s"] <= res["one_local_s"] * 1.02),
            dict(name="the same, both from the local store, with and without the cache",
                 value=res["one_local_s"] / res["one_local_cache_s"], limit=1.0, unit="x",
                 ok=res["one_local_cache_s"] <= res["one_local_s"] * 1.02),
        ]
    finally:
        f.stop()
        rm(f.wd)
    return res


def main():
    ap = argparse.ArgumentParser(description="the fleet scenario alone (bench/fleet.py)")
    ap.add_argument("--snapstream", required=True)
    ap.add_argument("--genimage", required=True)
    ap.add_argument("--workdir", default="/dev/shm/ssbench-fleet")
    ap.add_argument("--size", default="256M")
    ap.add_argument("--actors", type=int, default=8)
    ap.add_argument("--dirty", type=float, default=0.03)
    ap.add_argument("--runs", type=int, default=1)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    samples = []
    res = scenario(os.path.abspath(a.snapstream), os.path.abspath(a.genimage), a.workdir,
                   lambda name, i, **kw: samples.append(dict(scenario=name, run=i, **kw)),
                   size=parse_size(a.size), actors=a.actors, dirty=a.dirty, runs=a.runs)
    res["samples"] = samples
    print(json.dumps(res, indent=1))
    shutil.rmtree(a.workdir, ignore_errors=True)
    return 0 if all(t["ok"] for t in res["targets"]) else 3


if __name__ == "__main__":
    sys.exit(main())
