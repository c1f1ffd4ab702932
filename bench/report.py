"""The report directory: summary.md, results.json and charts/ (gnuplot).

Every figure is the median over the runs with the spread (min-max) beside
it; throughput is the image's logical bytes (10^6 B = 1 MB) divided by the
median wall time; "x snap" is the tool's median time divided by
snapstream's on the same row (above 1: snapstream is faster).

Python 3 standard library only; charts need gnuplot (skipped with a note
when it is missing)."""

import json
import os
import shutil
import statistics
import subprocess
import textwrap

from common import GiB, fmt_size, log, machine_details, machine_line, summarize

TOOL_ORDER = ["snapstream", "zstd-1", "zstd-3", "restic", "casync", "aws", "rclone"]
TOOL_LABEL = {"snapstream": "snapstream", "zstd-1": "zstd -1 -T0", "zstd-3": "zstd -3 -T0",
              "restic": "restic", "casync": "casync", "aws": "aws s3 cp", "rclone": "rclone copyto"}
TOOL_COLOR = {"snapstream": "#1f77b4", "zstd-1": "#ff7f0e", "zstd-3": "#ffbb78", "restic": "#2ca02c",
              "casync": "#9467bd", "aws": "#d62728", "rclone": "#8c564b"}
TARGET_LABEL = {"tmpfs": "tmpfs", "disk": "disk", "s3": "s3rver"}

SCENARIO_ORDER = ["cold", "cold-t1", "cold-dropped", "warm", "warm-parent", "warm-shortcut",
                  "incr", "incr1", "incr10", "pull", "pull-t1", "pull-dropped", "verify"]


def scenario_label(sc, wl=None):
    base = {"cold": "cold push", "cold-t1": "cold push, --threads 1",
            "cold-dropped": "cold push, page cache dropped", "warm": "warm push",
            "warm-parent": "warm push --parent", "warm-shortcut": "warm push (restic shortcut)",
            "pull": "pull", "pull-t1": "pull, --threads 1", "pull-dropped": "pull, page cache dropped",
            "verify": "verify"}
    if sc in base:
        return base[sc]
    if sc.startswith("incr") and wl:
        for n in wl.get("nexts", []):
            if n["tag"] == sc:
                return n["label"]
    return sc


def sc_key(sc):
    return SCENARIO_ORDER.index(sc) if sc in SCENARIO_ORDER else len(SCENARIO_ORDER)


class Stats:
    """Medians and spreads over the samples."""

    def __init__(self, samples):
        self.samples = [s for s in samples if "error" not in s]

    def get(self, wl, tgt, tool, sc, key="wall_s"):
        return summarize([s.get(key) for s in self.samples
                          if s.get("workload") == wl and s.get("target") == tgt
                          and s.get("tool") == tool and s.get("scenario") == sc])

    def bytes(self, wl, tgt, tool, sc):
        v = self.get(wl, tgt, tool, sc, "bytes")
        return v["median"] if v else None

    def mbps(self, wl, tgt, tool, sc):
        """(median, low, high) MB/s: bytes over median, max, min wall."""
        t, b = self.get(wl, tgt, tool, sc), self.bytes(wl, tgt, tool, sc)
        if not t or not b or t["median"] <= 0:
            return None
        return (b / t["median"] / 1e6, b / t["max"] / 1e6, b / t["min"] / 1e6)

    def keys(self):
        """(workload, target) pairs, scenarios and tools in the samples, in order."""
        seen = {}
        for s in self.samples:
            if "workload" in s:
                k = (s["workload"], s["target"])
                d = seen.setdefault(k, {"scenarios": set(), "tools": set()})
                d["scenarios"].add(s["scenario"])
                d["tools"].add(s["tool"])
        return seen


def fnum(v, f="%.2f"):
    return "-" if v is None else f % v


def cell(v, scale=1.0, f="%.2f"):
    if v is None:
        return "-"
    a, lo, hi = v["median"] / scale, v["min"] / scale, v["max"] / scale
    if v["n"] == 1 or (f % lo) == (f % hi):
        return f % a
    return (f + " (" + f + "-" + f + ")") % (a, lo, hi)


def tools_in(present):
    return [t for t in TOOL_ORDER if t in present]


# ---------------------------------------------------------------- markdown

def summary_rows(res, st):
    """(label, workload, target, scenario) of the summary table, in order."""
    keys = st.keys()
    wls = res["workloads"]
    primary = res["primary"]
    rows = []

    def add(wl, tgt, scs, prefix):
        k = keys.get((wl, tgt))
        if not k:
            return
        for sc in scs:
            if sc == "incr*":
                for n in wls[wl]["nexts"]:
                    if n["tag"] in k["scenarios"]:
                        rows.append(("%s%s" % (prefix, scenario_label(n["tag"], wls[wl])),
                                     wl, tgt, n["tag"]))
            elif sc in k["scenarios"]:
                rows.append(("%s%s" % (prefix, scenario_label(sc)), wl, tgt, sc))

    if primary:
        t = wls[primary]["title"]
        add(primary, "tmpfs", ["cold", "warm", "warm-parent", "incr*", "pull", "verify"],
            "%s, tmpfs: " % t)
        add(primary, "disk", ["cold", "cold-dropped", "incr*", "pull", "pull-dropped"],
            "%s, disk: " % t)
        add(primary, "s3", ["cold", "warm", "incr*", "pull", "verify"], "%s, s3rver: " % t)
    for name, wl in wls.items():
        if name == primary:
            continue
        for tgt in ("tmpfs", "disk", "s3"):
            add(name, tgt, ["cold", "incr*", "pull"],
                "%s%s: " % (wl["title"], "" if tgt == "tmpfs" else ", " + TARGET_LABEL[tgt]))
    return rows


def summary_table(res, st):
    rows = summary_rows(res, st)
    present = {s["tool"] for s in st.samples if "workload" in s}
    tools = tools_in(present)
    L = ["| scenario | " + " | ".join(TOOL_LABEL[t] for t in tools) + " |",
         "|---|" + "---|" * len(tools)]
    for label, wl, tgt, sc in rows:
        ss = st.get(wl, tgt, "snapstream", sc)
        cells = []
        for t in tools:
            v = st.get(wl, tgt, t, sc)
            if v is None:
                cells.append("-")
                continue
            mb = st.mbps(wl, tgt, t, sc)
            c = "%s s, %s MB/s" % (cell(v), "%.0f" % mb[0] if mb else "-")
            if t != "snapstream" and ss:
                c += ", %.2fx" % (v["median"] / ss["median"])
            cells.append(c)
        L.append("| %s | %s |" % (label, " | ".join(cells)))
    return L


