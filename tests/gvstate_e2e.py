#!/usr/bin/python3
"""gVisor state files through the snapstream CLI (push --inflate-gvisor).

Usage: gvstate_e2e.py SNAPSTREAM [--mb N]

1. CLI round trip with a state file made here (Python's zlib, raw DEFLATE
   in 256 KiB chunks, the header's HMAC-SHA256 with the empty key):
   without the flag the file is stored as it is (sha256 of the pulled file
   equals the pushed one's); with it the snapshot is format 5, `info` says
   the file is stored inflated, and pull, `pull -` and cat write the same
   file, whose header is the pushed one byte for byte and whose body
   inflates to the same bytes; verify passes; beside a plain file that
   shares its chunks both are pulled whole; a damaged pack fails the pull
   and leaves nothing behind; a damaged file is stored as it is;
   `push - --inflate-gvisor` is a usage error.
2. With root and runsc (the ptrace platform, no network, as
   tests/ateom/e2e.py runs it): a sandbox with N MiB (default 24) of random
   data in a tmpfs and a running counter is checkpointed, pushed with
   --inflate-gvisor, pulled and restored with runsc; its counter goes on and
   its data is unchanged; the restored sandbox is checkpointed again and
   pushed with the first as --parent, which must store at most 10% of the
   bytes the first stored; that snapshot restores too. Skips (77) without
   root or runsc; under SNAPSTREAM_TEST_STRICT that is a failure.
"""
import argparse
import hashlib
import hmac
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "ateom"))
import e2e  # noqa: E402  (make_bundle, WORKLOAD, RUNSC_FLAGS, strict)

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)
    return cond


def state_file(body, chunk=256 << 10, meta=b'{"k":"v"}', damage=None):
    hdr = b"gVisorSF" + struct.pack(">Q", len(meta)) + meta
    hdr += hmac.new(b"", hdr, hashlib.sha256).digest() + struct.pack(">I", chunk)
    out = bytearray(hdr)
    for i in range(0, len(body), chunk):
        c = zlib.compressobj(1, zlib.DEFLATED, -15)
        z = c.compress(body[i:i + chunk]) + c.flush()
        out += struct.pack(">I", len(z)) + z
    if damage == "trailing":
        out += b"\0"
    return bytes(out)


def parse(data):
    """(header through the chunk size, inflated body), or None."""
    if data[:8] != b"gVisorSF":
        return None
    ml = struct.unpack(">Q", data[8:16])[0]
    hl = 16 + ml + 32 + 4
    body, at = bytearray(), hl
    while at < len(data):
        cl = struct.unpack(">I", data[at:at + 4])[0]
        d = zlib.decompressobj(-15)
        body += d.decompress(data[at + 4:at + 4 + cl])
        if not d.eof or d.unused_data:
            return None
        at += 4 + cl
    return data[:hl], bytes(body)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, **kw)


