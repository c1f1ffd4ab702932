"""The tools measured and what each scenario means for each of them.

A tool's run() does every scenario it has for one workload, one target
and one run, in a fixed order, in its own directory (removed afterwards),
and records one sample per measured command through Ctx.measure().

Scenario names (every target):
  cold          the image into an empty store / repo / bucket
  warm          the same image again under a new name (restic: --force)
  warm-parent   snapstream only: the same again naming the first as --parent
  warm-shortcut restic only: a second backup of the unchanged path (not read)
  incr*         a next checkpoint (zstd, aws, rclone: the whole image again)
  pull          restore the first image to a new file or directory
  verify        check what is stored (snapstream verify, restic check
                --read-data, zstd -t)
  cold-t1, pull-t1          snapstream with --threads 1
  cold-dropped, pull-dropped  page cache dropped just before (disk target)

Python 3 standard library only."""

import os
import shlex

from common import (CommandFailed, allocated_bytes, drop_caches, du_sb, parse_json_output, rm, run,
                    same_content, settle_memory)

RESTIC_PASSWORD = "ssbench"  # throwaway repos; the key is not a secret

# What the S3 tools must not inherit from the caller: another account,
# profile or endpoint, or a CA bundle (rclone refuses to start when
# AWS_CA_BUNDLE names a file, even for plain http). As tests/s3/harness.py.
S3_UNSET = ("AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3",
            "AWS_CA_BUNDLE", "SNAPSTREAM_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE")


# The scenarios a short plan keeps: what a checkpointer does on every
# checkpoint (cold push, next checkpoints, pull); "incr" stands for them all.
SCENARIOS_MIN = ("cold", "incr", "pull")


class Target:
    """Where a scenario's data lives: 'tmpfs' or 'disk' (a directory), or
    's3' (a bucket on s3rver, whose data directory is on tmpfs)."""

    def __init__(self, name, root, cache, dropped=False, threads=False, scenarios=None):
        self.name, self.root, self.cache = name, root, cache
        self.dropped = dropped      # also measure with the page cache dropped
        self.threads = threads      # also measure snapstream --threads 1
        self.scenarios = scenarios  # only these (SCENARIOS_MIN's names); None: all

    def wants(self, sc):
        if self.scenarios is None:
            return True
        return ("incr" if sc.startswith("incr") else sc) in self.scenarios

    def dir(self, tool):
        d = os.path.join(self.root, tool)
        rm(d)
        os.makedirs(d)
        return d


class Ctx:
    """What the tools need from the harness: measuring and recording."""

    def __init__(self, wd, samples, verify_all=False):
        self.wd, self.samples, self.verify_all = wd, samples, verify_all
        self.srv = None
        self.s3_env = None

    def measure(self, tool, wl, tgt, scenario, i, cmd, nbytes, env=None, unset=(), cache=None,
                **extra):
        """Run cmd, record one sample; returns (Result, sample)."""
        srv0 = None
        if tgt.name == "s3":
            srv0 = (self.srv.cpu(), self.srv.counts())
            env, unset = dict(self.s3_env, **(env or {})), S3_UNSET
        # Every command starts on memory as warm as the last one's: about
        # as many fresh pages as the image holds data (common.settle_memory).
        settle_s = settle_memory(self.wd, wl.alloc)
        r = run(cmd, self.wd, env=env, unset=unset)
        s = {"workload": wl.name, "target": tgt.name, "tool": tool, "scenario": scenario, "run": i,
             "bytes": nbytes, "wall_s": round(r.wall, 4), "cpu_s": round(r.cpu, 4),
             "maxrss_kib": r.maxrss_kib, "bg_cpu_frac": round(r.bg_cpu, 3),
             "cache": cache or tgt.cache, "settle_s": round(settle_s, 3),
             "cmd": " ".join(shlex.quote(c) for c in cmd)}
        if srv0:
            # s3rver shares the CPUs with the tool: its CPU is taken out of
            # bg_cpu_frac (kept as bg_cpu_frac_incl_s3rver), so that figure
            # still means other tenants.
            cpu1, n1 = self.srv.cpu(), self.srv.counts()
            srv_cpu = cpu1 - srv0[0]
            n0 = srv0[1]
            by = {m: n1.get(m, 0) - n0.get(m, 0) for m in n1 if n1.get(m, 0) != n0.get(m, 0)}
            ncpu = os.cpu_count() or 1
            s["bg_cpu_frac_incl_s3rver"] = s["bg_cpu_frac"]
            if r.wall > 0:
                s["bg_cpu_frac"] = round(max(0.0, r.bg_cpu * r.wall * ncpu - srv_cpu)
                                         / (r.wall * ncpu), 3)
            s.update(s3rver_cpu_s=round(srv_cpu, 3), s3rver_requests=sum(by.values()),
                     s3rver_requests_by_method=by)
        s.update(extra)
        self.samples.append(s)
        return r, s

    def check_restore(self, i, src, dest, sample):
        """cmp the first run's restore (every run's with --verify-all)."""
        if i == 0 or self.verify_all:
            ok = same_content(src, dest)
            sample["verified"] = ok
            if not ok:
                raise CommandFailed("%s: restored %s differs from %s" % (sample["tool"], dest, src))
        if os.path.exists(dest):
            sample["dest_allocated_bytes"] = allocated_bytes(dest)


