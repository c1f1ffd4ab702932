"""The images the benchmark moves, each with its "next checkpoint"
variants where it has them:

- memory: one memory-like file from ss-genimage (256 MiB, 1 GiB, 4 GiB),
  next checkpoints with 1% and 10% of pages dirtied in clustered runs;
- random / zero: every page random (encrypted or compressed data), or
  every page zero (untouched guest memory that was still written out);
- firecracker: a Firecracker-style pair, `mem` (raw guest memory, page
  aligned, memory-like) and `vmstate` (a few hundred KB of serialized
  vCPU and device state); next: 1% of `mem` dirtied, `vmstate` rewritten
  where a running VM changes it;
- criu: a CRIU-style image directory, ~40 small protobuf-framed `.img`
  files and one large `pages-1.img`; next: pages dirtied, the per-process
  state rewritten where it changes;
- gvisor: real `runsc checkpoint` images of a busybox sandbox the harness
  runs itself (tests/ateom/e2e.py's bundle builder), holding a few MB or a
  few hundred MB of data in a tmpfs; next: the same sandbox restored,
  given new data, and checkpointed again.

Everything except the gVisor images is reproducible: the same seed and
size give the same bytes on every machine (ss-genimage's PRNG; Python's
random.Random for the small files).

Python 3 standard library only."""

import importlib.util
import json
import math
import os
import random
import shutil
import struct
import subprocess
import time

from common import (MiB, ROOT, CommandFailed, Skipped, allocated_bytes, fmt_size, log,
                    logical_bytes, rm, run)

PAGE = 4096


class Next:
    """A next checkpoint of a workload: pushed with --parent the first."""

    def __init__(self, tag, path, changed_bytes, label, report=None):
        self.tag, self.path, self.changed_bytes, self.label = tag, path, changed_bytes, label
        self.report = report or {}
        self.bytes = logical_bytes(path)


class Workload:
    """One image (a file or a directory) and its next checkpoints."""

    def __init__(self, name, title, path, nexts=(), info=None, description=""):
        self.name, self.title, self.path = name, title, path
        self.nexts = list(nexts)
        self.info = info or {}
        self.description = description
        self.bytes = logical_bytes(path)
        self.alloc = allocated_bytes(path)   # data bytes: what a command is settled for
        self.is_dir = os.path.isdir(path)

    def paths(self):
        return [self.path] + [n.path for n in self.nexts]

    def remove(self):
        for p in self.paths():
            rm(p)
            rm(p + ".json")

    def as_json(self):
        return {"name": self.name, "title": self.title, "bytes": self.bytes, "is_dir": self.is_dir,
                "description": self.description, "info": self.info,
                "nexts": [{"tag": n.tag, "label": n.label, "bytes": n.bytes,
                           "changed_bytes": n.changed_bytes, "report": n.report}
                          for n in self.nexts]}


# ---------------------------------------------------------------- ss-genimage

def genimage(gen, wd, out, size=None, seed=1, mix=None, dirty=None, base=None, extra=()):
    cmd = [gen, "--out", out, "--seed", str(seed), "--quiet", "--report-json", out + ".json"]
    if dirty is not None:
        cmd += ["--dirty", str(dirty), "--base", base]
    else:
        cmd += ["--size", str(size)]
    if mix:
        cmd += ["--mix", mix]
    cmd += list(extra)
    r = run(cmd, wd)
    with open(out + ".json") as f:
        rep = json.load(f)
    os.unlink(out + ".json")
    rep["wall_s"] = round(r.wall, 3)
    return rep


def memory(gen, wd, size, dirties=(0.01, 0.10), seed=1):
    """ss-genimage's memory-like image and its dirtied next checkpoints."""
    tag = fmt_size(size)
    A = os.path.join(wd, "mem-%s-A.img" % tag)
    rep = genimage(gen, wd, A, size=size, seed=seed)
    nexts = []
    for k, frac in enumerate(dirties):
        pct = "%g" % (100 * frac)
        B = os.path.join(wd, "mem-%s-B%s.img" % (tag, pct))
        r = genimage(gen, wd, B, dirty=frac, base=A, seed=seed + 1 + k)
        nexts.append(Next("incr" + pct, B, r["changed_bytes"],
                          "incremental push (%s%% dirty)" % pct, r))
    mix = ", ".join("%s %.1f%%" % (k[:-6], 100 * rep[k] / rep["pages"])
                    for k in rep if k.endswith("_pages") and rep.get("pages"))
    return Workload("mem-" + tag, "memory-like %s" % tag, A, nexts, {"A": rep},
                    "ss-genimage --size %s --seed %d (%s); next checkpoints: %s of the pages "
                    "rewritten in clustered runs" % (tag, seed, mix,
                                                     " and ".join("%g%%" % (100 * d) for d in dirties)))