def workload_section(res, st, name, wl, charts):
    L = ["### %s\n" % wl["title"], wl["description"] + "\n",
         "- logical size %.1f MB%s" % (wl["bytes"] / 1e6, "".join(
             "; next `%s`: %.1f MB, %.2f MB changed" % (n["tag"], n["bytes"] / 1e6,
                                                       (n["changed_bytes"] or 0) / 1e6)
             for n in wl["nexts"]))]
    keys = st.keys()
    for tgt in ("tmpfs", "disk", "s3"):
        k = keys.get((name, tgt))
        if not k:
            continue
        tools = tools_in(k["tools"])
        scs = sorted(k["scenarios"], key=sc_key)
        runs = max((v["n"] for v in (st.get(name, tgt, t, s) for t in tools for s in scs) if v),
                   default=0)
        L.append("\n#### %s, %s (runs: %d)\n" % (wl["title"], TARGET_LABEL[tgt], runs))
        if ("throughput", name, tgt) in charts:
            L.append("![throughput](%s)\n" % charts[("throughput", name, tgt)])
        L.append("| figure | " + " | ".join(TOOL_LABEL[t] for t in tools) + " |")
        L.append("|---|" + "---|" * len(tools))

        def row(label, sc, key, scale=1.0, f="%.2f"):
            cells = [cell(st.get(name, tgt, t, sc, key), scale, f) for t in tools]
            if any(c != "-" for c in cells):
                L.append("| %s | %s |" % (label, " | ".join(cells)))

        for sc in scs:
            lab = scenario_label(sc, wl)
            row(lab + ", s", sc, "wall_s")
            cells = []
            for t in tools:
                mb = st.mbps(name, tgt, t, sc)
                cells.append("-" if not mb else "%.0f (%.0f-%.0f)" % mb)
            L.append("| %s, MB/s | %s |" % (lab, " | ".join(cells)))
            row(lab + ", CPU s", sc, "cpu_s")
            row(lab + ", peak RSS MiB", sc, "maxrss_kib", 1024, "%.0f")
            if sc.startswith("incr"):
                row(lab + ": uploaded, MB", sc, "uploaded_bytes", 1e6, "%.2f")
                row(lab + ": uploaded / changed", sc, "ratio", 1, "%.2f")
            if tgt == "s3":
                row(lab + ": s3rver CPU, s", sc, "s3rver_cpu_s")
                row(lab + ": requests (s3rver's count)", sc, "s3rver_requests", 1, "%.0f")
        row("stored after cold push, MB", "cold", "stored_bytes", 1e6, "%.1f")
        row("pull: restore's allocated bytes, MB", "pull", "dest_allocated_bytes", 1e6, "%.1f")
        bg = [s["bg_cpu_frac"] for s in st.samples if s.get("workload") == name
              and s.get("target") == tgt and "bg_cpu_frac" in s]
        if bg:
            L.append("\nOther processes' share of the CPUs during these commands: median %.0f%%, "
                     "max %.0f%%." % (100 * statistics.median(bg), 100 * max(bg)))
    L.append("")
    return L


def scaling_data(res, st):
    """[(size, {series: stats})] from the memory workloads on tmpfs."""
    out = []
    for name, wl in res["workloads"].items():
        if not name.startswith("mem-"):
            continue
        d = {}
        for tool, sc, key, lab in (("snapstream", "cold", "wall_s", "push_s"),
                                   ("snapstream", "pull", "wall_s", "pull_s"),
                                   ("snapstream", "cold", "maxrss_kib", "push_rss"),
                                   ("snapstream", "pull", "maxrss_kib", "pull_rss"),
                                   ("snapstream", "cold", "cpu_s", "push_cpu"),
                                   ("zstd-1", "cold", "wall_s", "zstd_s"),
                                   ("zstd-1", "pull", "wall_s", "zstdd_s"),
                                   ("zstd-1", "cold", "maxrss_kib", "zstd_rss")):
            v = st.get(name, "tmpfs", tool, sc, key)
            if v:
                d[lab] = v
        if "push_s" in d:
            out.append((wl["bytes"], d))
    return sorted(out, key=lambda x: x[0])


def scaling_section(res, st, charts):
    data = scaling_data(res, st)
    if len(data) < 2:
        return []
    L = ["## Scaling with image size\n",
         "Memory-like images (seed 1) on tmpfs, snapstream with its defaults; zstd -1 -T0 as "
         "the reference. Time should grow linearly with the size and peak RSS stay flat. A pull "
         "and `zstd -d` write the whole image into tmpfs: where both grow faster than the size, "
         "the machine's memory is the cause (see 'tmpfs on a VM' in bench/README.md).\n"]
    for k in ("scaling-time", "scaling-rss"):
        if (k,) in charts:
            L.append("![%s](%s)\n" % (k, charts[(k,)]))
    L.append("| image | push, s | push, MB/s | push CPU, s | push peak RSS, MiB | pull, s | "
             "pull peak RSS, MiB | zstd -1, s | zstd -1 peak RSS, MiB | zstd -d, s |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for size, d in data:
        g = d.get
        mb = size / g("push_s")["median"] / 1e6 if g("push_s") else None
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            fmt_size(size) if size % (1 << 20) == 0 else "%.0f MB" % (size / 1e6),
            cell(g("push_s")), fnum(mb, "%.0f"), cell(g("push_cpu")),
            cell(g("push_rss"), 1024, "%.0f"), cell(g("pull_s")), cell(g("pull_rss"), 1024, "%.0f"),
            cell(g("zstd_s")), cell(g("zstd_rss"), 1024, "%.0f"), cell(g("zstdd_s"))))
    (s0, d0), (s1, d1) = data[0], data[-1]
    L.append("")
    for lab, key in (("push", "push_s"), ("pull", "pull_s"), ("zstd -d", "zstdd_s")):
        if key in d0 and key in d1:
            L.append("- %s time, %s / %s: %.2fx for %.0fx the bytes (linear: %.0fx)" % (
                lab, fmt_size(s1), fmt_size(s0), d1[key]["median"] / d0[key]["median"], s1 / s0,
                s1 / s0))
    for lab, key in (("push", "push_rss"), ("pull", "pull_rss")):
        if key in d0 and key in d1:
            L.append("- %s peak RSS, %s / %s: %.2fx (flat: 1.00x; target <= 1.10x)" % (
                lab, fmt_size(s1), fmt_size(s0), d1[key]["max"] / d0[key]["max"]))
    L.append("")
    return L


def threads_section(res, st, charts):
    p = res["primary"]
    rows = []
    for lab, sc1, sc2 in (("push (cold)", "cold-t1", "cold"), ("pull", "pull-t1", "pull")):
        a, b = st.get(p, "tmpfs", "snapstream", sc1), st.get(p, "tmpfs", "snapstream", sc2)
        if a and b:
            rows.append((lab, sc1, sc2, a, b))
    if not rows:
        return []
    L = ["## Worker threads\n",
         "snapstream `--threads 1` against the default (one per online CPU: %d here), %s on tmpfs.\n"
         % (res["machine"]["cores_online"], res["workloads"][p]["title"])]
    if ("threads",) in charts:
        L.append("![threads](%s)\n" % charts[("threads",)])
    L.append("| | 1 thread, s | 1 thread, MB/s | %d threads, s | %d threads, MB/s | speedup |"
             % ((res["machine"]["cores_online"],) * 2))
    L.append("|---|---|---|---|---|---|")
    for lab, sc1, sc2, a, b in rows:
        m1, m2 = st.mbps(p, "tmpfs", "snapstream", sc1), st.mbps(p, "tmpfs", "snapstream", sc2)
        L.append("| %s | %s | %.0f | %s | %.0f | %.2fx |" % (lab, cell(a), m1[0], cell(b), m2[0],
                                                            a["median"] / b["median"]))
    L.append("")
    return L


