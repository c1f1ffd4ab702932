"""The Ateom round trip against runsc alone, on a real gVisor sandbox.

The sandbox is tests/ateom/e2e.py's: a static busybox bundle (its
make_bundle) whose workload fills a tmpfs with MB MiB of random data and
counts. Each target (a directory: on local disk, the issue's realistic
case, and on tmpfs) holds the servers' work directories, the stores and
runsc's images. Per run and target:

  ateom:   a new ateom server (defaults: follow mode, restore while
           pulling) and sandbox (RunWorkload, untimed), then
           CheckpointWorkload into a snapshot in a fresh local store
           ("checkpoint") and RestoreWorkload from it ("restore"), each
           timed from the client's side (the gRPC call's wall time); then
           a second checkpoint of the restored sandbox into the same store
           ("checkpoint-2": the bytes it stores against the first's) and a
           RestoreWorkload of it whose runsc_path reports another runsc
           version, so that the server fetches the checkpoint's own runsc
           from the store first ("restore-fetch"; its runsc cache is
           emptied before);
  fetch:   `snapstream pull` of that runsc binary's snapshot out of the
           same store, then `sha256sum` of it, alone ("fetch-alone": what
           the server does for restore-fetch before runsc starts, so what
           restore-fetch may cost on top of a restore);
  ateom-nostream: the same first checkpoint and restore through a server
           run with --no-stream-restore (the image pulled whole before
           runsc restore starts), alternating with the above;
  runsc:   `runsc run --detach`, then `runsc checkpoint --image-path` and
           `runsc restore --image-path` alone, timed the same way; then
           `snapstream push --inflate-gvisor` of that image into a fresh
           store (push-after: the push ateom makes, when it does not
           overlap the checkpoint);
  spin:    `runsc checkpoint` alone again, beside one busy thread at
           SCHED_IDLE that touches no memory (runsc-idle-spin: how much
           the checkpoint slows for any concurrent work on this machine).

All of one run happens within a minute or two, so that the per-run
ratios compare calls made under about the same load.

Besides the wall time each call records the machine's busy CPU seconds
meanwhile (/proc/stat) and, where cgroup v1's cpuacct controller is
mounted (it is on the development VM), the calls' own CPU: the server runs
in a cpuacct group of its own (ateom, the engine's threads and every runsc
command it starts), and the sandbox in the one runsc makes for it, named
after the container id, which is polled during the call. Own CPU is what
the checkpoint costs whatever else runs; the machine's CPU minus it is the
other processes' share (`others_frac`, of all cores over the call). For
ateom also the phase timings and bytes the server logs for the call.

Needs root, runsc, a static busybox, protoc and python3-grpcio (as the
e2e test); raises Skipped otherwise.

Python 3 standard library (plus grpcio, as the e2e test)."""

import ctypes
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time

from common import CommandFailed, Skipped, log, logical_bytes, rm
from workloads import _e2e, runsc_preflight

PR_SET_CHILD_SUBREAPER = 36
CPUACCT = "/sys/fs/cgroup/cpuacct"