def cli_roundtrip(ss, tmp):
    body = bytearray()
    for i in range(40):
        body += (os.urandom(4096) if i % 3 == 0 else bytes([i]) * 30000)
    body = bytes(body)
    img = state_file(body)
    src = os.path.join(tmp, "ckpt")
    os.makedirs(src)
    path = os.path.join(src, "checkpoint.img")
    with open(path, "wb") as f:
        f.write(img)
    sha = hashlib.sha256(img).hexdigest()

    # Off by default: what is pulled is what was pushed.
    snap0 = os.path.join(tmp, "snaps", "plain")
    p = run([ss, "push", path, snap0])
    check(p.returncode == 0, f"push without --inflate-gvisor: {p.stderr.decode()[-300:]}")
    p = run([ss, "cat", snap0])
    check(hashlib.sha256(p.stdout).hexdigest() == sha,
          "without the flag the file comes back byte for byte (sha256)")

    snap = os.path.join(tmp, "snaps", "inflated")
    p = run([ss, "push", src, snap, "--inflate-gvisor", "--json"])
    check(p.returncode == 0, f"push --inflate-gvisor: {p.stderr.decode()[-300:]}")
    p = run([ss, "info", snap, "--json"])
    info = json.loads(p.stdout)
    f = info["file_list"][0]
    check(info["format_major"] == 5, f"the snapshot is format 5 ({info['format_major']})")
    check(f.get("stored_as") == "gvisor-inflated" and f.get("pushed_size") == len(img),
          f"info --json: stored inflated, pushed size {f.get('pushed_size')}")
    check(f["size"] == len(parse(img)[0]) + len(body), "its size is the inflated form's")
    p = run([ss, "info", snap])
    check(b"stored inflated" in p.stdout and b"sha256" in p.stdout,
          "info says what is and is not byte for byte")
    check(run([ss, "verify", snap]).returncode == 0, "verify")

    out = os.path.join(tmp, "out")
    p = run([ss, "pull", snap, out])
    check(p.returncode == 0, f"pull: {p.stderr.decode()[-300:]}")
    with open(os.path.join(out, "checkpoint.img"), "rb") as fh:
        pulled = fh.read()
    got = parse(pulled)
    check(got is not None and got[0] == parse(img)[0], "pulled: the header byte for byte")
    check(got is not None and got[1] == body, "pulled: the body inflates to the same bytes")
    check(hashlib.sha256(pulled).hexdigest() != sha,
          "pulled: not the pushed bytes (the body is framed anew)")
    check(os.stat(os.path.join(out, "checkpoint.img")).st_mode & 0o777 ==
          os.stat(path).st_mode & 0o777, "pulled: mode kept")
    p = run([ss, "cat", snap, "checkpoint.img"])
    check(p.returncode == 0 and p.stdout == pulled, "cat writes what pull wrote")

    # A one-file snapshot for pull -.
    snap1 = os.path.join(tmp, "snaps", "one")
    check(run([ss, "push", path, snap1, "--inflate-gvisor"]).returncode == 0, "push one file")
    p = run([ss, "pull", snap1, "-"])
    check(p.returncode == 0 and p.stdout == pulled, "pull - writes what pull wrote")

    # Beside a plain file holding its body (chunks shared between the two):
    # the state file is rebuilt in file order, the other file written at
    # its offsets, and both come back whole.
    mixed = os.path.join(tmp, "mixed")
    os.makedirs(mixed)
    shutil.copy(path, os.path.join(mixed, "checkpoint.img"))
    with open(os.path.join(mixed, "body.raw"), "wb") as fh:
        fh.write(body)
    snapm = os.path.join(tmp, "snaps", "mixed")
    check(run([ss, "push", mixed, snapm, "--inflate-gvisor"]).returncode == 0,
          "push a state file beside its body")
    outm = os.path.join(tmp, "outm")
    p = run([ss, "pull", snapm, outm])
    check(p.returncode == 0, f"pull the two: {p.stderr.decode()[-300:]}")
    for name, want in (("checkpoint.img", pulled), ("body.raw", body)):
        with open(os.path.join(outm, name), "rb") as fh:
            check(fh.read() == want, f"pulled beside each other: {name}")

    # A damaged pack: the pull of the state file fails, naming the damage,
    # and leaves nothing under the destination's name or beside it.
    dst = os.path.join(tmp, "dstore")
    snapd = os.path.join(dst, "s")
    check(run([ss, "push", src, snapd, "--inflate-gvisor"]).returncode == 0,
          "push into a store of its own")
    packs = [os.path.join(d, n) for d, _, ns in os.walk(dst) for n in ns
             if os.sep + "packs" + os.sep in os.path.join(d, n)]
    check(len(packs) == 1, f"one pack ({len(packs)})")
    with open(packs[0], "r+b") as fh:
        fh.seek(64)
        b0 = fh.read(1)
        fh.seek(64)
        fh.write(bytes([b0[0] ^ 0x55]))
    outd = os.path.join(tmp, "outd")
    p = run([ss, "pull", snapd, outd])
    check(p.returncode == 4 and b"checkpoint.img" in p.stderr and b"chunk" in p.stderr,
          f"a damaged chunk fails the pull, exit 4 ({p.returncode}: "
          f"{p.stderr.decode()[-200:]})")
    left = [n for n in os.listdir(tmp) if n.startswith("outd")]
    check(not left, f"nothing left behind: {left}")

    bad = os.path.join(tmp, "bad.img")
    with open(bad, "wb") as fh:
        fh.write(state_file(body, damage="trailing"))
    snapb = os.path.join(tmp, "snaps", "bad")
    check(run([ss, "push", bad, snapb, "--inflate-gvisor"]).returncode == 0, "push a damaged one")
    p = run([ss, "info", snapb, "--json"])
    check("stored_as" not in json.loads(p.stdout)["file_list"][0],
          "a file with a byte after its last chunk is stored as it is")
    with open(bad, "rb") as fh:
        check(run([ss, "cat", snapb]).stdout == fh.read(), "and comes back byte for byte")
    p = subprocess.run([ss, "push", "-", os.path.join(tmp, "snaps", "x"), "--inflate-gvisor"],
                       input=img, capture_output=True)
    check(p.returncode == 2, f"push - --inflate-gvisor is a usage error ({p.returncode})")

    # Past SNAPSTREAM_GVISOR_MEMORY the inflated form moves from memory to
    # an unnamed file in $TMPDIR. Where that cannot be made, the file is
    # pushed as it is; without the bound nothing goes there.
    spill = os.path.join(tmp, "spill")
    os.makedirs(spill)
    nowhere = os.path.join(tmp, "no-such-dir")
    for name, extra, want in (("spilled", {"SNAPSTREAM_GVISOR_MEMORY": "64K", "TMPDIR": spill},
                               True),
                              ("nospill", {"SNAPSTREAM_GVISOR_MEMORY": "64K", "TMPDIR": nowhere},
                               False),
                              ("inmem", {"TMPDIR": nowhere}, True)):
        snaps = os.path.join(tmp, "snaps", name)
        p = run([ss, "push", path, snaps, "--inflate-gvisor"], env=dict(os.environ, **extra))
        check(p.returncode == 0, f"push with {extra}: {p.stderr.decode()[-300:]}")
        f = json.loads(run([ss, "info", snaps, "--json"]).stdout)["file_list"][0]
        check((f.get("stored_as") == "gvisor-inflated") == want,
              f"with {extra}: stored {'inflated' if want else 'as it is'}")
        p = run([ss, "cat", snaps])
        check(p.returncode == 0 and p.stdout == (pulled if want else img),
              f"with {extra}: cat gives it back")
    check(os.listdir(spill) == [], "nothing left in $TMPDIR")
    # The bound is for all the push's state files together: of two that
    # each fit it alone, the second finds the room taken and, with no
    # $TMPDIR to go to, is stored as it is.
    two = os.path.join(tmp, "two")
    os.makedirs(two)
    for n in ("a.img", "b.img"):
        shutil.copy(path, os.path.join(two, n))
    bound = str(len(parse(img)[0]) + len(body) + 4096)
    snapt = os.path.join(tmp, "snaps", "two")
    p = run([ss, "push", two, snapt, "--inflate-gvisor"],
            env=dict(os.environ, SNAPSTREAM_GVISOR_MEMORY=bound, TMPDIR=nowhere))
    check(p.returncode == 0, f"push two state files: {p.stderr.decode()[-300:]}")
    fl = json.loads(run([ss, "info", snapt, "--json"]).stdout)["file_list"]
    kinds = sorted(f.get("stored_as", "plain") for f in fl)
    check(kinds == ["gvisor-inflated", "plain"],
          f"one bound for both: one inflated, one as it is ({kinds})")
    p = run([ss, "push", path, os.path.join(tmp, "snaps", "badenv"), "--inflate-gvisor"],
            env=dict(os.environ, SNAPSTREAM_GVISOR_MEMORY="lots"))
    check(p.returncode != 0 and b"SNAPSTREAM_GVISOR_MEMORY" in p.stderr,
          f"a bad SNAPSTREAM_GVISOR_MEMORY is refused ({p.returncode})")