def fleet_section(res):
    f = res.get("fleet")
    if not f:
        return []
    L = ["## Fleet: concurrent restores through the node cache\n"]
    if f.get("skipped"):
        return L + ["Skipped: %s\n" % f["skipped"]]
    MB = 1e6
    L.append("A %d MiB memory-like golden image and %d actors with %.0f%% of pages dirtied each, "
             "pushed to s3rver with the golden as parent (the bucket: %.1f MB). Bytes: what "
             "s3rver sent in GET response bodies (its own counter); wall: from starting the pulls "
             "to the last one's exit; medians of %d runs (bench/fleet.py).\n"
             % (f["image_bytes"] >> 20, f["actors"], f["dirty"] * 100, f["bucket_bytes"] / MB,
                f["runs"]))
    L.append("| %d concurrent pulls | wall, s | CPU, s: pulls | s3rver | fetched, MB | "
             "fetched / bucket |" % f["actors"])
    L.append("|---|---|---|---|---|---|")
    for mode, lab in (("none", "no cache"), ("cold", "through an empty cache"),
                      ("warm", "through the warm cache")):
        L.append("| %s | %.2f | %.2f | %.2f | %.1f | %.2fx |" % (
            lab, f["%s_wall_s" % mode], f.get("%s_cpu_s" % mode, 0),
            f.get("%s_s3rver_cpu_s" % mode, 0), f["%s_bytes" % mode] / MB,
            f["%s_bytes" % mode] / f["bucket_bytes"]))
    L.append("")
    L.append("- one actor pulled again: %.2f MB fetched" % (f["repull_bytes"] / MB))
    L.append("- an actor restored, its next state pushed with the cache and pulled: %.2f MB "
             "fetched; the same from the golden with a new actor: %.2f MB"
             % (f["pushed_bytes"] / MB, f["pushed_golden_bytes"] / MB))
    L.append("- one restore: local store %.3f s, warm cache (manifest from s3rver) %.3f s, warm "
             "cache in front of the local store %.3f s" % (f["one_local_s"], f["one_cache_s"],
                                                         f["one_local_cache_s"]))
    L.append("")
    L.append("| target | value | limit | met |")
    L.append("|---|---|---|---|")
    for t in f["targets"]:
        L.append("| %s | %.3f %s | %s | %s |" % (t["name"], t["value"], t["unit"], t["limit"],
                                              "yes" if t["ok"] else "**no**"))
    L.append("")
    return L


def keyed_section(res):
    k = res.get("keyed")
    if not k:
        return []
    L = ["## Keyed stores: sealed against plain\n"]
    if k.get("skipped"):
        return L + ["Skipped: %s\n" % k["skipped"]]
    L.append("A %d MiB memory-like image pushed cold into an empty store and pulled back, into a "
             "plain store and into a sealed keyed store (`init --key-file`: every frame, pack "
             "index, index object and manifest encrypted and authenticated), interleaved in one "
             "run; medians of %d runs (bench/keyed.py). CPU: user + system of the command, which "
             "on a shared machine says what wall time would on a quiet one. Stored: %.1f MB plain, "
             "%.1f MB keyed.\n" % (k["image_bytes"] >> 20, k["runs"], k["stored_plain"] / 1e6,
                                   k["stored_keyed"] / 1e6))
    L.append("| | plain wall, s | keyed wall, s | keyed / plain | plain CPU, s | keyed CPU, s | "
             "keyed / plain |")
    L.append("|---|---|---|---|---|---|---|")
    for op in ("push", "pull"):
        L.append("| %s | %.2f | %.2f | %.3fx | %.2f | %.2f | %.3fx |" % (
            op, k["plain_%s_wall_s" % op], k["keyed_%s_wall_s" % op], k["%s_wall_s_ratio" % op],
            k["plain_%s_cpu_s" % op], k["keyed_%s_cpu_s" % op], k["%s_cpu_s_ratio" % op]))
    L.append("")
    L.append("| target | value | limit | met |")
    L.append("|---|---|---|---|")
    for t in k["targets"]:
        L.append("| %s | %.3fx | %.2fx | %s |" % (t["name"], t["value"], t["limit"],
                                                 "yes" if t["ok"] else "**no**"))
    L.append("")
    return L


def ateom_targets(res):
    """The issue's Ateom targets, each on the disk target (where they are
    set) and on tmpfs: [{name, value, target, pass, fmt}]."""
    a = res.get("ateom") or {}
    out = []
    for tgt, t in (a.get("targets") or {}).items():
        st = t["stats"]
        med = lambda k: (st.get(k) or {}).get("median")

        def add(name, value, goal, ok, f):
            if value is not None:
                out.append({"name": "Ateom (%s): %s" % (tgt, name), "value": value,
                            "target": goal, "pass": ok(value), "fmt": f})
        c, rc = med("ateom/checkpoint"), med("runsc/checkpoint")
        add("CheckpointWorkload / runsc checkpoint", c / rc if c and rc else None, "<= 1.6x",
            lambda v: v <= 1.6, "%.2fx")
        r, rr = med("ateom/restore"), med("runsc/restore")
        add("RestoreWorkload / runsc restore", r / rr if r and rr else None, "<= 1.25x",
            lambda v: v <= 1.25, "%.2fx")
        add("second checkpoint stored / first", med("ratio/stored-2"), "<= 0.10",
            lambda v: v <= 0.10, "%.3f")
        f, fa = med("ateom/restore-fetch"), med("fetch-alone/restore")
        add("restore that fetched runsc - restore, s, against the fetch alone (%.2f s)"
            % (fa or 0), f - r if f and r and fa else None, "<= %.2f" % (fa or 0),
            lambda v: v <= (fa or 0), "%.2f")
    return out


