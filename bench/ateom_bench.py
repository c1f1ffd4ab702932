"""The Ateom round trip against runsc alone, on a real gVisor sandbox.

The sandbox is tests/ateom/e2e.py's: a static busybox bundle (its
make_bundle) whose workload fills a tmpfs with MB MiB of random data and
counts. Per run:

  ateom:  a new ateom server and sandbox (RunWorkload, untimed), then
          CheckpointWorkload into a snapshot in a fresh local store and
          RestoreWorkload from it, each timed from the client's side (the
          gRPC call's wall time: runsc checkpoint plus the push, runsc
          restore plus the pull); then a second checkpoint and a
          RestoreWorkload whose runsc_path reports another runsc version,
          so that the server fetches the checkpoint's own runsc from the
          store first (restore-fetch; its runsc cache is emptied before);
  runsc:  `runsc run --detach`, then `runsc checkpoint --image-path` and
          `runsc restore --image-path` alone, timed the same way; then
          `snapstream push` of that image into a fresh store (push-after:
          what the push costs when it does not overlap the checkpoint);
  spin:   `runsc checkpoint` alone again, beside one busy thread at
          SCHED_IDLE that touches no memory (runsc-idle-spin: how much
          the checkpoint slows for any concurrent work on this machine).

The work directory and stores are on tmpfs. Besides the wall time, each
call records the machine's busy CPU seconds meanwhile (/proc/stat: the work
happens in the sandbox, runsc, the ateom server and the engine's threads,
not in one child the harness could take rusage from) and, for ateom, the
phase timings the server logs for it (runsc checkpoint, the push's tail,
the pull, runsc restore), so a report shows where the time goes.

Needs root, runsc, a static busybox, protoc and python3-grpcio (as the
e2e test); raises Skipped otherwise.

Python 3 standard library (plus grpcio, as the e2e test)."""

import ctypes
import json
import os
import signal
import subprocess
import sys
import time

from common import CommandFailed, Skipped, log, logical_bytes, rm
from workloads import _e2e, runsc_preflight

PR_SET_CHILD_SUBREAPER = 36


def machine_cpu_s():
    """CPU seconds the whole machine has spent busy (all cores, from
    /proc/stat): the work of one call happens in the sandbox, runsc, the
    server and the engine's threads, so the harness counts all of it."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = sum(v[:8]) - v[3] - v[4]   # everything but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def server_phases(log_path, rpc):
    """The phase timings (ms) of every successful `rpc` line the server
    logged, in order: the JSON line ateom writes per call (docs/ATEOM.md)."""
    out = []
    try:
        with open(log_path) as f:
            for line in f:
                if not line.startswith("{"):
                    continue
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                if j.get("rpc") == rpc and j.get("code") == "OK":
                    out.append(j.get("phases", {}))
    except OSError:
        pass
    return out


def reaping_run(argv):
    """Run argv to its end with the harness as the subreaper of what it
    leaves behind, reaping every orphan the moment it exits.

    `runsc checkpoint` and `runsc delete` wait (polling every 100 ms) until
    the sandbox's processes are gone, zombies included, so their times
    depend on how soon the sandbox's reaper reaps. ateom is its sandboxes'
    subreaper and reaps at once (ateom/reaper.h); on an ordinary host so
    is init. runsc alone is timed the same way here, not behind an init
    that reaps late (as in this VM, where that added ~0.3 s to every
    checkpoint), so the ratio measures ateom's own cost."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == p.pid:
            rc = os.waitstatus_to_exitcode(status)
            p.returncode = rc
            if rc != 0:
                raise CommandFailed("%s exited %d" % (" ".join(argv[:4]), rc))
            return


PROTO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ateom")


