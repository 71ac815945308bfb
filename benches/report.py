#!/usr/bin/env python3
"""Turns benches/run.sh's raw results (round, contender, metric, value) into the Markdown
report: the median of the rounds with min–max, per contender and metric, the gateway/nginx
ratio, and the targets of SPEC §9.

usage: report.py RESULTS.tsv META.txt
"""
import statistics
import sys
from collections import defaultdict

CONTENDERS = ["floor", "gateway", "nginx"]
# metric, label, decimals, target check (gateway median, nginx median) -> (text, ok) or None
METRICS = [
    ("rps", "max requests/s ({conns} keep-alive conns)", 0, None),
    ("p50_ms", "p50 latency at {rate} req/s (ms)", 3, None),
    ("p99_ms", "p99 latency at {rate} req/s (ms)", 3,
     lambda g, n: ("≤ nginx", g <= n)),
    ("cpu_us_max", "proxy CPU-µs per request, at max req/s", 1,
     lambda g, n: ("≤ 0.8 × nginx", g <= 0.8 * n)),
    ("cpu_us_rate", "proxy CPU-µs per request, at {rate} req/s", 1,
     lambda g, n: ("≤ 0.8 × nginx", g <= 0.8 * n)),
    ("peak_rss_mib", "peak RSS under load (MiB)", 1, None),
    ("idle_rss_mib", "RSS with {idle_conns} idle keep-alive callers (MiB)", 1,
     lambda g, n: ("< 20 MiB", g < 20)),
]


def main():
    results_path, meta_path = sys.argv[1], sys.argv[2]
    meta = {}
    for line in open(meta_path):
        key, _, value = line.rstrip("\n").partition("=")
        meta[key] = value
    values = defaultdict(list)  # (contender, metric) -> [value per round]
    for line in open(results_path):
        rnd, who, metric, value = line.rstrip("\n").split("\t")
        values[(who, metric)].append(float(value or "nan"))

    def cell(who, metric, decimals):
        vs = values.get((who, metric))
        if not vs:
            return "—", None
        med = statistics.median(vs)
        fmt = f"{{:,.{decimals}f}}"
        text = fmt.format(med)
        if len(vs) > 1:
            text += f" ({fmt.format(min(vs))}–{fmt.format(max(vs))})"
        return text, med

    out = []
    w = out.append
    valid = meta.get("invalid") == "0"
    w("# kwikid-gateway vs nginx: side-by-side benchmark")
    w("")
    if not valid:
        w("**INVALID RUN: some response was not 200 or a connection failed; see below.**")
        w("")
    w(f"Median of {meta['rounds']} rounds (min–max in brackets). Proxy pinned to CPU "
      f"{meta['proxy_cpu']}; load generator and kwikid-mock (HTTPS upstream) share CPU "
      f"{meta['load_cpu']}. *floor* is the load generator straight at the mock, so it bounds "
      f"what any proxy can reach here.")
    w("")
    w("| metric | floor (mock direct) | kwikid-gateway | nginx (1 worker) "
      "| gateway / nginx | target (SPEC §9) |")
    w("|---|---:|---:|---:|---:|---|")
    for metric, label, decimals, target in METRICS:
        label = label.format(**meta)
        cells, med = [], {}
        for who in CONTENDERS:
            text, m = cell(who, metric, decimals)
            cells.append(text)
            med[who] = m
        g, n = med["gateway"], med["nginx"]
        ratio = f"{g / n:.2f}" if g is not None and n not in (None, 0) else "—"
        check = ""
        if target and g is not None and n is not None:
            text, ok = target(g, n)
            check = f"{text}: {'met' if ok else '**not met**'}"
        w(f"| {label} | {' | '.join(cells)} | {ratio} | {check} |")
    bad = {who: int(sum(values.get((who, "non200"), [])) + sum(values.get((who, "socket_errors"), [])))
           for who in CONTENDERS}
    w(f"| non-200 answers + socket errors (all phases, summed) | "
      f"{' | '.join(str(bad[who]) for who in CONTENDERS)} | | must be 0 |")
    w("")
    w("How measured: max requests/s with `wrk -t1 -c{conns} -d{duration_s}s` (a Lua `response()` "
      "counts every non-200); latency with `oha -q {rate} -c {conns} -z {rate_duration_s}s "
      "--latency-correction` (fixed rate, coordinated-omission corrected); CPU-µs per request = "
      "utime+stime delta of the proxy (nginx: master + worker) from /proc/PID/stat over the "
      "phase ÷ requests completed; peak RSS = VmHWM after the load phases (nginx: the worker); "
      "idle RSS = VmRSS with {idle_conns} caller connections open, each having completed one "
      "request. Access logs on for both.".format(**meta))
    w("")
    w(f"Machine: {meta['cpu']}, Linux {meta['kernel']}. Versions: kwikid-gateway "
      f"{meta['gateway']}, {meta['nginx']}, wrk {meta['wrk']}, oha {meta['oha']}. "
      f"Run {meta['date']}, {meta['elapsed_s']} s. Load average before the run "
      f"{meta['loadavg_start']} (1/5/15 min; well above 0 means other work was sharing the "
      f"CPUs), at the end {meta['loadavg_end']} (the benchmark itself accounts for ~1.5).")
    print("\n".join(out))


if __name__ == "__main__":
    main()