def uniform(gen, wd, kind, size, seed=1):
    """Every page random, or every page zero (written, not sparse)."""
    A = os.path.join(wd, "%s-%s.img" % (kind, fmt_size(size)))
    rep = genimage(gen, wd, A, size=size, seed=seed, mix="%s=100" % kind)
    return Workload("%s-%s" % (kind, fmt_size(size)), "all-%s %s" % (kind, fmt_size(size)), A,
                    [], {"A": rep}, "ss-genimage --mix %s=100: every page %s"
                    % (kind, "random (incompressible, nothing repeats)" if kind == "random"
                       else "zero, written out (the file is not sparse)"))


# Page-granular next checkpoints: a few pages rewritten here and there
# (runs of 1-8 pages, mean ~2), not the memory class's 16-page clusters.
PAGES_DIRTY_RUN = 8


def pages(gen, wd, size, dirties=(0.03,), seed=1, args=()):
    """ss-genimage --class pages (zero, repeated, text, struct and random
    pages mixed at 4 KiB granularity) and its dirtied next checkpoints.
    args: more ss-genimage options (--mix, --pool, --run-max), to imitate
    other images of the class."""
    tag = fmt_size(size)
    A = os.path.join(wd, "pages-%s-A.img" % tag)
    args = list(args)
    rep = genimage(gen, wd, A, size=size, seed=seed, extra=["--class", "pages"] + args)
    # The dirty pass writes text/struct/random in the image's proportions:
    # it needs the same --mix (not --pool or --run-max, which it refuses
    # only without --class pages).
    mix = [a for i, a in enumerate(args) if a.startswith("--mix") or (i and args[i - 1] == "--mix")]
    nexts = []
    for k, frac in enumerate(dirties):
        pct = "%g" % (100 * frac)
        B = os.path.join(wd, "pages-%s-B%s.img" % (tag, pct))
        r = genimage(gen, wd, B, dirty=frac, base=A, seed=seed + 1 + k,
                     extra=["--class", "pages", "--dirty-run", str(PAGES_DIRTY_RUN)] + mix)
        nexts.append(Next("incr" + pct, B, r["changed_bytes"],
                          "incremental push (%s%% dirty)" % pct, r))
    shares = ", ".join("%s %.1f%%" % (k[:-6], 100 * rep[k] / rep["pages"])
                       for k in rep if k.endswith("_pages") and rep.get("pages"))
    return Workload("pages-" + tag, "page-granular %s" % tag, A, nexts, {"A": rep},
                    "ss-genimage --class pages --size %s --seed %d%s (%s; repeated pages: %d "
                    "distinct of a %d-page pool, so %.1f MB are repeats of a page seen before)%s"
                    % (tag, seed, (" " + " ".join(args)) if args else "", shares,
                       rep["repeat_distinct"], rep["pool"],
                       (rep["repeat_pages"] - rep["repeat_distinct"]) * PAGE / 1e6,
                       "; next checkpoints: %s of the pages rewritten in runs of 1-%d pages" % (
                           " and ".join("%g%%" % (100 * d) for d in dirties), PAGES_DIRTY_RUN)
                       if dirties else ""))