def roundtrip(ateom, wd, mb, runs, record, snapstream=None):
    """record(tool, scenario, run, wall_s, **extra) for every timed call;
    with snapstream (the CLI), also the push of runsc's image after it."""
    runsc, busybox = runsc_preflight()
    if not ateom or not os.access(ateom, os.X_OK):
        raise Skipped("ateom is not built (build/ateom/ateom)")
    if not __import__("shutil").which("protoc"):
        raise Skipped("protoc is not installed (Debian package protobuf-compiler)")
    try:
        import grpc  # noqa: F401
        import google.protobuf  # noqa: F401
    except ImportError as e:
        raise Skipped("python3-grpcio / python3-protobuf missing (run with /usr/bin/python3): %s" % e)
    e2e = _e2e()
    tmp = os.path.join(wd, "ateom")
    rm(tmp)
    os.makedirs(tmp)
    root = os.path.join(tmp, "runsc-root")
    rs = [runsc, "--root=" + root] + e2e.RUNSC_FLAGS
    server = None
    actor = "ssbench-actor-%d" % os.getpid()
    try:
        gen = os.path.join(tmp, "py")
        os.makedirs(gen)
        subprocess.run(["protoc", "--proto_path=" + PROTO_DIR, "--python_out=" + gen,
                        "ateom.proto", "health.proto"], check=True)
        sys.path.insert(0, gen)
        import ateom_pb2 as A
        import health_pb2 as H

        bundles = os.path.join(tmp, "bundles")
        bundle = os.path.join(bundles, "ns1", "counter", "main")
        e2e.make_bundle(bundle, busybox, runsc, ["/bin/sh", "-c", e2e.WORKLOAD],
                        env=["MB=%d" % mb], tmpfs_mb=mb)
        work, sock = os.path.join(tmp, "work"), os.path.join(tmp, "ateom.sock")
        other = os.path.join(tmp, "runsc-other-version")
        with open(other, "w") as f:
            f.write('#!/bin/sh\n[ "$1" = --version ] && { echo "runsc version 0.0~19990101.0"; '
                    'exit 0; }\nexec %s "$@"\n' % runsc)
        os.chmod(other, 0o755)
        log_f = open(os.path.join(tmp, "ateom.log"), "w")
        cmd = [ateom, "--listen", "unix:" + sock, "--bundle-root", bundles, "--work-dir", work,
               "--runsc", runsc, "--runsc-arg=--root=" + root] + \
              ["--runsc-arg=" + x for x in e2e.RUNSC_FLAGS]

        def start():
            rm(sock)
            srv = subprocess.Popen(cmd, stdout=log_f, stderr=subprocess.STDOUT)
            for _ in range(200):
                if os.path.exists(sock):
                    break
                time.sleep(0.05)
            rpc = e2e.Rpc("unix:" + sock, A, H)
            # The socket exists from bind(); wait until it answers (a busy
            # machine may take a while between bind and listen).
            for _ in range(100):
                try:
                    rpc.call("/grpc.health.v1.Health/Check", H.HealthCheckRequest(),
                             H.HealthCheckResponse, timeout=5)
                    break
                except Exception:
                    time.sleep(0.1)
            return srv, rpc

        def stop(srv):
            """SIGTERM: the server deletes the sandbox it runs and exits 0."""
            srv.send_signal(signal.SIGTERM)
            if srv.wait(timeout=120) != 0:
                raise CommandFailed("ateom exited %d after SIGTERM" % srv.returncode)
        spec = A.WorkloadSpec(containers=[A.Container(name="main")])
        ident = dict(actor_template_namespace="ns1", actor_template_name="counter", actor_id=actor)

        def wait_counter(cid):
            end = time.time() + 180
            while time.time() < end:
                p = subprocess.run(rs + ["exec", cid, "/bin/cat", "/data/counter"],
                                   capture_output=True)
                if p.returncode == 0:
                    return
                time.sleep(0.2)
            raise CommandFailed("the sandbox did not start counting")

        def call(rpc, method, req):
            c, t = machine_cpu_s(), time.perf_counter()
            code, msg = rpc.code("/ateom.Ateom/" + method, req)
            wall, cpu = time.perf_counter() - t, machine_cpu_s() - c
            if code != "OK":
                raise CommandFailed("ateom %s: %s %s" % (method, code, msg[:300]))
            log_f.flush()
            ph = server_phases(log_f.name, method)
            return wall, dict(machine_cpu_s=round(cpu, 3), phases_ms=ph[-1] if ph else {})

        # Every run: a new server and sandbox, one RunWorkload (untimed),
        # then CheckpointWorkload into a fresh store and RestoreWorkload
        # from it; the server is stopped after (it deletes the sandbox), so
        # every checkpoint is a first one, as with runsc alone below.
        for i in range(runs):
            log("ateom run %d/%d: ateom" % (i + 1, runs))
            server, rpc = start()
            call(rpc, "RunWorkload", A.RunWorkloadRequest(**ident, spec=spec))
            wait_counter(actor)
            snap = os.path.join(tmp, "store-%d" % i, "snap")
            w, x = call(rpc, "CheckpointWorkload",
                        A.CheckpointWorkloadRequest(**ident, spec=spec, snapshot_uri_prefix=snap))
            record("ateom", "checkpoint", i, w, **x)
            w, x = call(rpc, "RestoreWorkload",
                        A.RestoreWorkloadRequest(**ident, spec=spec, snapshot_uri_prefix=snap))
            record("ateom", "restore", i, w, **x)
            wait_counter(actor)
            call(rpc, "CheckpointWorkload",
                 A.CheckpointWorkloadRequest(**ident, spec=spec, snapshot_uri_prefix=snap + "-2"))
            rm(os.path.join(work, "runsc"))
            w, x = call(rpc, "RestoreWorkload",
                        A.RestoreWorkloadRequest(**ident, spec=spec, runsc_path=other,
                                                 snapshot_uri_prefix=snap + "-2"))
            record("ateom", "restore-fetch", i, w, **x)
            wait_counter(actor)
            stop(server)
            server = None
            rm(os.path.dirname(snap))

        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise Skipped("cannot become a subreaper to time runsc alone as ateom runs it")

        def timed(argv):
            """(wall s, machine CPU s) of one reaped command."""
            c, t = machine_cpu_s(), time.perf_counter()
            reaping_run(argv)
            return time.perf_counter() - t, round(machine_cpu_s() - c, 3)

        def sandbox(cid, img):
            """A counting sandbox cid and an empty image directory img."""
            os.makedirs(img)
            reaping_run(rs + ["run", "--detach", "--bundle", bundle, cid])
            wait_counter(cid)

        for i in range(runs):
            log("ateom run %d/%d: runsc alone" % (i + 1, runs))
            cid = "ssbench-runsc-%d-%d" % (os.getpid(), i)
            img = os.path.join(tmp, "img-%d" % i)
            sandbox(cid, img)
            w, cpu = timed(rs + ["checkpoint", "--image-path", img, cid])
            record("runsc", "checkpoint", i, w, image_bytes=logical_bytes(img), machine_cpu_s=cpu)
            reaping_run(rs + ["delete", "-force", cid])
            w, cpu = timed(rs + ["restore", "--detach", "--image-path", img, "--bundle", bundle, cid])
            record("runsc", "restore", i, w, machine_cpu_s=cpu)
            reaping_run(rs + ["delete", "-force", cid])
            if snapstream:
                # The push alone, after the checkpoint rather than beside
                # it: what a no-overlap CheckpointWorkload would add.
                store = os.path.join(tmp, "seq-store-%d" % i)
                w, cpu = timed([snapstream, "push", img, os.path.join(store, "snap")])
                record("push-after", "checkpoint", i, w, machine_cpu_s=cpu)
                rm(store)
            rm(img)

        # How much runsc checkpoint suffers from any other work on the
        # machine: one busy thread at SCHED_IDLE, the lowest priority there
        # is, touching no memory. On a machine whose cores runsc checkpoint
        # already keeps busy this is the cost any upload beside it pays.
        for i in range(runs):
            log("ateom run %d/%d: runsc alone beside an idle-priority busy thread" % (i + 1, runs))
            cid = "ssbench-spin-%d-%d" % (os.getpid(), i)
            img = os.path.join(tmp, "img-spin-%d" % i)
            sandbox(cid, img)
            spin = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                    preexec_fn=lambda: os.sched_setscheduler(
                                        0, os.SCHED_IDLE, os.sched_param(0)))
            try:
                time.sleep(0.2)
                w, cpu = timed(rs + ["checkpoint", "--image-path", img, cid])
                record("runsc-idle-spin", "checkpoint", i, w, machine_cpu_s=cpu)
            finally:
                spin.kill()
                spin.wait()
            reaping_run(rs + ["delete", "-force", cid])
            rm(img)
    finally:
        # Stop being a subreaper; reap what is left.
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        if server:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=120)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        out = subprocess.run(rs + ["list", "-quiet"], capture_output=True, text=True).stdout
        for cid in out.split():
            subprocess.run(rs + ["delete", "-force", cid], capture_output=True)
        rm(tmp)
