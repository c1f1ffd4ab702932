#!/usr/bin/python3
"""What a reader of the bucket sees of an image (docs/SECURITY.md, "What
still leaks"): every object of a store, and snapshot manifests, scanned
for the image's bytes.

  sealed_scan.py plant <file> <tag>
      write a 32-byte marker "<tag>:<offset, hex>" at the start of every
      4 KiB page of file (in place), unique to the page
  sealed_scan.py markers <tag> <objects...>
      print how many distinct markers of <tag> the objects show
  sealed_scan.py substrings [--stop=N] <file> <objects...>
      print how many places in the objects hold a 17-byte sequence of
      file (stop counting at N)

An object is <store>:<key> (a key of a local directory or s3://bucket/
prefix, through check_obj.py), or <store>:* for every object under it.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import check_obj  # noqa: E402

W = 17   # longer than 16 bytes: the bound
K = 9    # anchors: every W-byte window holds an aligned K-byte one


def objects(specs):
    for spec in specs:
        store, _, key = spec.rpartition(":")
        st = check_obj.S3(store) if store.startswith("s3://") else check_obj.Local(store)
        keys = st.ls("") if key == "*" else [key]
        for k in keys:
            yield f"{store}:{k}", st.get(k)


def plant(path, tag):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for off in range(0, size - 32 + 1, 4096):
            m = f"{tag}:{off:x}".encode()
            m = (m + b"#" * 32)[:32]
            f.seek(off)
            f.write(m)


def markers(tag, specs):
    pat = re.compile(re.escape(tag.encode()) + rb":[0-9a-f]+#*")
    found = set()
    for _name, data in objects(specs):
        found.update(m.group(0) for m in pat.finditer(data))
    print(len(found))


def substrings(path, specs, stop):
    # Every 17-byte window of the image holds one of its 9-byte windows
    # that start at a multiple of 9: index those, look each 9-byte window
    # of the objects up, and extend a hit both ways to see whether 17
    # bytes agree. Posting lists are capped, which only matters for
    # windows of one repeated byte (zero runs are never stored anyway).
    img = open(path, "rb").read()
    index = {}
    for p in range(0, len(img) - K + 1, K):
        lst = index.setdefault(img[p:p + K], [])
        if len(lst) < 8:
            lst.append(p)
    hits = 0
    for _name, data in objects(specs):
        for q in range(len(data) - K + 1):
            ps = index.get(data[q:q + K])
            if not ps:
                continue
            for p in ps:
                left = 0
                while left < W - K and q - left > 0 and p - left > 0 and \
                        data[q - left - 1] == img[p - left - 1]:
                    left += 1
                right = K
                while right < W and q + right < len(data) and p + right < len(img) and \
                        data[q + right] == img[p + right]:
                    right += 1
                if left + right >= W:
                    hits += 1
                    break
            if stop and hits >= stop:
                print(hits)
                return
    print(hits)


def main():
    a = sys.argv[1:]
    if len(a) >= 3 and a[0] == "plant":
        plant(a[1], a[2])
    elif len(a) >= 2 and a[0] == "markers":
        markers(a[1], a[2:])
    elif len(a) >= 2 and a[0] == "substrings":
        stop = 0
        if a[1].startswith("--stop="):
            stop = int(a[1][7:])
            a = a[1:]
        substrings(a[1], a[2:], stop)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