def _drop(tgt):
    if not drop_caches():
        raise CommandFailed("cannot drop the page cache (needs root)")


# ---------------------------------------------------------------- snapstream

class Snapstream:
    name = "snapstream"
    label = "snapstream"

    def __init__(self, exe, push_args=""):
        self.exe, self.push_args = exe, shlex.split(push_args)

    def push_cmd(self, src, snap, store=None, parent=None, threads=None):
        cmd = [self.exe, "push", src, snap, "--json"] + self.push_args
        if store:
            cmd += ["--store", store]
        if parent:
            cmd += ["--parent", parent]
        if threads:
            cmd += ["--threads", str(threads)]
        return cmd

    def run(self, c, i, wl, tgt, A, nexts):
        if tgt.name == "s3":
            return self.run_s3(c, i, wl, tgt, A, nexts)
        d = tgt.dir(self.name)
        store, snaps = os.path.join(d, "store"), os.path.join(d, "snaps")
        os.makedirs(snaps)
        snap = lambda n: os.path.join(snaps, n)
        m = lambda sc, cmd, nb, **kw: c.measure(self.name, wl, tgt, sc, i, cmd, nb, **kw)

        def push(sc, src, name, nb, parent=None, st=None, threads=None, **kw):
            r, s = m(sc, self.push_cmd(src, snap(name), st or store, parent, threads), nb, **kw)
            j = parse_json_output(r.stdout)
            s["json"] = j
            return j, s

        j, s = push("cold", A, "a", wl.bytes)
        s.update(stored_bytes=du_sb(store), manifest_bytes=du_sb(snaps))
        if tgt.wants("warm"):
            push("warm", A, "a-warm", wl.bytes)
        if tgt.wants("warm-parent"):
            # As a checkpointer pushes the next checkpoint of a workload: cut
            # points are predicted from the parent, most chunking is skipped.
            push("warm-parent", A, "a-warm-parent", wl.bytes, parent=snap("a"))
        for n in nexts:
            j, s = push(n.tag, n.path, "b-" + n.tag, n.bytes, parent=snap("a"))
            up = j.get("new_stored_bytes")
            s.update(changed_bytes=n.changed_bytes, uploaded_bytes=up,
                     ratio=up / n.changed_bytes if n.changed_bytes and up is not None else None)
        dest = os.path.join(d, "restore")

        def pull(sc, threads=None, cache=None):
            cmd = [self.exe, "pull", snap("a"), dest, "--store", store, "--json"]
            if threads:
                cmd += ["--threads", str(threads)]
            r, s = m(sc, cmd, wl.bytes, cache=cache)
            s["json"] = parse_json_output(r.stdout)
            c.check_restore(i, A, dest, s)
            rm(dest)
        pull("pull")
        if tgt.wants("verify"):
            r, s = m("verify", [self.exe, "verify", snap("a"), "--store", store, "--json"], wl.bytes)
            s["json"] = parse_json_output(r.stdout)
        if tgt.threads:
            st1 = os.path.join(d, "store-t1")
            push("cold-t1", A, "a-t1", wl.bytes, st=st1, threads=1, threads_used=1)
            rm(st1)
            pull("pull-t1", threads=1)
        if tgt.dropped:
            std = os.path.join(d, "store-dropped")
            _drop(tgt)
            push("cold-dropped", A, "a-dropped", wl.bytes, st=std, cache="dropped")
            rm(std)
            _drop(tgt)
            pull("pull-dropped", cache="dropped")
        rm(d)

    def run_s3(self, c, i, wl, tgt, A, nexts):
        bucket = c.bucket
        snap = lambda n: "s3://%s/snaps/%s" % (bucket, n)

        def push(sc, src, name, nb, parent=None):
            # Default store: s3://bucket/.snapstream, fresh in this run's bucket.
            r, s = c.measure(self.name, wl, tgt, sc, i, self.push_cmd(src, snap(name), None, parent),
                             nb)
            j = parse_json_output(r.stdout)
            s.update(json=j, requests=j.get("requests"),
                     requests_per_gib=(j.get("requests") or 0) / (nb / (1 << 30)),
                     s3rver_requests_per_gib=s["s3rver_requests"] / (nb / (1 << 30)),
                     uploaded_bytes=j.get("transferred_bytes"))
            return j, s

        push("cold", A, "a", wl.bytes)
        if tgt.wants("warm"):
            push("warm", A, "a-warm", wl.bytes)
        if tgt.wants("warm-parent"):
            push("warm-parent", A, "a-warm-parent", wl.bytes, parent=snap("a"))
        for n in nexts:
            j, s = push(n.tag, n.path, "b-" + n.tag, n.bytes, parent=snap("a"))
            up = j.get("new_stored_bytes")
            s.update(changed_bytes=n.changed_bytes,
                     ratio=up / n.changed_bytes if n.changed_bytes and up is not None else None)
        dest = os.path.join(c.wd, "s3-restore")
        r, s = c.measure(self.name, wl, tgt, "pull", i,
                         [self.exe, "pull", snap("a"), dest, "--json"], wl.bytes)
        j = parse_json_output(r.stdout)
        s.update(json=j, requests=j.get("requests"), downloaded_bytes=j.get("transferred_bytes"))
        try:
            c.check_restore(i, A, dest, s)
        finally:
            rm(dest)
        if tgt.wants("verify"):
            r, s = c.measure(self.name, wl, tgt, "verify", i,
                             [self.exe, "verify", snap("a"), "--json"], wl.bytes)
            s["json"] = parse_json_output(r.stdout)


