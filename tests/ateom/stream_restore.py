#!/usr/bin/python3
"""Restore while pulling (ateom/fusefile.h), end to end through gRPC with a
real gVisor sandbox, work dir and store on local disk.

Usage: stream_restore.py ATEOM [--mb N]

  - RestoreWorkload starts runsc before the pull ended (the log's phases:
    runsc began at stream_start, the pull ran longer than that), the
    counter, boot id and data survive, and no FUSE mount is left;
  - the image is kept in memory by default, and with --restore-memory 0
    in an unlinked file, which restores the same;
  - ateom killed (SIGKILL) while runsc reads the image: its guard
    unmounts the file system, so no mount is left behind;
  - a chunk damaged in the store fails the restore with INTERNAL naming
    the chunk, and leaves no sandbox, no mount and nothing in the work dir.

Exit 0 pass, 1 fail, 77 skip (as tests/ateom/e2e.py).
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import e2e  # noqa: E402
from e2e import check, failures, skip  # noqa: E402

ACTOR = f"actor-sr-{os.getpid()}"


def fuse_mounts(under):
    """Mount points of our file system below a directory."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            sep = parts.index("-")
            if parts[sep + 1].startswith("fuse") and parts[4].startswith(under + "/"):
                out.append(parts[4])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ateom")
    ap.add_argument("--mb", type=int, default=int(os.environ.get("ATEOM_TEST_MB", "48")))
    a = ap.parse_args()
    runsc, busybox = e2e.preflight()
    if not os.path.exists("/dev/fuse"):
        skip("no /dev/fuse")
    # Local disk, as the targets say (not tmpfs).
    base = os.environ.get("ATEOM_TEST_DIR") or "/var/tmp"
    tmp = tempfile.mkdtemp(prefix="ateom-sr-", dir=base)
    root = os.path.join(tmp, "runsc-root")
    rs = [runsc, f"--root={root}"] + e2e.RUNSC_FLAGS
    server = None
    try:
        gen = os.path.join(tmp, "py")
        os.makedirs(gen)
        subprocess.run(["protoc", f"--proto_path={e2e.PROTO_DIR}", f"--python_out={gen}",
                        "ateom.proto", "health.proto"], check=True)
        sys.path.insert(0, gen)
        import ateom_pb2 as A
        import health_pb2 as H
        bundles = os.path.join(tmp, "bundles")
        e2e.make_bundle(os.path.join(bundles, "ns1", "counter", "main"), busybox, runsc,
                        ["/bin/sh", "-c", e2e.WORKLOAD], env=[f"MB={a.mb}"], tmpfs_mb=a.mb)
        work = os.path.join(tmp, "work")
        store = os.path.join(tmp, "store")
        sock = os.path.join(tmp, "ateom.sock")
        log_path = os.path.join(tmp, "ateom.log")
        # Without the node cache: it keeps the blocks the checkpoint wrote
        # through, so a pack damaged in the store would never be read
        # (the cache has its own tests: cache.sh, e2e.py).
        cmd = [a.ateom, "--listen", f"unix:{sock}", "--bundle-root", bundles, "--work-dir", work,
               "--runsc", runsc, f"--runsc-arg=--root={root}", "--no-cache"] + \
              [f"--runsc-arg={x}" for x in e2e.RUNSC_FLAGS]
        log_f = open(log_path, "a")

        def start(extra=()):
            if os.path.exists(sock):
                os.unlink(sock)
            s = subprocess.Popen(cmd + list(extra), stdout=log_f, stderr=subprocess.STDOUT)
            for _ in range(200):
                if os.path.exists(sock):
                    break
                time.sleep(0.05)
            return s

        def log_lines():
            with open(log_path) as f:
                return [json.loads(x) for x in f if x.startswith("{")]

        def sandboxes():
            p = subprocess.run(rs + ["list", "-quiet"], capture_output=True, text=True)
            return [x for x in p.stdout.split() if x]

        def sh(cid, *argv):
            p = subprocess.run(rs + ["exec", cid] + list(argv), capture_output=True, text=True,
                               timeout=60)
            return p.stdout.strip() if p.returncode == 0 else None

        def counter(cid):
            v = sh(cid, "/bin/cat", "/data/counter")
            return int(v) if v and v.isdigit() else None

        server = start()
        rpc = e2e.Rpc(f"unix:{sock}", A, H)
        RUN, CKPT, REST = e2e.RUN, e2e.CKPT, e2e.REST
        spec = A.WorkloadSpec(containers=[A.Container(name="main")])
        ident = dict(actor_template_namespace="ns1", actor_template_name="counter",
                     actor_id=ACTOR)
        snap1 = os.path.join(store, ACTOR, "snap-1")

        code, msg = rpc.code(RUN, A.RunWorkloadRequest(**ident, spec=spec))
        check(code == "OK", f"run: {code} {msg}")
        deadline = time.time() + 120
        while time.time() < deadline and counter(ACTOR) is None:
            time.sleep(0.2)
        boot = sh(ACTOR, "/bin/cat", "/data/boot")
        digest = (sh(ACTOR, "/bin/sha256sum", "/data/blob") or "").split()[0:1]
        c0 = counter(ACTOR)
        code, msg = rpc.code(CKPT, A.CheckpointWorkloadRequest(**ident, spec=spec,
                                                               snapshot_uri_prefix=snap1))
        check(code == "OK", f"checkpoint to {snap1}: {code} {msg}")

        # --- restore while pulling ---
        code, msg = rpc.code(REST, A.RestoreWorkloadRequest(**ident, spec=spec,
                                                            snapshot_uri_prefix=snap1))
        check(code == "OK", f"restore: {code} {msg}")
        line = log_lines()[-1]
        ph = line.get("phases", {})
        print(f"     log: {json.dumps(line)}")
        check(line.get("restore_spool") == "memory",
              f"a {a.mb} MiB image is kept in memory by default: {line.get('restore_spool')}")
        # runsc started once stream_start (and the previous delete) was done;
        # the pull went on for longer: the two overlapped.
        started = ph.get("stream_start", 1e9) + ph.get("previous_delete", 0)
        check("stream_start" in ph and ph.get("pull", 0) > started,
              f"runsc restore started {started:.0f} ms in, before the pull ended "
              f"({ph.get('pull', 0):.0f} ms)")

        def restored_then_checkpoint(what, c_before, snap_next):
            """The restored sandbox is the checkpointed one (its counter
            went on, same boot id and data), nothing stays mounted; then
            checkpoint it to snap_next. Returns the counter read."""
            c = counter(ACTOR)
            check(c is not None and c_before is not None and c >= c_before,
                  f"{what}: counter continues: {c_before} at the checkpoint, {c} now")
            check(sh(ACTOR, "/bin/cat", "/data/boot") == boot,
                  f"{what}: same boot id: not a restart")
            check((sh(ACTOR, "/bin/sha256sum", "/data/blob") or "").split()[0:1] == digest,
                  f"{what}: {a.mb} MiB of tmpfs data unchanged")
            check(fuse_mounts(work) == [], f"{what}: no FUSE mount left")
            code, msg = rpc.code(CKPT, A.CheckpointWorkloadRequest(
                **ident, spec=spec, snapshot_uri_prefix=os.path.join(store, ACTOR, snap_next)))
            check(code == "OK", f"{what}: checkpoint of the restored sandbox: {code} {msg}")
            return c

        c1 = restored_then_checkpoint("restore", c0, "snap-2")

        # --- ateom killed while runsc reads the image ---
        result = {}

        def restore_bg():
            result["r"] = rpc.code(REST, A.RestoreWorkloadRequest(**ident, spec=spec,
                                                                  snapshot_uri_prefix=snap1))
        th = threading.Thread(target=restore_bg)
        th.start()
        deadline = time.time() + 30
        while time.time() < deadline and not fuse_mounts(work):
            time.sleep(0.005)
        mounted = fuse_mounts(work)
        check(mounted != [], f"the restore mounted its file system: {mounted}")
        server.send_signal(signal.SIGKILL)
        server.wait()
        th.join(60)
        deadline = time.time() + 10
        while time.time() < deadline and fuse_mounts(work):
            time.sleep(0.05)
        check(fuse_mounts(work) == [], f"ateom killed mid-restore: no mount left "
              f"({fuse_mounts(work)}; the call got {result.get('r')})")
        for cid in sandboxes():
            subprocess.run(rs + ["delete", "-force", cid], capture_output=True)
        # From here on the image is kept in an unlinked file in the work
        # dir, as for an image too large for memory.
        server = start(["--restore-memory", "0"])
        rpc = e2e.Rpc(f"unix:{sock}", A, H)

        # --- restore while pulling through a file ---
        snap2 = os.path.join(store, ACTOR, "snap-2")
        code, msg = rpc.code(REST, A.RestoreWorkloadRequest(**ident, spec=spec,
                                                            snapshot_uri_prefix=snap2))
        check(code == "OK", f"restore of snap-2 through a file: {code} {msg}")
        line = log_lines()[-1]
        check(line.get("restore_spool") == "file",
              f"--restore-memory 0 keeps the image in a file: {line.get('restore_spool')}")
        restored_then_checkpoint("restore of snap-2 through a file", c1, "snap-3")

        # --- a damaged chunk fails the restore ---
        # (the killed server's sandbox directory stays for an operator)
        left_before = e2e.work_left(work)
        packs = []
        for d, _, files in os.walk(store):
            if os.sep + "packs" in d:
                packs += [os.path.join(d, f) for f in files]
        packs.sort(key=os.path.getsize)
        victim = packs[-1]
        size = os.path.getsize(victim)
        with open(victim, "r+b") as f:
            f.seek(size // 2)
            b = f.read(64)
            f.seek(size // 2)
            f.write(bytes(x ^ 0x5A for x in b))
        code, msg = rpc.code(REST, A.RestoreWorkloadRequest(**ident, spec=spec,
                                                            snapshot_uri_prefix=snap1))
        check(code == "INTERNAL" and "chunk " in msg and "stopped" in msg,
              f"a damaged chunk fails the restore: {code} ({msg[:400]})")
        print(f"     log: {json.dumps(log_lines()[-1])}")
        check(sandboxes() == [], f"no sandbox left: {sandboxes()}")
        check(fuse_mounts(work) == [], "no FUSE mount left")
        check(e2e.work_left(work) == left_before,
              f"nothing left in the work dir: {e2e.work_left(work)} (before: {left_before})")
        code, _ = rpc.code(CKPT, A.CheckpointWorkloadRequest(**ident, spec=spec,
                                                             snapshot_uri_prefix=snap1 + "x"))
        check(code == "FAILED_PRECONDITION", f"and the state is available ({code})")
    finally:
        if server and server.poll() is None:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(60)
            except subprocess.TimeoutExpired:
                server.kill()
        for cid in (subprocess.run(rs + ["list", "-quiet"], capture_output=True,
                                   text=True).stdout.split()):
            subprocess.run(rs + ["delete", "-force", cid], capture_output=True)
        for m in fuse_mounts(tmp):
            subprocess.run(["umount", "-l", m])
        subprocess.run(["rm", "-rf", tmp])
    print("PASSED" if not failures else f"FAILED: {len(failures)} failure(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