def machine_cpu_s():
    """CPU seconds the whole machine has spent busy (all cores, from
    /proc/stat): the work of one call happens in the sandbox, runsc, the
    server and the engine's threads, so the harness counts all of it."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = sum(v[:8]) - v[3] - v[4]   # everything but idle and iowait
    return busy / os.sysconf("SC_CLK_TCK")


def load1():
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def cg_usage(path):
    """CPU seconds of a cpuacct group, or None when it does not exist."""
    try:
        with open(os.path.join(path, "cpuacct.usage")) as f:
            return int(f.read()) / 1e9
    except (OSError, ValueError):
        return None


class SandboxCpu:
    """The CPU seconds spent in a sandbox's cpuacct group (runsc makes one
    per sandbox, named after its container id) during a call, polled every
    10 ms: the group goes when the sandbox is deleted, and a restore makes
    a new one of the same name, so the increments are summed as seen (a
    group that appears counts from zero). None without cgroup v1's
    cpuacct."""

    def __init__(self, cid):
        self.path = os.path.join(CPUACCT, cid)
        self.ok = os.path.exists(os.path.join(CPUACCT, "cpuacct.usage"))
        self.prev = cg_usage(self.path) if self.ok else None
        self.acc = 0.0
        self.stop = False
        self.th = threading.Thread(target=self.poll, daemon=True)
        if self.ok:
            self.th.start()

    def sample(self):
        v = cg_usage(self.path)
        if v is not None:
            self.acc += v if self.prev is None or v < self.prev else v - self.prev
        self.prev = v

    def poll(self):
        while not self.stop:
            self.sample()
            time.sleep(0.01)

    def done(self):
        if not self.ok:
            return None
        self.stop = True
        self.th.join()
        self.sample()
        return round(self.acc, 3)


def server_lines(log_path, rpc):
    """Every successful `rpc` line the server logged, in order: the JSON
    line ateom writes per call (docs/ATEOM.md)."""
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
                    out.append(j)
    except OSError:
        pass
    return out


def server_phases(log_path, rpc):
    """The phase timings (ms) of every successful `rpc` line."""
    return [j.get("phases", {}) for j in server_lines(log_path, rpc)]


def reaping_run(argv):
    """Run argv to its end with the harness as the subreaper of what it
    leaves behind, reaping every orphan the moment it exits. Returns the
    CPU seconds of argv itself (and the children it waited for).

    `runsc checkpoint` and `runsc delete` wait (polling every 100 ms) until
    the sandbox's processes are gone, zombies included, so their times
    depend on how soon the sandbox's reaper reaps. ateom is its sandboxes'
    subreaper and reaps at once (ateom/reaper.h); on an ordinary host so
    is init. runsc alone is timed the same way here, not behind an init
    that reaps late (as in this VM, where that added ~0.3 s to every
    checkpoint), so the ratio measures ateom's own cost."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        pid, status, ru = os.wait4(-1, 0)
        if pid == p.pid:
            rc = os.waitstatus_to_exitcode(status)
            p.returncode = rc
            if rc != 0:
                raise CommandFailed("%s exited %d" % (" ".join(argv[:4]), rc))
            return ru.ru_utime + ru.ru_stime


PROTO_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ateom")


def roundtrip(ateom, targets, mb, runs, record, snapstream=None):
    """targets: [(name, directory)], each emptied and used in turn.
    record(target, tool, scenario, run, wall_s, **extra) for every timed
    call; with snapstream (the CLI), also the push of runsc's image after
    it and the fetch of the runsc binary alone."""
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
    for name, d in targets:
        try:
            _target(ateom, name, d, mb, runs, record, snapstream, runsc, busybox)
        finally:
            rm(os.path.join(d, "ateom"))