# ---------------------------------------------------------------- zstd

class Zstd:
    """zstd -L -T0: compression alone, the floor any compressing tool pays.
    No dedup, so a next checkpoint is compressed whole again."""

    def __init__(self, level):
        self.level = level
        self.name = "zstd-%d" % level
        self.label = "zstd -%d -T0" % level

    def compress(self, src, out):
        if os.path.isdir(src):
            return ["sh", "-c", "tar -C %s -cf - %s | zstd -%d -T0 -q -f -o %s" % (
                shlex.quote(os.path.dirname(src)), shlex.quote(os.path.basename(src)), self.level,
                shlex.quote(out))]
        return ["zstd", "-%d" % self.level, "-T0", "-q", "-f", src, "-o", out]

    def run(self, c, i, wl, tgt, A, nexts):
        d = tgt.dir(self.name)
        m = lambda sc, cmd, nb, **kw: c.measure(self.name, wl, tgt, sc, i, cmd, nb, **kw)
        out = os.path.join(d, "a.zst")
        r, s = m("cold", self.compress(A, out), wl.bytes)
        s["stored_bytes"] = os.path.getsize(out)
        for n in nexts:
            o = os.path.join(d, "b.zst")
            r, s = m(n.tag, self.compress(n.path, o), n.bytes)
            up = os.path.getsize(o)
            s.update(changed_bytes=n.changed_bytes, uploaded_bytes=up,
                     ratio=up / n.changed_bytes if n.changed_bytes else None)
            rm(o)
        dest = os.path.join(d, "restore")

        def pull(sc, cache=None):
            if os.path.isdir(A):
                os.makedirs(dest)
                cmd = ["sh", "-c", "zstd -d -T0 -q -c %s | tar -C %s -xf -" % (
                    shlex.quote(out), shlex.quote(dest))]
                got = os.path.join(dest, os.path.basename(A))
            else:
                cmd, got = ["zstd", "-d", "-T0", "-q", "-f", out, "-o", dest], dest
            r, s = m(sc, cmd, wl.bytes, cache=cache)
            c.check_restore(i, A, got, s)
            rm(dest)
        pull("pull")
        if tgt.wants("verify"):
            m("verify", ["zstd", "-t", "-q", out], wl.bytes)
        if tgt.dropped:
            o2 = os.path.join(d, "a2.zst")
            _drop(tgt)
            m("cold-dropped", self.compress(A, o2), wl.bytes, cache="dropped")
            rm(o2)
            _drop(tgt)
            pull("pull-dropped", cache="dropped")
        rm(d)