def sparse(gen, wd, logical, data, seed=1, extent_max=512):
    """A guest memory file as VMMs leave it: `logical` bytes, of which only
    `data` bytes (page-granular content, zero pages included) are written,
    in extents of 1..extent_max pages scattered at random over the file;
    the rest are holes. Returns (the sparse file, the same data dense):
    the dense file is the reference the sparse one is measured against.
    The data's seed is seed + 10: other bytes than pages-64M's, one more
    page-granular image measured against zstd."""
    dtag, ltag = fmt_size(data), fmt_size(logical)
    dense = os.path.join(wd, "dense-%s.img" % dtag)
    rep = genimage(gen, wd, dense, size=data, seed=seed + 10, extra=["--class", "pages"])
    rng = random.Random("%d/sparse/%d/%d" % (seed, logical, data))
    npages, ext = data // PAGE, []
    left = npages
    while left:
        n = min(left, int(2 ** rng.uniform(0, math.log2(extent_max))))
        ext.append(n)
        left -= n
    # Holes before each extent and after the last, exponential weights.
    w = [rng.expovariate(1.0) for _ in range(len(ext) + 1)]
    hole_pages = logical // PAGE - npages
    gaps = [int(x / sum(w) * hole_pages) for x in w]
    path = os.path.join(wd, "sparse-%s.img" % ltag)
    with open(dense, "rb") as fi, open(path, "wb") as fo:
        off = 0
        for g, n in zip(gaps, ext):
            off += g * PAGE
            os.pwrite(fo.fileno(), fi.read(n * PAGE), off)
            off += n * PAGE
        fo.truncate(logical)
    alloc = allocated_bytes(path)
    info = {"data_bytes": data, "extents": len(ext), "extent_pages_max": extent_max,
            "allocated_bytes": alloc, "dense": rep}
    s = Workload("sparse-" + ltag, "sparse %s (%s of data)" % (ltag, dtag), path, [], info,
                 "a %s sparse file holding %s of data (ss-genimage --class pages --seed %d) in %d "
                 "extents of 1-%d pages scattered over it, the rest holes (%.1f MB allocated); "
                 "measured against dense-%s, the same data stored densely"
                 % (ltag, dtag, seed + 10, len(ext), extent_max, alloc / 1e6, dtag))
    s.data_bytes = data
    d = Workload("dense-" + dtag, "%s dense (sparse-%s's data)" % (dtag, ltag), dense, [],
                 {"A": rep}, "the data of sparse-%s, stored densely: the reference for its "
                 "push and pull times" % ltag)
    return s, d


# ---------------------------------------------------------------- small structured files

def _varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, value):
    """One protobuf field: ints as varints, bytes/str length-delimited."""
    if isinstance(value, int):
        return _varint(num << 3) + _varint(value)
    if isinstance(value, str):
        value = value.encode()
    return _varint(num << 3 | 2) + _varint(len(value)) + value


_PATHS = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6",
          "/usr/lib/x86_64-linux-gnu/libpthread.so.0", "/usr/bin/python3.11", "/etc/ld.so.cache",
          "/usr/lib/locale/C.utf8/LC_CTYPE", "/app/server", "/app/config.yaml", "/var/log/app.log",
          "/usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so", "/dev/null",
          "/dev/urandom", "/tmp/.app-cache", "/usr/share/zoneinfo/UTC", "/proc/self/maps"]