def _target(ateom, tname, wd, mb, runs, record, snapstream, runsc, busybox):
    e2e = _e2e()
    tmp = os.path.join(wd, "ateom")
    rm(tmp)
    os.makedirs(tmp)
    root = os.path.join(tmp, "runsc-root")
    rs = [runsc, "--root=" + root] + e2e.RUNSC_FLAGS
    servers = []
    actor = "ssbench-actor-%d" % os.getpid()
    ncpu = len(os.sched_getaffinity(0))
    cg = None
    if cg_usage(CPUACCT) is not None:
        cg = os.path.join(CPUACCT, "ssbench-ateom-%d" % os.getpid())
        try:
            os.makedirs(cg, exist_ok=True)
        except OSError:
            cg = None
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
        sock = os.path.join(tmp, "ateom.sock")
        other = os.path.join(tmp, "runsc-other-version")
        with open(other, "w") as f:
            f.write('#!/bin/sh\n[ "$1" = --version ] && { echo "runsc version 0.0~19990101.0"; '
                    'exit 0; }\nexec %s "$@"\n' % runsc)
        os.chmod(other, 0o755)
        log_f = open(os.path.join(tmp, "ateom.log"), "w")

        def into_cg():
            if cg:
                with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))

        def start(work, extra):
            rm(sock)
            cmd = [ateom, "--listen", "unix:" + sock, "--bundle-root", bundles, "--work-dir",
                   work, "--runsc", runsc, "--runsc-arg=--root=" + root] + \
                  ["--runsc-arg=" + x for x in e2e.RUNSC_FLAGS] + extra
            srv = subprocess.Popen(cmd, stdout=log_f, stderr=subprocess.STDOUT,
                                   preexec_fn=into_cg)
            servers.append(srv)
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
            servers.remove(srv)
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

        def load_extra(wall, mcpu, own, l1):
            x = dict(machine_cpu_s=round(mcpu, 3), load1=l1)
            if own is not None:
                x["own_cpu_s"] = round(own, 3)
                x["others_frac"] = round(max(0.0, mcpu - own) / (ncpu * wall), 3)
            return x

        def call(rpc, method, req):
            sb = SandboxCpu(actor)
            l1, g, c, t = load1(), cg_usage(cg) if cg else None, machine_cpu_s(), time.perf_counter()
            code, msg = rpc.code("/ateom.Ateom/" + method, req)
            wall, cpu = time.perf_counter() - t, machine_cpu_s() - c
            srv_cpu = cg_usage(cg) - g if cg else None
            sb_cpu = sb.done()
            if code != "OK":
                raise CommandFailed("ateom %s: %s %s" % (method, code, msg[:300]))
            log_f.flush()
            lines = server_lines(log_f.name, method)
            j = lines[-1] if lines else {}
            own = srv_cpu + sb_cpu if srv_cpu is not None and sb_cpu is not None else None
            x = load_extra(wall, cpu, own, l1)
            if srv_cpu is not None:
                x["server_cpu_s"] = round(srv_cpu, 3)
            if sb_cpu is not None:
                x["sandbox_cpu_s"] = round(sb_cpu, 3)
            x["phases_ms"] = j.get("phases", {})
            if "new_stored" in j.get("bytes", {}):
                x["stored_bytes"] = j["bytes"]["new_stored"]
                x["logical_bytes"] = j["bytes"].get("logical")
            return wall, x

        def rec(tool, sc, i, wall, x):
            record(tname, tool, sc, i, wall, **x)

        def ateom_cycle(i):
            """The default server: checkpoint, restore, checkpoint again,
            restore with the checkpoint's own runsc fetched."""
            work = os.path.join(tmp, "work")
            server, rpc = start(work, [])
            call(rpc, "RunWorkload", A.RunWorkloadRequest(**ident, spec=spec))
            wait_counter(actor)
            snap = os.path.join(tmp, "store-%d" % i, "snap")
            w, x = call(rpc, "CheckpointWorkload",
                        A.CheckpointWorkloadRequest(**ident, spec=spec, snapshot_uri_prefix=snap))
            rec("ateom", "checkpoint", i, w, x)
            w, x = call(rpc, "RestoreWorkload",
                        A.RestoreWorkloadRequest(**ident, spec=spec, snapshot_uri_prefix=snap))
            rec("ateom", "restore", i, w, x)
            wait_counter(actor)
            w, x = call(rpc, "CheckpointWorkload",
                        A.CheckpointWorkloadRequest(**ident, spec=spec,
                                                    snapshot_uri_prefix=snap + "-2"))
            rec("ateom", "checkpoint-2", i, w, x)
            rm(os.path.join(work, "runsc"))
            w, x = call(rpc, "RestoreWorkload",
                        A.RestoreWorkloadRequest(**ident, spec=spec, runsc_path=other,
                                                 snapshot_uri_prefix=snap + "-2"))
            rec("ateom", "restore-fetch", i, w, x)
            wait_counter(actor)
            stop(server)
            store = os.path.join(os.path.dirname(snap), ".snapstream")
            bins = os.path.join(store, "runsc")
            if snapstream and os.path.isdir(bins) and os.listdir(bins):
                # The runsc binary's snapshot pulled alone and its SHA-256
                # checked, as the server fetches it for restore-fetch.
                out = os.path.join(tmp, "runsc-fetched")
                src = os.path.join(bins, sorted(os.listdir(bins))[0])
                c, t = machine_cpu_s(), time.perf_counter()
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run([snapstream, "pull", src, out, "--store", store], check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                subprocess.run(["sha256sum", out], check=True, stdout=subprocess.DEVNULL)
                w = time.perf_counter() - t
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                own = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
                rec("fetch-alone", "restore", i, w,
                    load_extra(w, machine_cpu_s() - c, own, load1()))
                rm(out)
            rm(os.path.dirname(snap))

        def nostream_cycle(i):
            """A server that pulls the whole image before runsc restore."""
            server, rpc = start(os.path.join(tmp, "work-nostream"), ["--no-stream-restore"])
            call(rpc, "RunWorkload", A.RunWorkloadRequest(**ident, spec=spec))
            wait_counter(actor)
            snap = os.path.join(tmp, "store-ns-%d" % i, "snap")
            w, x = call(rpc, "CheckpointWorkload",
                        A.CheckpointWorkloadRequest(**ident, spec=spec, snapshot_uri_prefix=snap))
            rec("ateom-nostream", "checkpoint", i, w, x)
            w, x = call(rpc, "RestoreWorkload",
                        A.RestoreWorkloadRequest(**ident, spec=spec, snapshot_uri_prefix=snap))
            rec("ateom-nostream", "restore", i, w, x)
            wait_counter(actor)
            stop(server)
            rm(os.path.dirname(snap))

        if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise Skipped("cannot become a subreaper to time runsc alone as ateom runs it")

        def timed(argv, cid):
            """(wall s, extra) of one reaped command on sandbox cid."""
            sb = SandboxCpu(cid)
            l1, c, t = load1(), machine_cpu_s(), time.perf_counter()
            cli = reaping_run(argv)
            wall, cpu = time.perf_counter() - t, machine_cpu_s() - c
            sb_cpu = sb.done()
            x = load_extra(wall, cpu, cli + sb_cpu if sb_cpu is not None else None, l1)
            if sb_cpu is not None:
                x["sandbox_cpu_s"] = sb_cpu
            return wall, x

        def sandbox(cid, img):
            """A counting sandbox cid and an empty image directory img."""
            os.makedirs(img)
            reaping_run(rs + ["run", "--detach", "--bundle", bundle, cid])
            wait_counter(cid)

        def runsc_alone(i):
            cid = "ssbench-runsc-%d-%d" % (os.getpid(), i)
            img = os.path.join(tmp, "img-%d" % i)
            sandbox(cid, img)
            w, x = timed(rs + ["checkpoint", "--image-path", img, cid], cid)
            rec("runsc", "checkpoint", i, w, dict(x, image_bytes=logical_bytes(img)))
            reaping_run(rs + ["delete", "-force", cid])
            w, x = timed(rs + ["restore", "--detach", "--image-path", img, "--bundle", bundle, cid],
                         cid)
            rec("runsc", "restore", i, w, x)
            reaping_run(rs + ["delete", "-force", cid])
            if snapstream:
                # The push alone, after the checkpoint rather than beside
                # it: what a no-overlap CheckpointWorkload would add.
                store = os.path.join(tmp, "seq-store-%d" % i)
                w, x = timed([snapstream, "push", "--inflate-gvisor", img,
                              os.path.join(store, "snap")], cid)
                x.pop("sandbox_cpu_s", None)
                rec("push-after", "checkpoint", i, w, x)
                rm(store)
            rm(img)

        def spin_reference(i):
            """How much runsc checkpoint suffers from any other work on the
            machine: one busy thread at SCHED_IDLE, the lowest priority
            there is, touching no memory. On a machine whose cores runsc
            checkpoint already keeps busy this is the cost any upload
            beside it pays."""
            cid = "ssbench-spin-%d-%d" % (os.getpid(), i)
            img = os.path.join(tmp, "img-spin-%d" % i)
            sandbox(cid, img)
            spin = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                    preexec_fn=lambda: os.sched_setscheduler(
                                        0, os.SCHED_IDLE, os.sched_param(0)))
            try:
                time.sleep(0.2)
                w, x = timed(rs + ["checkpoint", "--image-path", img, cid], cid)
                rec("runsc-idle-spin", "checkpoint", i, w, x)
            finally:
                spin.kill()
                spin.wait()
            reaping_run(rs + ["delete", "-force", cid])
            rm(img)

        # Every run: new servers and sandboxes, so every first checkpoint
        # is a first one, as with runsc alone; runsc alone runs in the same
        # run, right after, so that a ratio compares calls a minute apart
        # on a machine whose load drifts; the two restore modes alternate
        # in order, so a drift does not favour one.
        for i in range(runs):
            log("ateom %s run %d/%d" % (tname, i + 1, runs))
            for f in ((ateom_cycle, nostream_cycle) if i % 2 == 0 else
                      (nostream_cycle, ateom_cycle)):
                f(i)
            runsc_alone(i)
            spin_reference(i)
    finally:
        # Stop being a subreaper; reap what is left.
        ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        for server in servers:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=120)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        out = subprocess.run(rs + ["list", "-quiet"], capture_output=True, text=True).stdout
        for cid in out.split():
            subprocess.run(rs + ["delete", "-force", cid], capture_output=True)
        if cg:
            try:
                os.rmdir(cg)
            except OSError:
                pass
        rm(tmp)