def ateom_section(res):
    a = res.get("ateom")
    if not a:
        return []
    L = ["## Ateom round trip against runsc alone\n"]
    if a.get("skipped"):
        L.append("Skipped: %s\n" % a["skipped"])
    if not a.get("targets"):
        return L
    L.append("A busybox gVisor sandbox (ptrace platform, no network) holding %d MiB of random "
             "data in a tmpfs and counting; %d runs per target. Ateom: the gRPC call's wall time "
             "(runsc checkpoint plus the push into a fresh local store; RestoreWorkload: the pull "
             "plus runsc restore, while pulling (the default) or pulling first "
             "(`--no-stream-restore`)). runsc alone: `runsc checkpoint --image-path` / `runsc "
             "restore` to and from the same directory, nothing stored. Work directories, stores "
             "and images are in the target's directory.\n" % (a["mb"], a["runs"]))
    L.append("Own CPU: CPU seconds of the call's own processes (cgroup v1 cpuacct): the server's "
             "group (ateom, the engine's threads, the runsc commands it starts) and the "
             "sandbox's; for runsc alone the runsc command and the sandbox. Machine CPU: every "
             "core's busy time meanwhile (/proc/stat); the difference is other processes' work, "
             "given as their share of all cores (others).\n")
    for tgt, t in a["targets"].items():
        st = t["stats"]
        med = lambda k: (st.get(k) or {}).get("median")
        L.append("### %s (%s, %s)%s\n" % (tgt, t["dir"], t["fs"],
                 ", image %.1f MB" % (t["image_bytes"] / 1e6) if t.get("image_bytes") else ""))
        L.append("| call | s | / runsc alone (per run) | own CPU, s | machine CPU, s | others | "
                 "load1 |")
        L.append("|---|---|---|---|---|---|---|")
        rows = (("ateom/checkpoint", "CheckpointWorkload", "ratio/checkpoint"),
                ("runsc/checkpoint", "runsc checkpoint alone", None),
                ("ateom-nostream/checkpoint", "CheckpointWorkload (second server)", None),
                ("ateom/checkpoint-2", "CheckpointWorkload of the restored sandbox", None),
                ("ateom/restore", "RestoreWorkload, while pulling", "ratio/restore"),
                ("ateom-nostream/restore", "RestoreWorkload, pulled first",
                 "ratio/restore-nostream"),
                ("runsc/restore", "runsc restore alone", None),
                ("ateom/restore-fetch", "RestoreWorkload fetching the checkpoint's runsc", None),
                ("fetch-alone/restore", "`snapstream pull` of that runsc alone", None),
                ("push-after/checkpoint", "`snapstream push` of runsc's image, after it", None),
                ("runsc-idle-spin/checkpoint", "runsc checkpoint beside a SCHED_IDLE spinner",
                 None))
        for k, lab, rk in rows:
            if k not in st:
                continue
            of = st.get(k + "/others_frac")
            L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
                lab, cell(st[k]), rcell(st.get(rk)) if rk else "-", cell(st.get(k + "/own_cpu")),
                cell(st.get(k + "/cpu")), "%.0f%%" % (100 * of["median"]) if of else "-",
                cell(st.get(k + "/load1"))))
        L.append("")
        s1, s2 = st.get("ateom/checkpoint/stored"), st.get("ateom/checkpoint-2/stored")
        if s1 and s2:
            L.append("Stored: the first checkpoint %.1f MB, the second (of the restored sandbox, "
                     "its parent the first) %.2f MB: %s of the first.\n"
                     % (s1["median"] / 1e6, s2["median"] / 1e6, rcell(st.get("ratio/stored-2"),
                                                                         "%.3f")))
        rc, rcpu, acpu = med("runsc/checkpoint"), med("runsc/checkpoint/own_cpu"), \
            med("ateom/checkpoint/own_cpu")
        ncpu = a.get("cores") or os.cpu_count()
        if rc and rcpu and acpu:
            fast = st["runsc/checkpoint"]["min"]
            L.append("CPU budget of the 1.6x checkpoint target: %d cores x 1.6 x %.2f s = %.2f "
                     "CPU-s; CheckpointWorkload used %.2f own CPU-s (runsc checkpoint alone "
                     "%.2f: the push and the server %.2f more), %.0f%% of the budget. With the "
                     "fastest run of runsc alone (%.2f s, the least disturbed) the budget is %.2f "
                     "CPU-s: %.0f%%.\n"
                     % (ncpu, rc, ncpu * 1.6 * rc, acpu, rcpu, acpu - rcpu,
                        100 * acpu / (ncpu * 1.6 * rc), fast, ncpu * 1.6 * fast,
                        100 * acpu / (ncpu * 1.6 * fast)))
        rows = []
        for sc in ("checkpoint", "checkpoint-2", "restore", "restore-fetch"):
            for tool in ("ateom", "ateom-nostream"):
                pre = "%s/%s/phase/" % (tool, sc)
                for k in st:
                    if k.startswith(pre):
                        rows.append("| %s%s | %s | %s |" % (
                            sc, " (pulled first)" if tool != "ateom" else "", k[len(pre):],
                            cell(st[k])))
        if rows:
            L.append("Where the Ateom calls' time goes, as the server logs it (medians, s; "
                     "`push_tail` is the push after runsc exited, `pull` overlaps "
                     "`runsc_restore` when restoring while pulling):\n")
            L += ["| call | phase | s |", "|---|---|---|"] + rows + [""]
    tl = ateom_targets(res)
    if tl:
        L += ["Targets:\n", "| | value | target | |", "|---|---|---|---|"]
        for t in tl:
            L.append("| %s | %s | %s | %s |" % (t["name"], t["fmt"] % t["value"], t["target"],
                                                "ok" if t["pass"] else "**MISSED**"))
        L.append("")
    return L


def targets_section(res, st):
    """The ratios earlier issues set as targets, on the primary workload."""
    p = res["primary"]
    if not p:
        return [], []
    med = lambda tgt, tool, sc, key="wall_s": (st.get(p, tgt, tool, sc, key) or {}).get("median")

    def ratio(a, b):
        return a / b if a and b else None
    out = []

    def add(name, value, goal, ok, f):
        out.append({"name": name, "value": value, "target": goal,
                    "pass": ok(value) if value is not None else None, "fmt": f})
    add("cold push: restic / snapstream", ratio(med("tmpfs", "restic", "cold"),
                                                med("tmpfs", "snapstream", "cold")),
        ">= 6x", lambda v: v >= 6, "%.2fx")
    add("cold push: zstd -1 -T0 / snapstream", ratio(med("tmpfs", "zstd-1", "cold"),
                                                     med("tmpfs", "snapstream", "cold")),
        "> 1x", lambda v: v > 1, "%.2fx")
    add("warm push: restic --force / snapstream", ratio(med("tmpfs", "restic", "warm"),
                                                        med("tmpfs", "snapstream", "warm")),
        ">= 4x", lambda v: v >= 4, "%.2fx")
    add("pull: restic restore / snapstream pull", ratio(med("tmpfs", "restic", "pull"),
                                                        med("tmpfs", "snapstream", "pull")),
        ">= 10x", lambda v: v >= 10, "%.2fx")
    ss = med("tmpfs", "snapstream", "cold", "stored_bytes")
    man = med("tmpfs", "snapstream", "cold", "manifest_bytes") or 0
    add("stored: snapstream (store + manifests) / restic repo",
        ratio((ss or 0) + man if ss else None, med("tmpfs", "restic", "cold", "stored_bytes")),
        "<= 1.00", lambda v: v <= 1, "%.3f")
    add("incremental (1%): snapstream uploaded / changed", med("tmpfs", "snapstream", "incr1", "ratio"),
        "<= 3", lambda v: v <= 3, "%.2f")
    rss = [s["maxrss_kib"] for s in st.samples if s.get("tool") == "snapstream" and "maxrss_kib" in s]
    add("peak RSS: snapstream, any command (MiB)", max(rss) / 1024 if rss else None, "<= 256",
        lambda v: v <= 256, "%.0f")
    add("S3 cold push: aws s3 cp / snapstream", ratio(med("s3", "aws", "cold"),
                                                      med("s3", "snapstream", "cold")),
        ">= 2x", lambda v: v >= 2, "%.2fx")
    add("S3 warm push: aws s3 cp / snapstream", ratio(med("s3", "aws", "cold"),
                                                      med("s3", "snapstream", "warm")),
        ">= 10x", lambda v: v >= 10, "%.2fx")
    add("S3 pull: aws s3 cp / snapstream", ratio(med("s3", "aws", "pull"),
                                                 med("s3", "snapstream", "pull")),
        ">= 2x", lambda v: v >= 2, "%.2fx")
    add("S3 requests per GiB, cold push (s3rver's count)",
        ratio(med("s3", "snapstream", "cold", "s3rver_requests"),
              (st.bytes(p, "s3", "snapstream", "cold") or 0) / GiB), "<= 64", lambda v: v <= 64, "%.1f")
    data = scaling_data(res, st)
    if len(data) >= 2:
        for lab, key in (("push", "push_rss"), ("pull", "pull_rss")):
            a, b = data[0][1].get(key), data[-1][1].get(key)
            add("peak RSS %s: %s / %s" % (lab, fmt_size(data[-1][0]), fmt_size(data[0][0])),
                b["max"] / a["max"] if a and b else None, "<= 1.10", lambda v: v <= 1.10, "%.3f")
    out = [t for t in out if t["value"] is not None]
    L = ["## Targets\n", "Ratios earlier issues set as targets, on %s.\n" % res["workloads"][p]["title"],
         "| ratio | value | target | |", "|---|---|---|---|"]
    for t in out:
        L.append("| %s | %s | %s | %s |" % (t["name"], t["fmt"] % t["value"], t["target"],
                                            "ok" if t["pass"] else "**MISSED**"))
    L.append("")
    return L, out