def _message(rng, kind):
    """A protobuf-like message as CRIU's and Firecracker's images hold them:
    small integers, flags, pointer-like addresses, the odd path, a few
    zero-padded register blocks."""
    f = []
    if kind == "regs":
        base = 0x7F0000000000 | rng.getrandbits(32) << 12
        for i in range(1, 28):
            f.append(_field(i, base + rng.getrandbits(20) if i % 3 else rng.getrandbits(16)))
    elif kind == "xsave":
        blk = bytearray(rng.choice((832, 1024, 2688)))
        for _ in range(24):
            o = rng.randrange(0, len(blk) - 8)
            blk[o:o + 8] = rng.getrandbits(64).to_bytes(8, "little")
        f.append(_field(1, 0x7) + _field(2, bytes(blk)))
    elif kind == "vma":
        start = 0x550000000000 + rng.getrandbits(28) * PAGE
        f += [_field(1, start), _field(2, start + PAGE * rng.choice((1, 2, 4, 16, 33, 256, 2048))),
              _field(3, rng.choice((0, 0, PAGE * rng.getrandbits(8)))),
              _field(4, rng.choice((0, 0, 0, rng.getrandbits(16)))), _field(5, rng.choice((1, 3, 5, 7))),
              _field(6, rng.choice((0x22, 0x2, 0x802, 0x1002))), _field(7, rng.choice((0x41, 0x101, 0x209))),
              _field(8, rng.choice((-1 & 0xFFFFFFFF, rng.randrange(3, 40))))]
    elif kind == "pagemap":
        f += [_field(1, 0x7F0000000000 + rng.getrandbits(24) * PAGE),
              _field(2, rng.choice((1, 1, 2, 3, 8, 16, 64, 257))), _field(3, rng.choice((1, 3, 5)))]
    elif kind == "fd":
        f += [_field(1, rng.getrandbits(24)), _field(2, rng.choice((0, 1, 0x80000))),
              _field(3, rng.choice((1, 2, 3, 5, 7))), _field(4, rng.randrange(0, 64))]
    elif kind == "file":
        f += [_field(1, rng.getrandbits(24)), _field(2, rng.choice((0x8000, 0x8002, 0x80000))),
              _field(3, rng.getrandbits(20)), _field(4, rng.choice(_PATHS)),
              _field(5, rng.getrandbits(31)), _field(6, rng.choice((0o644, 0o755, 0o600))),
              _field(7, rng.getrandbits(31))]
    elif kind == "text":
        words = ["cgroup", "memory", "cpu", "pids", "io", "net_cls", "/sys/fs/cgroup", "rw",
                 "nosuid", "nodev", "noexec", "relatime", "tmpfs", "proc", "mode=755", "0::/"]
        f.append(_field(1, " ".join(rng.choice(words) for _ in range(rng.randrange(4, 24)))))
        f.append(_field(2, rng.getrandbits(12)))
    else:  # "misc": small ints and flags
        for i in range(1, rng.randrange(3, 12)):
            f.append(_field(i, rng.getrandbits(rng.choice((1, 4, 8, 16, 32)))))
    return b"".join(f)


def _image_file(path, magic, entries):
    """CRIU framing: a 32-bit image magic, then u32 length + message."""
    with open(path, "wb") as out:
        out.write(struct.pack("<II", 0x54564319, magic))
        for m in entries:
            out.write(struct.pack("<I", len(m)) + m)


def _entries(seed, name, epoch, kind, count, volatile):
    """count messages; each entry is drawn from the file's own stream, and
    redrawn for a later checkpoint (epoch) with probability `volatile`:
    what a running process changes between two dumps."""
    pick = random.Random("%d/%s/pick/%d" % (seed, name, epoch))
    out = []
    for i in range(count):
        e = epoch if pick.random() < volatile else 0
        out.append(_message(random.Random("%d/%s/%d/%d" % (seed, name, i, e)), kind))
    return out


# CRIU image set of a small process tree. (file name, magic, message kind,
# entries, share redrawn at the next dump)
CRIU_PIDS = (1, 7, 8, 12, 31)


def _criu_files():
    files = [("inventory.img", 0x58313116, "misc", 1, 1.0),
             ("pstree.img", 0x50273030, "misc", len(CRIU_PIDS), 0.0),
             ("files.img", 0x56303138, "file", 40, 0.05),
             ("mountpoints-12.img", 0x55573533, "text", 30, 0.0),
             ("netns-10.img", 0x55933752, "misc", 120, 0.1),
             ("utsns-11.img", 0x54473203, "text", 1, 0.0),
             ("ipcns-var-13.img", 0x53115007, "misc", 4, 0.0),
             ("cgroup.img", 0x59383330, "text", 40, 0.0),
             ("seccomp.img", 0x64413049, "misc", 16, 0.0),
             ("tty-info.img", 0x59433025, "misc", 2, 0.0),
             ("timens-0.img", 0x55534352, "misc", 2, 1.0),
             ("stats-dump", 0x57093306, "misc", 1, 1.0)]
    for pid in CRIU_PIDS:
        files += [("core-%d.img" % pid, 0x55053847, "regs", 3, 1.0),
                  ("core-%d.img" % pid, 0, "xsave", 1, 1.0),
                  ("mm-%d.img" % pid, 0x57492820, "vma", 40 + pid * 3, 0.08),
                  ("pagemap-%d.img" % pid, 0x56084025, "pagemap", 120 + pid * 5, 0.3),
                  ("fdinfo-%d.img" % (pid + 1), 0x56213732, "fd", 12, 0.0),
                  ("fs-%d.img" % pid, 0x61062014, "misc", 1, 0.0),
                  ("ids-%d.img" % pid, 0x54432030, "misc", 1, 0.0)]
    return files


