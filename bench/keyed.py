"""The keyed scenario: the cost of a sealed keyed store (docs/SECURITY.md,
"Encryption at rest in keyed stores") against a plain one, in the same
run, on the memory-like image of the primary workload.

After one untimed round of each, per run, in alternating order (plain
first on even runs, keyed first on odd ones, so a drift of the shared
machine hits both alike): a cold push
of the image into an empty store, and a pull of that snapshot to tmpfs;
for the keyed store, `snapstream init --key-file` first (untimed). Every
pull is compared with the image outside the timing. Reported: median wall
and CPU seconds (user + system of the command) of each, and keyed / plain
for both, against the issue's target (keyed <= 1.15x plain, push and pull).
On a machine shared with other work the CPU ratio says what the wall
ratio would on a quiet one.

Python 3 standard library only. Standalone:
  /usr/bin/python3 bench/keyed.py --snapstream build/cli/snapstream \\
      --genimage build/bench/ss-genimage [--size 1G] [--runs 5]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import log, parse_size, rm, run, same_content  # noqa: E402

TARGET = 1.15


def scenario(snapstream, genimage, wd, record, size, runs, seed=1):
    """Run the scenario in wd/keyed; record(mode, op, i, wall_s=, cpu_s=,
    ...) each measurement; return the summary."""
    d = os.path.join(wd, "keyed")
    rm(d)
    os.makedirs(d)
    try:
        img = os.path.join(d, "mem.img")
        subprocess.run([genimage, "--size", str(size), "--seed", str(seed), "--out", img,
                        "--quiet"], check=True)
        key = os.path.join(d, "store.key")
        with open(key, "wb") as f:
            f.write(os.urandom(32))
        os.chmod(key, 0o600)
        res = {"image_bytes": size, "runs": runs, "samples": []}
        # One untimed round of each first: the image read once, libcrypto
        # and the binary's pages loaded, tmpfs's first allocations made.
        for i in [-1] + list(range(runs)):
            order = ("plain", "keyed") if i % 2 == 0 else ("keyed", "plain")
            for mode in order:
                k = ["--key-file", key] if mode == "keyed" else []
                top = os.path.join(d, mode)
                rm(top)
                os.makedirs(top)
                store = os.path.join(top, ".snapstream")
                if k:
                    run([snapstream, "init", "--store", store, "--quiet"] + k, d)
                snap = os.path.join(top, "snap")
                log("keyed scenario, %s %d/%d: %s push" % (
                    "run" if i >= 0 else "warm-up", i + 1, runs, mode))
                p = run([snapstream, "push", img, snap, "--json", "--quiet"] + k, d)
                out = json.loads(p.stdout)
                dest = os.path.join(top, "restored.img")
                log("keyed scenario, %s %d/%d: %s pull" % (
                    "run" if i >= 0 else "warm-up", i + 1, runs, mode))
                q = run([snapstream, "pull", snap, dest, "--quiet"] + k, d)
                if not same_content(img, dest):
                    raise ValueError("%s pull does not equal the image" % mode)
                for op, r in (("push", p), ("pull", q)) if i >= 0 else ():
                    s = dict(mode=mode, op=op, run=i, wall_s=round(r.wall, 4),
                             cpu_s=round(r.cpu, 4), bg_cpu_frac=round(r.bg_cpu, 3),
                             maxrss_kib=r.maxrss_kib)
                    if op == "push":
                        s["stored_bytes"] = out.get("new_stored_bytes")
                    res["samples"].append(s)
                    record(mode, op, i, **s)
                rm(top)
    finally:
        rm(d)
    med = lambda mode, op, f: statistics.median(
        s[f] for s in res["samples"] if s["mode"] == mode and s["op"] == op)
    res["targets"] = []
    for op in ("push", "pull"):
        for f in ("wall_s", "cpu_s"):
            for mode in ("plain", "keyed"):
                res["%s_%s_%s" % (mode, op, f)] = med(mode, op, f)
            ratio = res["keyed_%s_%s" % (op, f)] / res["plain_%s_%s" % (op, f)]
            res["%s_%s_ratio" % (op, f)] = ratio
            res["targets"].append({"name": "keyed %s / plain %s, %s" % (
                op, op, "wall" if f == "wall_s" else "CPU"), "value": ratio,
                "limit": TARGET, "ok": ratio <= TARGET})
    res["stored_plain"] = med("plain", "push", "stored_bytes")
    res["stored_keyed"] = med("keyed", "push", "stored_bytes")
    return res


def main():
    ap = argparse.ArgumentParser(description="keyed vs plain push and pull (bench/keyed.py)")
    ap.add_argument("--snapstream", required=True)
    ap.add_argument("--genimage", required=True)
    ap.add_argument("--workdir", default="/dev/shm/ssbench-keyed")
    ap.add_argument("--size", default="1G")
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    os.makedirs(a.workdir, exist_ok=True)
    res = scenario(os.path.abspath(a.snapstream), os.path.abspath(a.genimage), a.workdir,
                   lambda *x, **s: print("[keyed] run %d %s %s: wall %.3f s, cpu %.3f s"
                                               % (s["run"] + 1, s["mode"], s["op"],
                                                  s["wall_s"], s["cpu_s"]),
                                                  file=sys.stderr),
                   parse_size(a.size), a.runs)
    res.pop("samples")
    print(json.dumps(res, indent=1))
    return 0 if all(t["ok"] for t in res["targets"]) else 3


if __name__ == "__main__":
    sys.exit(main())