# ---------------------------------------------------------------- same-run comparisons

def per_run(st, wl, tgt, tool, sc, key="wall_s"):
    """{run: value} of one tool's scenario."""
    return {s["run"]: s[key] for s in st.samples
            if s.get("workload") == wl and s.get("target") == tgt and s.get("tool") == tool
            and s.get("scenario") == sc and s.get(key) is not None}


def run_ratio(a, b):
    """summarize() of a[i] / b[i] over the runs both have: a ratio taken
    within each run, so a drift of the machine between runs cancels."""
    return summarize([a[i] / b[i] for i in sorted(set(a) & set(b)) if b[i]])


def snap_stored(st, wl, tgt="tmpfs"):
    """{run: store + manifests} of snapstream's cold pushes."""
    out = {}
    for s in st.samples:
        if (s.get("workload") == wl and s.get("target") == tgt and s.get("tool") == "snapstream"
                and s.get("scenario") == "cold" and s.get("stored_bytes") is not None):
            out[s["run"]] = s["stored_bytes"] + (s.get("manifest_bytes") or 0)
    return out


def wl_class(name):
    """'memory', 'pages', 'files', 'sparse', 'dense' or None, from the name."""
    kind = name.split("-", 1)[0]
    return {"mem": "memory", "pages": "pages", "files": "files", "sparse": "sparse",
            "dense": "dense"}.get(kind)


def rcell(v, f="%.2fx"):
    """A ratio's median (min-max)."""
    if v is None:
        return "-"
    if v["n"] == 1 or (f % v["min"]) == (f % v["max"]):
        return f % v["median"]
    return (f + " (" + f + "-" + f + ")") % (v["median"], v["min"], v["max"])


def runs_list(d, scale=1024.0, f="%.0f"):
    return ", ".join(f % (d[i] / scale) for i in sorted(d)) or "-"


def samerun_section(res, st):
    """The same-run comparisons: every workload against zstd of the
    same file in the same run, as ratios taken per run."""
    wls = [n for n in res["workloads"] if wl_class(n)]
    if not any(per_run(st, n, "tmpfs", "snapstream", "cold") for n in wls):
        return []
    L = ["## Same-run comparisons\n",
         "On tmpfs. Each ratio is taken within one run (the tools measured back to back on the "
         "same file) and given as the median (min-max) over the runs: push speedup = `zstd -1 "
         "-T0` time / snapstream push time, pull speedup = `zstd -d` time / snapstream pull time "
         "(above 1: snapstream is faster); for a directory the reference is `tar -cf - | zstd -1 "
         "-T0` and `zstd -d | tar -x`. Stored = snapstream's store + manifests after a cold "
         "push, against `zstd -1`'s output and restic's repository.\n"]
    L += ["| workload | snapstream push, s | zstd -1 -T0, s | push speedup | snapstream pull, s "
          "| zstd -d, s | pull speedup | push CPU, s | zstd -1 CPU, s | pull CPU, s | zstd -d CPU, s |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n in wls:
        sp, zp = per_run(st, n, "tmpfs", "snapstream", "cold"), per_run(st, n, "tmpfs", "zstd-1", "cold")
        sl, zl = per_run(st, n, "tmpfs", "snapstream", "pull"), per_run(st, n, "tmpfs", "zstd-1", "pull")
        if not sp or not zp:
            continue
        g = lambda tool, sc, key="wall_s": cell(st.get(n, "tmpfs", tool, sc, key))
        L.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            res["workloads"][n]["title"], g("snapstream", "cold"), g("zstd-1", "cold"),
            rcell(run_ratio(zp, sp)), g("snapstream", "pull"), g("zstd-1", "pull"),
            rcell(run_ratio(zl, sl)), g("snapstream", "cold", "cpu_s"), g("zstd-1", "cold", "cpu_s"),
            g("snapstream", "pull", "cpu_s"), g("zstd-1", "pull", "cpu_s")))
    L += ["", "| workload | snapstream stored, MB | zstd -1, MB | restic, MB | stored / zstd -1 "
          "| stored / restic | next checkpoint: uploaded / changed |", "|---|---|---|---|---|---|---|"]
    for n in wls:
        ss = snap_stored(st, n)
        if not ss:
            continue
        z = per_run(st, n, "tmpfs", "zstd-1", "cold", "stored_bytes")
        r = per_run(st, n, "tmpfs", "restic", "cold", "stored_bytes")
        nx = ["%s %s" % (x["tag"], cell(st.get(n, "tmpfs", "snapstream", x["tag"], "ratio")))
              for x in res["workloads"][n]["nexts"]
              if st.get(n, "tmpfs", "snapstream", x["tag"], "ratio")]
        L.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            res["workloads"][n]["title"], cell(summarize(list(ss.values())), 1e6, "%.1f"),
            cell(summarize(list(z.values())), 1e6, "%.1f"), cell(summarize(list(r.values())), 1e6, "%.1f"),
            rcell(run_ratio(ss, z), "%.3f"), rcell(run_ratio(ss, r), "%.3f"), "; ".join(nx) or "-"))
    L += ["", "Peak RSS per run (MiB; run 1, 2, ...):\n",
          "| workload | push | pull | zstd -1 -T0 | zstd -d |", "|---|---|---|---|---|"]
    for n in wls:
        sp = per_run(st, n, "tmpfs", "snapstream", "cold", "maxrss_kib")
        if not sp:
            continue
        L.append("| %s | %s | %s | %s | %s |" % (
            res["workloads"][n]["title"], runs_list(sp),
            runs_list(per_run(st, n, "tmpfs", "snapstream", "pull", "maxrss_kib")),
            runs_list(per_run(st, n, "tmpfs", "zstd-1", "cold", "maxrss_kib")),
            runs_list(per_run(st, n, "tmpfs", "zstd-1", "pull", "maxrss_kib"))))
    L.append("")
    for n in wls:
        if wl_class(n) != "sparse":
            continue
        info = res["workloads"][n]["info"]
        dense = "dense-" + fmt_size(info["data_bytes"])
        if dense not in res["workloads"]:
            continue
        row = lambda wl, tool, sc, key="wall_s": per_run(st, wl, "tmpfs", tool, sc, key)
        alloc = row(n, "snapstream", "pull", "dest_allocated_bytes")
        L += ["### %s against the same data stored densely\n" % res["workloads"][n]["title"],
              "The sparse file and %s are pushed and pulled alternately in each run; ratio = "
              "sparse / dense time in the same run (1: the holes cost nothing). The source "
              "allocates %.1f MB.\n" % (dense, info["allocated_bytes"] / 1e6),
              "| | sparse, s | dense, s | sparse / dense | zstd -1 -T0 (-d) of the dense file, s |",
              "|---|---|---|---|---|"]
        for lab, sc in (("push", "cold"), ("pull", "pull")):
            L.append("| %s | %s | %s | %s | %s |" % (
                lab, cell(st.get(n, "tmpfs", "snapstream", sc)), cell(st.get(dense, "tmpfs", "snapstream", sc)),
                rcell(run_ratio(row(n, "snapstream", sc), row(dense, "snapstream", sc))),
                cell(st.get(dense, "tmpfs", "zstd-1", sc))))
        if alloc:
            L.append("\nThe pulled file: %s bytes logical, allocated (st_blocks) %s MB per run, "
                     "for %.1f MB of data: allocated / data %s.\n" % (
                         res["workloads"][n]["bytes"], runs_list(alloc, 1e6, "%.1f"),
                         info["data_bytes"] / 1e6,
                         rcell(summarize([v / info["data_bytes"] for v in alloc.values()]), "%.3f")))
    return L