def _write_criu_small(d, seed, epoch):
    byname = {}
    for name, magic, kind, count, vol in _criu_files():
        e = byname.setdefault(name, {"magic": magic, "msgs": []})
        if magic:
            e["magic"] = magic
        e["msgs"] += _entries(seed, name + kind, epoch, kind, count, vol)
    for name, e in byname.items():
        _image_file(os.path.join(d, name), e["magic"], e["msgs"])
    return len(byname)


def _vmstate(path, seed, epoch, vcpus=4):
    """Firecracker-style vmstate: a versioned header, then per vCPU its
    registers, MSRs, CPUID, xsave area and local APIC page, then device
    state (virtio queues, serial, RTC, irqchip) and the MMDS JSON. Stable
    sections (CPUID, config) keep their bytes across checkpoints; the
    volatile ones (registers, timers, queue indexes) are redrawn."""
    parts = [b"FCSNAPv3" + struct.pack("<IQ", 3, 0x1000 + seed)]

    def sec(name, kind, count, vol):
        for m in _entries(seed, "vm/" + name, epoch, kind, count, vol):
            parts.append(struct.pack("<I", len(m)) + m)

    for v in range(vcpus):
        sec("regs%d" % v, "regs", 4, 1.0)
        sec("msrs%d" % v, "misc", 400, 0.15)
        sec("cpuid%d" % v, "misc", 80, 0.0)
        rng = random.Random("%d/xsave%d/%d" % (seed, v, epoch))
        x = bytearray(4096)
        for _ in range(64):
            o = rng.randrange(0, 4088)
            x[o:o + 8] = rng.getrandbits(64).to_bytes(8, "little")
        lapic = bytearray(4096)
        rng = random.Random("%d/lapic%d/%d" % (seed, v, epoch))
        for o in range(0, 1024, 16):
            lapic[o:o + 4] = rng.getrandbits(32 if o % 64 else 8).to_bytes(4, "little")
        parts += [bytes(x), bytes(lapic)]
    for dev in ("block0", "block1", "net0", "vsock0"):
        sec(dev + "-config", "misc", 60, 0.0)
        sec(dev + "-queues", "fd", 2 * 256, 0.2)
    sec("serial-rtc-i8042", "misc", 300, 0.5)
    sec("irqchip", "misc", 1200, 0.3)
    sec("memory-regions", "vma", 64, 0.0)
    sec("mmds", "text", 900, 0.05)
    with open(path, "wb") as f:
        f.write(b"".join(parts))


def _changed_page_bytes(a, b):
    """Bytes of the 4 KiB pages whose content differs (new pages count
    whole), the definition ss-genimage uses for changed_bytes."""
    changed = 0
    with open(b, "rb") as fb, open(a, "rb") if os.path.exists(a) else open(os.devnull, "rb") as fa:
        while True:
            pb = fb.read(PAGE)
            if not pb:
                break
            if fa.read(PAGE) != pb:
                changed += len(pb)
    return changed


def _dir_changed(a, b, skip=()):
    return sum(_changed_page_bytes(os.path.join(a, n), os.path.join(b, n))
               for n in os.listdir(b) if n not in skip)


