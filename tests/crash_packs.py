#!/usr/bin/python3
"""Helper for tests/crash.sh: look at the packs a killed push left behind.

  crash_packs.py local <store-dir>     packs under <store>/packs/
  crash_packs.py s3 <bucket> <prefix>  packs under s3://bucket/<prefix>/packs/
                                       (AWS_ENDPOINT_URL; s3rver answers
                                       unsigned requests)
  crash_packs.py s3-purge <bucket> <prefix>   delete every object under prefix

For every object under a final pack name (packs/<2 hex>/<32 hex>) it reads
the 32-byte trailer (proto/pack.h) and checks its magic, version and that
index_offset + count * 32 + 32 == the object's size (a sealed pack: its
footer's sealed index fits the object): a partially written pack fails
that. Prints one line "packs=N bytes=B tmp=T bad=K" (N and B
count the whole packs) and a line per bad pack; exit 0 when no pack is
bad, 1 otherwise.
"""
import os
import re
import struct
import sys
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

FINAL = re.compile(r"^[0-9a-f]{2}/([0-9a-f]{32})$")


def check_trailer(t, size):
    if len(t) != 32:
        return f"short trailer ({len(t)} bytes)"
    if t[16:24] == b"SSPACK02":
        # A sealed store's pack ends with a footer: the sealed index and
        # trailer (count * 32 + 32 bytes, and a 16-byte tag) before it.
        sealed, = struct.unpack_from("<Q", t, 24)
        if sealed < 48 or (sealed - 48) % 32 or sealed + 16 > size:
            return f"sealed footer gives an index of {sealed} bytes in a {size}-byte pack"
        return None
    magic, version, count, index_offset, _ck = struct.unpack("<8sIIQQ", t)
    if magic != b"SSPACK01":
        return f"bad magic {magic!r}"
    if version != 1:
        return f"bad version {version}"
    if index_offset + count * 32 + 32 != size:
        return f"size {size} != index_offset {index_offset} + {count} entries + trailer"
    return None


def judge(objects, tail):
    """The packs among objects, (name under packs/, size) pairs; tail(name,
    size) reads an object's last 32 bytes (all of it when shorter).
    Returns (whole packs, their bytes, lines naming the bad ones)."""
    n = nbytes = 0
    bad = []
    for rel, size in objects:
        if not FINAL.match(rel):
            bad.append(f"{rel}: unexpected name under packs/")
            continue
        why = check_trailer(tail(rel, size), size)
        if why:
            bad.append(f"{rel}: {why}")
        else:
            n += 1
            nbytes += size
    return n, nbytes, bad


def local(store):
    root = os.path.join(store, "packs")
    objects = []
    tmp = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            if ".tmp-" in f:
                tmp += 1
                continue
            path = os.path.join(dirpath, f)
            objects.append((os.path.relpath(path, root), os.path.getsize(path)))

    def tail(rel, size):
        with open(os.path.join(root, rel), "rb") as fh:
            fh.seek(max(size - 32, 0))
            return fh.read(32)

    n, nbytes, bad = judge(objects, tail)
    return n, nbytes, tmp, bad


def s3_list(bucket, prefix):
    ep = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
    token = None
    while True:
        q = {"list-type": "2", "prefix": prefix}
        if token:
            q["continuation-token"] = token
        url = f"{ep}/{bucket}?{urllib.parse.urlencode(q)}"
        with urllib.request.urlopen(url, timeout=30) as r:
            root = ET.fromstring(r.read())
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        for c in root.findall(f"{ns}Contents"):
            yield c.find(f"{ns}Key").text, int(c.find(f"{ns}Size").text)
        if (root.findtext(f"{ns}IsTruncated") or "false") != "true":
            break
        token = root.findtext(f"{ns}NextContinuationToken")


def s3(bucket, prefix):
    ep = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
    base = prefix.rstrip("/") + "/packs/"

    def tail(rel, size):
        if size == 0:
            return b""
        req = urllib.request.Request(f"{ep}/{bucket}/{urllib.parse.quote(base + rel)}",
                                     headers={"Range": f"bytes={max(size - 32, 0)}-{size - 1}"})
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.read()

    n, nbytes, bad = judge(((key[len(base):], size) for key, size in s3_list(bucket, base)), tail)
    return n, nbytes, 0, bad


def s3_purge(bucket, prefix):
    ep = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
    for key, _ in list(s3_list(bucket, prefix.rstrip("/") + "/")):
        req = urllib.request.Request(f"{ep}/{bucket}/{urllib.parse.quote(key)}", method="DELETE")
        urllib.request.urlopen(req, timeout=30).read()
    return 0


def main():
    a = sys.argv[1:]
    if a[:1] == ["local"] and len(a) == 2:
        n, nbytes, tmp, bad = local(a[1])
    elif a[:1] == ["s3"] and len(a) == 3:
        n, nbytes, tmp, bad = s3(a[1], a[2])
    elif a[:1] == ["s3-purge"] and len(a) == 3:
        return s3_purge(a[1], a[2])
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"packs={n} bytes={nbytes} tmp={tmp} bad={len(bad)}")
    for b in bad:
        print(f"bad pack: {b}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