def any_image_targets(res, st):
    """The targets for memory speed on any image, each measured in this
    run: [{name, value, target, pass (None: not measured), fmt, why}]."""
    out = []
    wls = res["workloads"]

    def add(name, value, goal, ok, f, why=None):
        out.append({"name": name, "value": value, "target": goal, "fmt": f, "set": "any image",
                    "pass": ok(value) if value is not None else None, "why": why})

    med = lambda v: v["median"] if v else None
    for cls, lab in (("memory", "memory-like"), ("pages", "page-granular")):
        for size in ("64M", "256M", "1G"):
            n = ("mem-" if cls == "memory" else "pages-") + size
            why = None if n in wls else "not run"
            for what, sc, ref in (("cold push", "cold", "zstd -1 -T0"), ("pull", "pull", "zstd -d")):
                v = run_ratio(per_run(st, n, "tmpfs", "zstd-1", sc), per_run(st, n, "tmpfs", "snapstream", sc))
                add("%s, %s %s: %s / snapstream" % (what, lab, size, ref), med(v), ">= 1.2x",
                    lambda x: x >= 1.2, "%.2fx", why)
    for n in wls:
        ss = snap_stored(st, n)
        if wl_class(n) == "pages":
            add("stored, %s: snapstream / zstd -1" % wls[n]["title"],
                med(run_ratio(ss, per_run(st, n, "tmpfs", "zstd-1", "cold", "stored_bytes"))),
                "<= 0.80", lambda x: x <= 0.8, "%.3f")
    for n in wls:
        r = per_run(st, n, "tmpfs", "restic", "cold", "stored_bytes")
        if r:
            add("stored, %s: snapstream / restic" % wls[n]["title"], med(run_ratio(snap_stored(st, n), r)),
                "<= 1.00", lambda x: x <= 1.0, "%.3f")
    for n in wls:
        if wl_class(n) == "pages":
            for x in wls[n]["nexts"]:
                v = st.get(n, "tmpfs", "snapstream", x["tag"], "ratio")
                add("%s, %s: uploaded / changed bytes" % (wls[n]["title"], x["label"]), med(v),
                    "<= 1.50", lambda y: y <= 1.5, "%.2f")
    files = [n for n in wls if wl_class(n) == "files"]
    for n in files or ["files-2000"]:
        why = None if n in wls else "not run"
        for what, sc, ref in (("push", "cold", "tar \\| zstd -1 -T0"), ("pull", "pull", "zstd -d \\| tar x")):
            v = run_ratio(per_run(st, n, "tmpfs", "zstd-1", sc), per_run(st, n, "tmpfs", "snapstream", sc))
            add("%s, %s: %s / snapstream" % (what, n, ref), med(v), ">= 1.00x", lambda x: x >= 1.0,
                "%.2fx", why)
    sparse = [n for n in wls if wl_class(n) == "sparse"]
    for n in sparse or ["sparse-16G"]:
        why = None if n in wls else "not run"
        info = wls[n]["info"] if n in wls else {"data_bytes": 64 << 20}
        dense = "dense-" + fmt_size(info["data_bytes"])
        for what, sc in (("push", "cold"), ("pull", "pull")):
            v = run_ratio(per_run(st, n, "tmpfs", "snapstream", sc), per_run(st, dense, "tmpfs", "snapstream", sc))
            add("%s, %s: sparse / dense time" % (what, n), med(v), "<= 2.00x", lambda x: x <= 2.0,
                "%.2fx", why)
        alloc = per_run(st, n, "tmpfs", "snapstream", "pull", "dest_allocated_bytes")
        add("pull, %s: allocated / data bytes" % n,
            max(alloc.values()) / info["data_bytes"] if alloc else None, "<= 1.00",
            lambda x: x <= 1.0, "%.3f", why)
    rss = [s["maxrss_kib"] for s in st.samples if s.get("tool") == "snapstream" and "maxrss_kib" in s]
    add("peak RSS, any snapstream command (MiB)", max(rss) / 1024 if rss else None, "<= 256",
        lambda x: x <= 256, "%.0f")
    for cls, pre in (("memory-like", "mem-"), ("page-granular", "pages-")):
        small, big = pre + "64M", pre + "1G"
        why = None if small in wls and big in wls else "needs %s and %s (--full runs both)" % (small, big)
        for what, sc in (("push", "cold"), ("pull", "pull")):
            a = per_run(st, small, "tmpfs", "snapstream", sc, "maxrss_kib")
            b = per_run(st, big, "tmpfs", "snapstream", sc, "maxrss_kib")
            add("peak RSS, %s %s: 64M / 1G" % (cls, what),
                max(a.values()) / max(b.values()) if a and b else None, "<= 0.333",
                lambda x: x <= 1 / 3, "%.3f", why)
    return out