def firecracker(gen, wd, mem_size, seed=1, dirty=0.01):
    tag = fmt_size(mem_size)
    A, B = os.path.join(wd, "fc-%s-A" % tag), os.path.join(wd, "fc-%s-B" % tag)
    for d in (A, B):
        rm(d)
        os.makedirs(d)
    rep = genimage(gen, wd, os.path.join(A, "mem"), size=mem_size, seed=seed)
    _vmstate(os.path.join(A, "vmstate"), seed, 0)
    rb = genimage(gen, wd, os.path.join(B, "mem"), dirty=dirty, base=os.path.join(A, "mem"),
                  seed=seed + 1)
    _vmstate(os.path.join(B, "vmstate"), seed, 1)
    changed = rb["changed_bytes"] + _dir_changed(A, B, skip=("mem",))
    vm = os.path.getsize(os.path.join(A, "vmstate"))
    pct = "%g" % (100 * dirty)
    return Workload("fc-" + tag, "Firecracker %s" % tag, A,
                    [Next("incr" + pct, B, changed, "incremental push (%s%% dirty)" % pct, rb)],
                    {"mem": rep, "vmstate_bytes": vm},
                    "Firecracker-style pair: mem (%s guest memory, ss-genimage seed %d) + vmstate "
                    "(%d KB of vCPU and device state); next: %s%% of mem dirtied, vmstate rewritten "
                    "where a running VM changes it" % (tag, seed, vm // 1000, pct))


CRIU_MIX = "zero=6,dup=5,clone=12,text=23,struct=24,random=30"


def criu(gen, wd, pages_size, seed=1, dirty=0.01):
    tag = fmt_size(pages_size)
    A, B = os.path.join(wd, "criu-%s-A" % tag), os.path.join(wd, "criu-%s-B" % tag)
    for d in (A, B):
        rm(d)
        os.makedirs(d)
    # CRIU dumps the pages a process has touched: few whole zero pages.
    rep = genimage(gen, wd, os.path.join(A, "pages-1.img"), size=pages_size, seed=seed, mix=CRIU_MIX)
    n = _write_criu_small(A, seed, 0)
    rb = genimage(gen, wd, os.path.join(B, "pages-1.img"), dirty=dirty,
                  base=os.path.join(A, "pages-1.img"), seed=seed + 1, mix=CRIU_MIX)
    _write_criu_small(B, seed, 1)
    changed = rb["changed_bytes"] + _dir_changed(A, B, skip=("pages-1.img",))
    small = logical_bytes(A) - pages_size
    pct = "%g" % (100 * dirty)
    return Workload("criu-" + tag, "CRIU %s" % tag, A,
                    [Next("incr" + pct, B, changed, "incremental push (%s%% dirty)" % pct, rb)],
                    {"pages": rep, "small_files": n, "small_bytes": small},
                    "CRIU-style image directory: %d small .img files (%d KB in all: core, mm, "
                    "pagemap, fdinfo, ... as u32-framed protobuf-like entries) + pages-1.img "
                    "(%s, --mix %s: dumped pages, few zero); next: %s%% of the pages dirtied, "
                    "registers, pagemaps and some VMAs rewritten"
                    % (n, small // 1000, tag, CRIU_MIX, pct))


def smallfiles(gen, wd, count=2000, total=42_000_000, seed=1):
    """A CRIU-style image directory of many processes: `count` files,
    `total` bytes in all. Per process core-, mm-, pagemap-, fdinfo-, fs-,
    ids-PID.img (u32-framed protobuf-like entries, tens of bytes to a few
    KB) and pages-N.img (its dumped pages, 4 KiB to ~1 MiB, log-uniform:
    most processes are small), plus inventory, pstree, files, cgroup and
    mountpoints images; no next checkpoint. Every file is written whole, so
    a tool pays its per-file costs count times."""
    name = "files-%d" % count
    A = os.path.join(wd, name)
    rm(A)
    os.makedirs(A)
    procs = max(1, (count - 5) // 7)
    pids = [100 + 7 * k for k in range(procs)]
    small = [("inventory.img", 0x58313116, "misc", 1), ("pstree.img", 0x50273030, "misc", procs),
             ("files.img", 0x56303138, "file", 4 * procs), ("cgroup.img", 0x59383330, "text", 40),
             ("mountpoints-12.img", 0x55573533, "text", 30)]
    small += [("tty-info-%d.img" % k, 0x59433025, "misc", 2) for k in range(count - 5 - 7 * procs)]
    rng = random.Random("%d/files/%d" % (seed, count))
    for pid in pids:
        small += [("mm-%d.img" % pid, 0x57492820, "vma", rng.randrange(20, 120)),
                  ("pagemap-%d.img" % pid, 0x56084025, "pagemap", rng.randrange(10, 200)),
                  ("fdinfo-%d.img" % pid, 0x56213732, "fd", rng.randrange(3, 40)),
                  ("fs-%d.img" % pid, 0x61062014, "misc", 1), ("ids-%d.img" % pid, 0x54432030, "misc", 1)]
    small_bytes = 0
    for fname, magic, kind, n in small:
        r = random.Random("%d/%s" % (seed, fname))
        _image_file(os.path.join(A, fname), magic, [_message(r, kind) for _ in range(n)])
        small_bytes += os.path.getsize(os.path.join(A, fname))
    for pid in pids:
        r = random.Random("%d/core-%d" % (seed, pid))
        path = os.path.join(A, "core-%d.img" % pid)
        _image_file(path, 0x55053847, [_message(r, "regs") for _ in range(3)] + [_message(r, "xsave")])
        small_bytes += os.path.getsize(path)
    # The pages: one memory-like image (CRIU's mix: few whole zero pages),
    # cut into the processes' pages files.
    weights = [2 ** rng.uniform(0, 8) for _ in pids]
    budget = max(len(pids), (total - small_bytes) // PAGE)
    npg = [max(1, round(w / sum(weights) * budget)) for w in weights]
    img = os.path.join(wd, name + "-pages.img")
    rep = genimage(gen, wd, img, size=sum(npg) * PAGE, seed=seed, mix=CRIU_MIX)
    with open(img, "rb") as f:
        for k, n in enumerate(npg):
            with open(os.path.join(A, "pages-%d.img" % (k + 1)), "wb") as out:
                out.write(f.read(n * PAGE))
    os.unlink(img)
    sizes = [os.path.getsize(os.path.join(A, x)) for x in os.listdir(A)]
    info = {"files": len(sizes), "bytes": sum(sizes), "small_bytes": small_bytes,
            "pages_bytes": sum(npg) * PAGE, "largest": max(sizes), "smallest": min(sizes),
            "median": sorted(sizes)[len(sizes) // 2], "pages": rep}
    return Workload(name, "%d small files" % len(sizes), A, [], info,
                    "a CRIU-style image directory of %d processes: %d files, %.1f MB in all (median "
                    "%d B, largest %d KB): per process core/mm/pagemap/fdinfo/fs/ids images "
                    "(u32-framed protobuf-like entries, %.1f MB in all) and pages-N.img (4 KiB to "
                    "~1 MiB of memory-like pages, --mix %s); no next checkpoint"
                    % (procs, len(sizes), sum(sizes) / 1e6, info["median"], info["largest"] // 1000,
                       small_bytes / 1e6, CRIU_MIX))


# ---------------------------------------------------------------- gVisor

def _e2e():
    """tests/ateom/e2e.py as a module: its bundle builder and runsc flags."""
    path = os.path.join(ROOT, "tests", "ateom", "e2e.py")
    spec = importlib.util.spec_from_file_location("ateom_e2e", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def runsc_preflight():
    """(runsc, busybox) or Skipped with the reason."""
    if os.geteuid() != 0:
        raise Skipped("runsc needs root here (ptrace platform, no rootless setup)")
    runsc = shutil.which("runsc")
    if not runsc:
        raise Skipped("runsc is not installed (Debian package runsc)")
    busybox = "/bin/busybox"
    ldd = subprocess.run(["ldd", busybox], capture_output=True, text=True) \
        if os.path.exists(busybox) else None
    if not ldd or "not a dynamic" not in ldd.stdout + ldd.stderr:
        raise Skipped("no static busybox at /bin/busybox (Debian package busybox-static)")
    return runsc, busybox


# Fills the sandbox's tmpfs: RAND_MB of random data (as an encrypted or
# compressed heap) and COPIES copies of the busybox binary (as a program's
# mapped libraries and page cache), then idles.
GVISOR_FILL = r"""
set -e
head -c $((RAND_MB * 1048576)) /dev/urandom > /data/blob
i=0
while [ $i -lt $COPIES ]; do cat /bin/busybox > /data/lib$i; i=$((i+1)); done
echo ready > /data/ready
while :; do sleep 1; done
"""


class Sandbox:
    """runsc, its own --root under the workdir, one busybox bundle."""

    def __init__(self, wd, name):
        self.runsc, self.busybox = runsc_preflight()
        self.e2e = _e2e()
        self.dir = os.path.join(wd, "runsc-" + name)
        rm(self.dir)
        os.makedirs(self.dir)
        self.rs = [self.runsc, "--root=" + os.path.join(self.dir, "root")] + self.e2e.RUNSC_FLAGS
        # Container ids are host-wide (gVisor's control sockets are named
        # after them): unique per process.
        self.cid = "ssbench-%s-%d" % (name, os.getpid())

    def bundle(self, argv, env, tmpfs_mb):
        b = os.path.join(self.dir, "bundle")
        self.e2e.make_bundle(b, self.busybox, self.runsc, argv, env=env, tmpfs_mb=tmpfs_mb)
        self.bundle_path = b
        return b

    def rs_run(self, *argv, timeout=300):
        """runsc ARGV; output to a file, never a pipe: a detached sandbox
        inherits the descriptors and would hold a pipe open for good."""
        log_path = os.path.join(self.dir, "runsc.out")
        with open(log_path, "w") as out:
            p = subprocess.run(self.rs + list(argv), stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, timeout=timeout)
        if p.returncode != 0:
            with open(log_path) as f:
                raise CommandFailed("runsc %s: %s" % (argv[0], f.read().strip()[-400:]))

    def wait_file(self, path, timeout=300):
        end = time.time() + timeout
        while time.time() < end:
            p = subprocess.run(self.rs + ["exec", self.cid, "/bin/cat", path], capture_output=True)
            if p.returncode == 0:
                return
            time.sleep(0.3)
        raise CommandFailed("sandbox did not write %s within %d s" % (path, timeout))

    def delete(self):
        subprocess.run(self.rs + ["delete", "-force", self.cid], capture_output=True)

    def cleanup(self):
        out = subprocess.run(self.rs + ["list", "-quiet"], capture_output=True, text=True).stdout
        for cid in out.split():
            subprocess.run(self.rs + ["delete", "-force", cid], capture_output=True)
        rm(self.dir)


def gvisor(wd, name, mb, next_mb):
    """Checkpoint a busybox sandbox holding ~mb MB in its tmpfs (60% random,
    40% copies of the busybox binary), restore it, write next_mb MB of new
    random data, checkpoint again. Raises Skipped where runsc cannot run."""
    sb = Sandbox(wd, name)
    A, B = os.path.join(wd, name + "-A"), os.path.join(wd, name + "-B")
    rand_mb = max(1, mb * 6 // 10)
    copies = max(1, (mb - rand_mb) * MiB // os.path.getsize(sb.busybox))
    try:
        b = sb.bundle(["/bin/sh", "-c", GVISOR_FILL],
                      ["RAND_MB=%d" % rand_mb, "COPIES=%d" % copies], tmpfs_mb=mb + 8)
        t0 = time.time()
        try:
            sb.rs_run("run", "--detach", "--bundle", b, sb.cid, timeout=120)
        except CommandFailed as e:
            raise Skipped("runsc cannot run a sandbox here: %s" % e)
        sb.wait_file("/data/ready")
        fill_s = time.time() - t0
        for d in (A, B):
            rm(d)
            os.makedirs(d)
        t0 = time.time()
        sb.rs_run("checkpoint", "--image-path", A, sb.cid)
        ckpt_s = time.time() - t0
        sb.delete()
        sb.rs_run("restore", "--detach", "--image-path", A, "--bundle", b, sb.cid)
        sb.rs_run("exec", sb.cid, "/bin/sh", "-c",
                  "head -c %d /dev/urandom > /data/new" % (next_mb * MiB))
        sb.rs_run("checkpoint", "--image-path", B, sb.cid)
        sb.delete()
    finally:
        sb.cleanup()
    version = subprocess.run([sb.runsc, "--version"], capture_output=True, text=True).stdout
    files = sorted(os.listdir(A))
    return Workload(name, "gVisor %s" % name.split("-", 1)[-1], A,
                    [Next("incr", B, next_mb * MiB,
                          "incremental push (%d MB new in the sandbox)" % next_mb)],
                    {"runsc": version.splitlines()[0] if version else "?", "files": files,
                     "tmpfs_data_mb": mb, "random_mb": rand_mb, "busybox_copies": copies,
                     "fill_s": round(fill_s, 2), "runsc_checkpoint_s": round(ckpt_s, 2)},
                    "`runsc checkpoint` of a busybox sandbox (ptrace platform, no network) "
                    "holding %d MB in a tmpfs (%d MB random, %d copies of busybox); next: "
                    "restored, %d MB of new random data written, checkpointed again; "
                    "'changed' = the data written between the checkpoints" %
                    (mb, rand_mb, copies, next_mb))