def stored(ss, args):
    p = run([ss, "push"] + args + ["--inflate-gvisor", "--json"])
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode()[-500:])
    return json.loads(p.stdout)


def runsc_cycle(ss, tmp, mb):
    if os.geteuid() != 0:
        return "runsc needs root here"
    runsc = shutil.which("runsc")
    if not runsc:
        return "runsc is not installed"
    root = os.path.join(tmp, "runsc-root")
    rs = [runsc, f"--root={root}"] + e2e.RUNSC_FLAGS
    bundle = os.path.join(tmp, "bundle")
    e2e.make_bundle(bundle, "/bin/busybox", runsc, ["/bin/sh", "-c", e2e.WORKLOAD],
                    env=[f"MB={mb}"], tmpfs_mb=mb)
    cid = f"gvstate-{os.getpid()}"
    dn = subprocess.DEVNULL
    errlog = os.path.join(tmp, "runsc.err")

    def detached(args):
        # A detached sandbox keeps its stdio: a pipe would never close.
        with open(errlog, "w") as err:
            p = subprocess.run(rs + args, stdout=dn, stderr=err, timeout=120)
        with open(errlog) as err:
            return p.returncode, err.read()[-300:]

    def sh(*argv):
        p = run(rs + ["exec", cid] + list(argv), timeout=60)
        return p.stdout.decode().strip() if p.returncode == 0 else None

    def counter():
        v = sh("/bin/cat", "/data/counter")
        return int(v) if v and v.isdigit() else None

    def wait_counter():
        for _ in range(600):
            if counter():
                return True
            time.sleep(0.1)
        return False

    try:
        rc, err = detached(["run", "--detach", "--bundle", bundle, cid])
        if rc != 0 or not wait_counter():
            return f"runsc cannot run a sandbox here: {err}"
        digest = sh("/bin/sha256sum", "/data/blob")
        store = os.path.join(tmp, "rstore")
        for n in (1, 2):
            img = os.path.join(tmp, f"ckpt{n}")
            os.makedirs(img)
            before = counter()
            subprocess.run(rs + ["checkpoint", "--image-path", img, cid], check=True)
            subprocess.run(rs + ["delete", "-force", cid], stdout=dn, stderr=dn)
            snap = os.path.join(store, f"snap{n}")
            st = stored(ss, [img, snap] + (["--parent", os.path.join(store, "snap1")]
                                            if n == 2 else []))
            if n == 1:
                first = st["new_stored_bytes"]
            else:
                ratio = st["new_stored_bytes"] / first
                print(f"REPORT checkpoint 1 stored {first} bytes; checkpoint 2 of the restored "
                      f"sandbox stored {st['new_stored_bytes']} bytes ({100 * ratio:.1f}%), "
                      f"image {os.path.getsize(os.path.join(img, 'checkpoint.img'))} bytes",
                      flush=True)
                check(ratio <= 0.10, f"the second checkpoint stores {100 * ratio:.1f}% of the "
                      "first's bytes (at most 10%)")
            rest = os.path.join(tmp, f"restore{n}")
            p = run([ss, "pull", snap, rest])
            check(p.returncode == 0, f"pull snapshot {n}: {p.stderr.decode()[-300:]}")
            rc, err = detached(["restore", "--detach", "--image-path", rest, "--bundle", bundle,
                                cid])
            check(rc == 0, f"runsc restores snapshot {n}: {err}")
            time.sleep(0.5)
            after = counter()
            check(after is not None and before is not None and after >= before,
                  f"snapshot {n}: the counter goes on ({before} -> {after})")
            check(sh("/bin/sha256sum", "/data/blob") == digest,
                  f"snapshot {n}: the data is unchanged")
    finally:
        subprocess.run(rs + ["delete", "-force", cid], stdout=dn, stderr=dn)
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("snapstream")
    ap.add_argument("--mb", type=int, default=24)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ss-gvstate-",
                           dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    why = None
    try:
        cli_roundtrip(a.snapstream, tmp)
        why = runsc_cycle(a.snapstream, tmp, a.mb)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"FAILED: {len(failures)} failure(s)")
        return 1
    if why:
        if e2e.strict():
            print(f"FAIL: cannot run the runsc part: {why} (SNAPSTREAM_TEST_STRICT)")
            return 1
        print(f"SKIP: the runsc part: {why}")
        return 77
    print("PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