def any_image_section(targets):
    if not targets:
        return []
    L = ["## Targets: memory speed on any image, on any machine\n",
         "Each target against this run's figures (same-run ratios, medians over the runs, "
         "tmpfs). Unmeasured rows say why.\n",
         "| target | value | goal | |", "|---|---|---|---|"]
    for t in targets:
        v = "-" if t["value"] is None else t["fmt"] % t["value"]
        verdict = ("ok" if t["pass"] else "**MISSED**") if t["pass"] is not None else \
            (t["why"] or "not measured")
        L.append("| %s | %s | %s | %s |" % (t["name"], v, t["target"], verdict))
    n_ok = sum(1 for t in targets if t["pass"])
    n_miss = sum(1 for t in targets if t["pass"] is False)
    L.append("\n%d met, %d missed, %d not measured.\n" % (n_ok, n_miss, len(targets) - n_ok - n_miss))
    return L


def markdown(res, st, charts):
    m = res["machine"]
    L = ["# snapstream benchmark: %s mode, %s\n" % (res["mode"], m["date"][:10])]
    L.append("- machine: %s" % machine_line(m))
    if machine_details(m):
        L.append("- machine, more: %s" % machine_details(m))
    L.append("- load: load average %s at the start; other processes' share of the CPUs during "
             "the measured commands: median %.0f%%, max %.0f%% (`bg_cpu_frac` per sample)"
             % (" ".join("%.2f" % x for x in m["loadavg_at_start"]), 100 * res["bg"]["median"],
                100 * res["bg"]["max"]))
    for t in res["targets"].values():
        L.append("- %s" % t)
    L.append("- tools: " + "; ".join("%s: %s" % kv for kv in res["versions"].items()))
    L.append("- harness: bench/ of the tree at %s" % res.get("tree"))
    L.append("- runs: %s; every cell is the median (min-max) over the runs; MB = 10^6 bytes; "
             "MB/s = the image's logical bytes / median wall time; `N.NNx` = the tool's time / "
             "snapstream's (above 1: snapstream is faster)" % res["runs_note"])
    L.append("- took %.0f s (wall) in all\n" % res["elapsed_s"])
    L.append("## Summary\n")
    L += summary_table(res, st)
    L.append("")
    L += samerun_section(res, st)
    L += ateom_section(res)
    L += fleet_section(res)
    L += keyed_section(res)
    L += scaling_section(res, st, charts)
    L += threads_section(res, st, charts)
    L.append("## Workloads\n")
    for name, wl in res["workloads"].items():
        L += workload_section(res, st, name, wl, charts)
    tl, targets = targets_section(res, st)
    L += tl
    t_any = any_image_targets(res, st)
    L += any_image_section(t_any)
    res["target_ratios"] = [{k: v for k, v in t.items() if k != "fmt"}
                            for t in targets + t_any + ateom_targets(res)]
    if res["notes"] or res["failures"]:
        L.append("## Notes\n")
        L += ["- " + n for n in res["notes"]]
        L += ["- FAILED: " + n for n in res["failures"]]
        L.append("")
    return "\n".join(L) + "\n"


def readme_section(res):
    """The top-level README's "Benchmarks" section from a full report."""
    st = Stats(res["samples"])
    if "bg" not in res:
        bg = [x["bg_cpu_frac"] for x in st.samples if "bg_cpu_frac" in x]
        res["bg"] = {"median": statistics.median(bg) if bg else 0, "max": max(bg) if bg else 0}
    m = res["machine"]
    fill = lambda t: textwrap.fill(t, 76, break_on_hyphens=False, break_long_words=False) + "\n"
    L = ["## Benchmarks\n", "```sh",
         "bench/run --quick   # everyday: under two minutes, images included",
         "bench/run --full    # the release figures below (~45 minutes on 2 cores)",
         "```\n",
         fill("A run writes `summary.md`, `results.json` and charts to `bench/reports/DATE-MODE/`; "
         "`bench/README.md` says what each workload, scenario and figure is. The peers are "
         "`zstd -T0` (levels 1 and 3), restic, casync, and on s3rver `aws s3 cp` and "
         "`rclone copyto`, on the same data and target in the same run."),
         fill("Latest full run: %s, on %s; load average %s at the start, other processes' share of "
         "the CPUs during the measured commands median %.0f%%, max %.0f%%; %s. "
         "Each cell: median (min-max) wall time over the runs (%s), throughput (logical image "
         "bytes / median time) and the tool's time / snapstream's. Page cache warm except "
         "where a row says dropped." % (
             m["date"][:10], machine_line(m),
             " ".join("%.2f" % x for x in m["loadavg_at_start"]), 100 * res["bg"]["median"],
             100 * res["bg"]["max"], res["versions"].get("snapstream", "?"), res["runs_note"]))]
    L += summary_table(res, st)
    L.append("")
    a = res.get("ateom") or {}
    x = a.get("stats", {})
    if x.get("ateom/checkpoint") and x.get("runsc/checkpoint"):
        c, rc = x["ateom/checkpoint"]["median"], x["runsc/checkpoint"]["median"]
        r, rr = x["ateom/restore"]["median"], x["runsc/restore"]["median"]
        where = next(iter(a.get("targets") or {}), "tmpfs")
        L.append(fill("Ateom round trip (%d MiB sandbox, %d runs, work dir and store on %s): "
                 "CheckpointWorkload %.2f s against `runsc checkpoint` alone %.2f s (%.2fx); "
                 "RestoreWorkload %.2f s against `runsc restore` alone %.2f s (%.2fx)."
                 % (a["mb"], a["runs"], where, c, rc, c / rc, r, rr, r / rr)))
    data = scaling_data(res, st)
    if len(data) >= 2:
        (s0, d0), (s1, d1) = data[0], data[-1]
        L.append(fill("Scaling, %s to %s: push %.2f s to %.2f s, pull %.2f s to %.2f s (zstd -d of "
                 "the same images: %.2f s to %.2f s); peak RSS push %.0f to %.0f MiB, pull %.0f "
                 "to %.0f MiB." % (
                     fmt_size(s0), fmt_size(s1), d0["push_s"]["median"], d1["push_s"]["median"],
                     d0["pull_s"]["median"], d1["pull_s"]["median"],
                     d0.get("zstdd_s", {}).get("median", 0), d1.get("zstdd_s", {}).get("median", 0),
                     d0["push_rss"]["max"] / 1024, d1["push_rss"]["max"] / 1024,
                     d0["pull_rss"]["max"] / 1024, d1["pull_rss"]["max"] / 1024)))
    return "\n".join(L) + "\n"


def update_readme(path, res):
    """Replace the "## Benchmarks" section of the README at path (up to the
    next "## " heading or the end) with readme_section(res)."""
    with open(path) as f:
        text = f.read()
    start = text.find("\n## Benchmarks\n")
    if start < 0:
        raise ValueError("%s has no '## Benchmarks' section" % path)
    end = text.find("\n## ", start + 1)
    tail = text[end:] if end >= 0 else ""
    with open(path, "w") as f:
        f.write(text[:start + 1] + readme_section(res) + tail)


# ---------------------------------------------------------------- charts