# ---------------------------------------------------------------- restic

class Restic:
    name = "restic"
    label = "restic"

    def run(self, c, i, wl, tgt, A, nexts):
        d = tgt.dir(self.name)
        repo = os.path.join(d, "repo")
        env = {"RESTIC_PASSWORD": RESTIC_PASSWORD, "RESTIC_CACHE_DIR": os.path.join(d, "cache")}
        R = lambda r, *a: ["restic", "-r", r] + list(a)
        m = lambda sc, cmd, nb, **kw: c.measure(self.name, wl, tgt, sc, i, cmd, nb, env=env, **kw)
        run(R(repo, "init"), c.wd, env=env)  # outside timing

        r, s = m("cold", R(repo, "backup", "--quiet", A), wl.bytes)
        s["stored_bytes"] = du_sb(repo)
        # A second backup of an unchanged path takes restic's parent-
        # snapshot shortcut (size/mtime/inode unchanged: not read at all),
        # recorded as "warm-shortcut"; "warm" re-reads and re-chunks
        # (--force), as a push of a new checkpoint must.
        if tgt.wants("warm-shortcut"):
            m("warm-shortcut", R(repo, "backup", "--quiet", A), wl.bytes)
        if tgt.wants("warm"):
            m("warm", R(repo, "backup", "--quiet", "--force", A), wl.bytes)
        target = os.path.join(d, "restore")
        restored = os.path.join(target, os.path.abspath(A).lstrip("/"))

        def pull(sc, cache=None):
            r, s = m(sc, R(repo, "restore", "latest", "--path", os.path.abspath(A),
                           "--target", target), wl.bytes, cache=cache)
            c.check_restore(i, A, restored, s)
            rm(target)
        pull("pull")
        if tgt.wants("verify"):
            m("verify", R(repo, "check", "--read-data", "--quiet"), wl.bytes)
        for n in nexts:
            before = du_sb(repo)
            r, s = m(n.tag, R(repo, "backup", "--quiet", n.path), n.bytes)
            up = du_sb(repo) - before
            s.update(changed_bytes=n.changed_bytes, uploaded_bytes=up,
                     ratio=up / n.changed_bytes if n.changed_bytes else None)
        if tgt.dropped:
            _drop(tgt)
            pull("pull-dropped", cache="dropped")
            repo2 = os.path.join(d, "repo2")
            run(R(repo2, "init"), c.wd, env=env)
            _drop(tgt)
            m("cold-dropped", R(repo2, "backup", "--quiet", A), wl.bytes, cache="dropped")
        rm(d)


# ---------------------------------------------------------------- casync