GP_HEAD = """set terminal %s
set output '%s'
set datafile missing '-'
set grid ytics lc rgb '#dddddd'
set border 3
set tics nomirror
"""

TERMS = (("svg", "svg size 960,480 dynamic font 'sans,12' background '#ffffff'"),
         ("png", "pngcairo size 960,480 font 'sans,10'"))


def gnuplot(chart_dir, base, body, data):
    """Write base.dat and base.gp, render base.svg and base.png."""
    dat = os.path.join(chart_dir, base + ".dat")
    with open(dat, "w") as f:
        f.write(data)
    gp = os.path.join(chart_dir, base + ".gp")
    script = ""
    for ext, term in TERMS:
        script += GP_HEAD % (term, base + "." + ext) + body.replace("DATA", "'%s.dat'" % base) + "\n"
    with open(gp, "w") as f:
        f.write(script)
    p = subprocess.run(["gnuplot", base + ".gp"], cwd=chart_dir, capture_output=True, text=True)
    if p.returncode != 0:
        log("gnuplot %s failed: %s" % (base, p.stderr.strip()[-300:]))
        return None
    return base + ".svg"


def q(s):
    return '"%s"' % s.replace('"', "'")


def histogram(title, ylabel, plots, rotate=False):
    """A gnuplot body: clustered bars with min-max error bars."""
    return """set title %s
set style data histograms
set style histogram errorbars gap 1.5 lw 1
set style fill solid 0.85 border -1
set ylabel %s
set yrange [0:*]
set key top right
%splot %s
""" % (q(title), q(ylabel), "set xtics rotate by -25 font ',10'\n" if rotate else "",
       ", \\\n     ".join(plots))


def throughput_chart(chart_dir, res, st, wl, tgt, k):
    tools = tools_in(k["tools"])
    scs = [s for s in sorted(k["scenarios"], key=sc_key) if s != "warm-shortcut"]
    lines = ["# scenario " + " ".join("%s_med %s_lo %s_hi" % (t, t, t) for t in tools)]
    for sc in scs:
        row = [q(scenario_label(sc, res["workloads"][wl]).replace("incremental push", "incr."))]
        for t in tools:
            mb = st.mbps(wl, tgt, t, sc)
            row += ["%.1f %.1f %.1f" % mb if mb else "- - -"]
        lines.append(" ".join(row))
    plots = []
    for j, t in enumerate(tools):
        c = 2 + 3 * j
        plots.append("DATA using %d:%d:%d%s title %s lc rgb '%s'" % (
            c, c + 1, c + 2, ":xtic(1)" if j == 0 else "", q(TOOL_LABEL[t]), TOOL_COLOR[t]))
    body = histogram("%s on %s: throughput per scenario" % (res["workloads"][wl]["title"],
                                                             TARGET_LABEL[tgt]),
                     "MB/s (image bytes / median wall time; bars: min-max)", plots, rotate=True)
    return gnuplot(chart_dir, "throughput-%s-%s" % (wl, tgt), body, "\n".join(lines) + "\n")


def scaling_charts(chart_dir, res, st, charts):
    data = scaling_data(res, st)
    if len(data) < 2:
        return
    series = (("push_s", "snapstream push"), ("pull_s", "snapstream pull"), ("zstd_s", "zstd -1 -T0"),
              ("zstdd_s", "zstd -d (writes the same image)"))
    rss = (("push_rss", "snapstream push"), ("pull_rss", "snapstream pull"), ("zstd_rss", "zstd -1 -T0"))
    for base, ser, ylabel, scale in (("scaling-time", series, "seconds (median; bars: min-max)", 1),
                                     ("scaling-rss", rss, "peak RSS, MiB (median; bars: min-max)", 1024)):
        lines = []
        for size, d in data:
            row = ["%.4f" % (size / GiB)]
            for key, _ in ser:
                v = d.get(key)
                row.append("%.3f %.3f %.3f" % (v["median"] / scale, v["min"] / scale, v["max"] / scale)
                           if v else "- - -")
            lines.append(" ".join(row))
        plots = ["DATA using 1:%d:%d:%d with yerrorlines lw 2 pt 7 title %s" % (2 + 3 * j, 3 + 3 * j,
                                                                                4 + 3 * j, q(lab))
                 for j, (_, lab) in enumerate(ser)]
        body = """set title %s
set xlabel 'image size, GiB'
set ylabel %s
set yrange [0:*]
set xrange [0:*]
set key top left
plot %s
""" % (q("time against image size" if base == "scaling-time" else "peak RSS against image size"),
       q(ylabel), ", \\\n     ".join(plots))
        out = gnuplot(chart_dir, base, body, "\n".join(lines) + "\n")
        if out:
            charts[(base,)] = "charts/" + out


def threads_chart(chart_dir, res, st, charts):
    p = res["primary"]
    lines = []
    for lab, sc1, sc2 in (("push (cold)", "cold-t1", "cold"), ("pull", "pull-t1", "pull")):
        a, b = st.mbps(p, "tmpfs", "snapstream", sc1), st.mbps(p, "tmpfs", "snapstream", sc2)
        if a and b:
            lines.append("%s %.1f %.1f %.1f %.1f %.1f %.1f" % ((q(lab),) + a + b))
    if not lines:
        return
    n = res["machine"]["cores_online"]
    body = histogram("snapstream on %s, tmpfs: worker threads" % res["workloads"][p]["title"],
                     "MB/s (bars: min-max)",
                     ["DATA using 2:3:4:xtic(1) title '--threads 1'",
                      "DATA using 5:6:7 title '%d threads (default)'" % n])
    out = gnuplot(chart_dir, "threads", body, "\n".join(lines) + "\n")
    if out:
        charts[("threads",)] = "charts/" + out


def charts(out_dir, res, st, notes):
    if not shutil.which("gnuplot"):
        notes.append("gnuplot is not installed (scripts/setup.sh installs gnuplot-nox): no charts")
        return {}
    chart_dir = os.path.join(out_dir, "charts")
    os.makedirs(chart_dir, exist_ok=True)
    made = {}
    for (wl, tgt), k in st.keys().items():
        out = throughput_chart(chart_dir, res, st, wl, tgt, k)
        if out:
            made[("throughput", wl, tgt)] = "charts/" + out
    scaling_charts(chart_dir, res, st, made)
    threads_chart(chart_dir, res, st, made)
    return made


def write(out_dir, res):
    """summary.md, results.json, charts/; returns the Markdown."""
    os.makedirs(out_dir, exist_ok=True)
    st = Stats(res["samples"])
    bg = [s["bg_cpu_frac"] for s in st.samples if "bg_cpu_frac" in s]
    # The Ateom round trip's calls say the same as others_frac.
    bg += [s["others_frac"] for s in (res.get("ateom") or {}).get("samples", [])
           if "others_frac" in s]
    res["bg"] = {"median": statistics.median(bg) if bg else 0, "max": max(bg) if bg else 0}
    ch = charts(out_dir, res, st, res["notes"])
    md = markdown(res, st, ch)
    with open(os.path.join(out_dir, "summary.md"), "w") as f:
        f.write(md)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    return md