class Casync:
    name = "casync"
    label = "casync"

    def run(self, c, i, wl, tgt, A, nexts):
        d = tgt.dir(self.name)
        store = os.path.join(d, "store")
        ext = ".caidx" if os.path.isdir(A) else ".caibx"
        idx = lambda n: os.path.join(d, n + ext)
        m = lambda sc, cmd, nb, **kw: c.measure(self.name, wl, tgt, sc, i, cmd, nb, **kw)
        make = lambda st, name, src: ["casync", "make", "--store=" + st, idx(name), src]

        r, s = m("cold", make(store, "a", A), wl.bytes)
        s.update(stored_bytes=du_sb(store), index_bytes=os.path.getsize(idx("a")))
        if tgt.wants("warm"):
            m("warm", make(store, "a-warm", A), wl.bytes)
        dest = os.path.join(d, "restore")

        def pull(sc, cache=None):
            r, s = m(sc, ["casync", "extract", "--store=" + store, idx("a"), dest], wl.bytes,
                     cache=cache)
            c.check_restore(i, A, dest, s)
            rm(dest)
        pull("pull")
        for n in nexts:
            before = du_sb(store)
            r, s = m(n.tag, make(store, "b-" + n.tag, n.path), n.bytes)
            up = du_sb(store) - before + os.path.getsize(idx("b-" + n.tag))
            s.update(changed_bytes=n.changed_bytes, uploaded_bytes=up,
                     ratio=up / n.changed_bytes if n.changed_bytes else None)
        if tgt.dropped:
            _drop(tgt)
            pull("pull-dropped", cache="dropped")
            st2 = os.path.join(d, "store2")
            _drop(tgt)
            m("cold-dropped", make(st2, "a2", A), wl.bytes, cache="dropped")
        rm(d)


# ---------------------------------------------------------------- S3 copy tools

class S3Copy:
    """aws s3 cp / rclone copyto: the raw image up and down, nothing else.
    A next checkpoint is uploaded whole."""

    def __init__(self, name, exe):
        self.name, self.exe = name, exe
        self.label = {"aws": "aws s3 cp", "rclone": "rclone copyto"}[name]

    def up_down(self, c, src, key, dest):
        b = c.bucket
        if self.name == "aws":
            aws = [self.exe, "--endpoint-url", c.srv.url, "--region", "us-east-1", "s3", "cp",
                   "--only-show-errors"]
            rec = ["--recursive"] if os.path.isdir(src) else []
            return (aws + rec + [src, "s3://%s/%s" % (b, key)],
                    aws + rec + ["s3://%s/%s" % (b, key), dest])
        verb = "copy" if os.path.isdir(src) else "copyto"
        return ([self.exe, verb, src, "S3R:%s/%s" % (b, key)],
                [self.exe, verb, "S3R:%s/%s" % (b, key), dest])

    def run(self, c, i, wl, tgt, A, nexts):
        assert tgt.name == "s3"
        gib = lambda nb: nb / (1 << 30)
        dest = os.path.join(c.wd, "s3-%s-restore" % self.name)
        key = "raw/%s-a" % self.name
        up, down = self.up_down(c, A, key, dest)
        r, s = c.measure(self.name, wl, tgt, "cold", i, up, wl.bytes, uploaded_bytes=wl.bytes)
        s["s3rver_requests_per_gib"] = s["s3rver_requests"] / gib(wl.bytes)
        # A next checkpoint is uploaded whole, whatever changed: one is
        # enough to show it (the others would cost as much again).
        for n in nexts[:1]:
            k = "raw/%s-%s" % (self.name, n.tag)
            u, _ = self.up_down(c, n.path, k, dest)
            r, s = c.measure(self.name, wl, tgt, n.tag, i, u, n.bytes, uploaded_bytes=n.bytes,
                             changed_bytes=n.changed_bytes,
                             ratio=n.bytes / n.changed_bytes if n.changed_bytes else None)
            c.srv.delete_prefix(c.bucket, k)  # keeps tmpfs use down; outside timing
        try:
            r, s = c.measure(self.name, wl, tgt, "pull", i, down, wl.bytes,
                             downloaded_bytes=wl.bytes)
            c.check_restore(i, A, dest, s)
        finally:
            rm(dest)
            c.srv.delete_prefix(c.bucket, key)
