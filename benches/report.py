#!/usr/bin/env python3
"""Turns benches/run.sh's raw results (round, contender, metric, value) into the Markdown
report: the median of the rounds with min–max, per contender and metric, the gateway/nginx
ratio and the targets of SPEC §9, the HTTP/2 (h2c) rows when that phase ran, and, when
gateway_redis ran, the cost of sharing the rate limits through Redis next to the local gateway.

usage: report.py RESULTS.tsv META.txt
"""
import statistics
import sys
from collections import defaultdict

CONTENDERS = ["floor", "gateway", "gateway_redis", "nginx"]
HEADINGS = {
    "floor": "floor (mock direct)",
    "gateway": "kwikid-gateway",
    "gateway_redis": "gateway, limits in Redis",
    "nginx": "nginx (1 worker)",
}
# SPEC §9: CPU per request at most 0.9 × nginx's; the goal is 0.8 ×.
CPU_TARGET, CPU_GOAL = 0.9, 0.8


def cpu_target(g, n):
    goal = "met" if g <= CPU_GOAL * n else "not met"
    return (f"≤ {CPU_TARGET} × nginx (goal {CPU_GOAL} ×: {goal})", g <= CPU_TARGET * n)


# metric, label, decimals, target check (gateway median, nginx median) -> (text, ok) or None
METRICS = [
    ("rps", "max requests/s ({conns} keep-alive conns)", 0, None),
    ("p50_ms", "p50 latency at {rate} req/s (ms)", 3, None),
    ("p99_ms", "p99 latency at {rate} req/s (ms)", 3,
     lambda g, n: ("≤ nginx", g <= n)),
    ("cpu_us_max", "proxy CPU-µs per request, at max req/s", 1, cpu_target),
    ("user_us_max", "… of which user space (utime)", 1, None),
    ("faults_per_1k_max", "minor page faults per 1,000 requests, at max req/s", 1, None),
    ("cpu_us_rate", "proxy CPU-µs per request, at {rate} req/s", 1, cpu_target),
    ("peak_rss_mib", "peak RSS under load (MiB)", 1, None),
    ("idle_rss_mib", "RSS with {idle_conns} idle keep-alive callers (MiB)", 1,
     lambda g, n: ("< 20 MiB", g < 20)),
    # h2load over h2c (prior knowledge); run.sh measures it for gateway and nginx only.
    ("h2_rps", "HTTP/2 (h2c) requests/s ({h2_conns} conns × {h2_streams} streams)", 0, None),
    ("h2_cpu_us", "HTTP/2 (h2c) proxy CPU-µs per request", 1, None),
]
H2_METRICS = {"h2_rps", "h2_cpu_us"}
# The target for the shared limits: p99 at the fixed rate within +0.5 ms of local.
REDIS_P99_BUDGET_MS = 0.5


def interleaved_row(w, values, by_round, present, header, meta):
    """run.sh's interleaved phase: the median of the per-pair gateway / nginx ratios, each
    pair two adjacent slices, so a drift of the host's speed hits both sides of a ratio."""
    gateway = by_round.get(("gateway", "cpu_us_pair"), {})
    nginx = by_round.get(("nginx", "cpu_us_pair"), {})
    ratios = [gateway[p] / nginx[p] for p in gateway if nginx.get(p)]
    if not ratios:
        return
    med = statistics.median(ratios)
    row = [f"… interleaved, {len(ratios)} pairs of {meta.get('slice_s', '?')} s slices "
           "(ratio: median of the pairs' ratios)"]
    for who in present:
        vs = values.get((who, "cpu_us_pair"))
        row.append(f"{statistics.median(vs):,.1f} ({min(vs):,.1f}–{max(vs):,.1f})" if vs else "—")
    row.append(f"{med:.2f} ({min(ratios):.2f}–{max(ratios):.2f})")
    row += [""] * (len(header) - len(row) - 1)
    goal = "met" if med <= CPU_GOAL else "not met"
    row.append(f"≤ {CPU_TARGET} × nginx: {'met' if med <= CPU_TARGET else '**not met**'} "
               f"(goal {CPU_GOAL} ×: {goal})")
    w("| " + " | ".join(row) + " |")


def cpu_set(cpu_list):
    """taskset's CPU list ("0", "0,1", "0-3,6") as a set of ints."""
    cpus = set()
    for part in cpu_list.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def main():
    results_path, meta_path = sys.argv[1], sys.argv[2]
    meta = {}
    for line in open(meta_path):
        key, _, value = line.rstrip("\n").partition("=")
        meta[key] = value
    values = defaultdict(list)  # (contender, metric) -> [value per round]
    by_round = defaultdict(dict)  # (contender, metric) -> {round: value}, last one wins
    for line in open(results_path):
        rnd, who, metric, value = line.rstrip("\n").split("\t")
        values[(who, metric)].append(float(value or "nan"))
        by_round[(who, metric)][rnd] = float(value or "nan")
    present = [who for who in CONTENDERS if any(w == who for w, _ in values)]

    def median(who, metric):
        vs = values.get((who, metric))
        return statistics.median(vs) if vs else None

    def cell(who, metric, decimals):
        vs = values.get((who, metric))
        if not vs:
            # The gateway answered no h2c request at all in some round (see run.sh).
            if metric in H2_METRICS and values.get((who, "h2_unsupported")):
                return "h2c not supported"
            return "—"
        fmt = f"{{:,.{decimals}f}}"
        text = fmt.format(statistics.median(vs))
        if len(vs) > 1:
            text += f" ({fmt.format(min(vs))}–{fmt.format(max(vs))})"
        return text

    def ratio(a, b):
        return f"{a / b:.2f}" if a is not None and b not in (None, 0) else "—"

    out = []
    w = out.append
    valid = meta.get("invalid") == "0"
    versus_nginx = "gateway" in present and "nginx" in present
    versus_local = "gateway" in present and "gateway_redis" in present
    w("# kwikid-gateway vs nginx: side-by-side benchmark" if versus_nginx
      else f"# kwikid-gateway benchmark ({', '.join(present)})")
    w("")
    if not valid:
        w("**INVALID RUN: some response was not 200, a connection failed, or Redis did not "
          "decide every gateway_redis request; see run.sh's output.**")
        w("")
    proxy_cpus = int(meta.get("proxy_cpus", "1"))
    cpus = f"CPU {meta['proxy_cpu']}" if proxy_cpus == 1 else f"CPUs {meta['proxy_cpu']}"
    runtime = ("a single-threaded runtime" if proxy_cpus == 1
               else f"{proxy_cpus} runtime workers")
    shared = cpu_set(meta["proxy_cpu"]) & cpu_set(meta["load_cpu"])
    load_where = (f"share CPU(s) {meta['load_cpu']} **with the proxy**" if shared
                  else f"share CPU(s) {meta['load_cpu']}")
    text = (f"Median of {meta['rounds']} rounds (min–max in brackets). Proxy pinned to {cpus} "
            f"({proxy_cpus} CPU{'s' if proxy_cpus > 1 else ''}: the gateway runs {runtime}"
            f"{'; nginx always has one worker' if 'nginx' in present else ''}); "
            f"load generator{',' if 'gateway_redis' in present else ' and'} kwikid-mock (HTTPS upstream)"
            f"{' and redis-server' if 'gateway_redis' in present else ''} {load_where}.")
    if "floor" in present:
        text += (" *floor* is the load generator straight at the mock, so it bounds what any "
                 "proxy can reach here.")
    w(text)
    w("")
    header = ["metric"] + [HEADINGS[who] for who in present]
    if versus_nginx:
        header.append("gateway / nginx")
    if versus_local:
        header.append("redis / local")
    if versus_nginx:
        header.append("target (SPEC §9)")
    w("| " + " | ".join(header) + " |")
    w("|---|" + "---:|" * (len(header) - 1 - versus_nginx) + ("---|" if versus_nginx else ""))
    h2_ran = any(m in H2_METRICS or m == "h2_unsupported" for _, m in values)
    for metric, label, decimals, target in METRICS:
        if metric in H2_METRICS and not h2_ran:
            continue
        row = [label.format(**meta)] + [cell(who, metric, decimals) for who in present]
        g, n, r = median("gateway", metric), median("nginx", metric), median("gateway_redis", metric)
        if versus_nginx:
            row.append(ratio(g, n))
        if versus_local:
            row.append(ratio(r, g))
        if versus_nginx:
            check = ""
            if target and g is not None and n is not None:
                text, ok = target(g, n)
                head, _, note = text.partition(" (")
                check = f"{head}: {'met' if ok else '**not met**'}" + (f" ({note}" if note else "")
            row.append(check)
        w("| " + " | ".join(row) + " |")
        if metric == "cpu_us_max" and versus_nginx:
            interleaved_row(w, values, by_round, present, header, meta)
    if "gateway_redis" in present:
        row = ["redis-server CPU-µs per request, max req/s / {rate} req/s (not the proxy's)"
               .format(**meta)]
        for who in present:
            row.append(f"{cell(who, 'redis_cpu_us_max', 1)} / {cell(who, 'redis_cpu_us_rate', 1)}"
                       if who == "gateway_redis" else "—")
        row += [""] * (len(header) - len(row))
        w("| " + " | ".join(row) + " |")
    if any(m == "steal_pct_max" for _, m in values):
        # The host's share, not the proxy's: no ratio, no target; it says how far to trust
        # the rows above (a round whose CPUs were partly given to other guests runs slower).
        row = ["host CPU steal, max req/s / {rate} req/s (% of all CPUs' time)".format(**meta)]
        row += [f"{cell(who, 'steal_pct_max', 1)} / {cell(who, 'steal_pct_rate', 1)}"
                for who in present]
        row += [""] * (len(header) - len(row))
        w("| " + " | ".join(row) + " |")
    bad = {who: int(sum(values.get((who, "non200"), [])) + sum(values.get((who, "socket_errors"), [])))
           for who in present}
    row = ["non-200 answers + socket errors (all phases, summed)"] + [str(bad[who]) for who in present]
    row += [""] * (len(header) - len(row) - versus_nginx) + (["must be 0"] if versus_nginx else [])
    w("| " + " | ".join(row) + " |")
    if "gateway_redis" in present:
        # Cumulative per gateway process, one process per round: the last reading of a round.
        errors = int(sum(by_round[("gateway_redis", "redis_errors")].values()))
        unchecked = int(sum(by_round[("gateway_redis", "redis_unchecked")].values()))
        row = ["Redis errors / requests not decided by Redis (gateway_redis, /metrics)"]
        row += [f"{errors} / {unchecked}" if who == "gateway_redis" else "" for who in present]
        row += [""] * (len(header) - len(row) - versus_nginx) + (["must be 0"] if versus_nginx else [])
        w("| " + " | ".join(row) + " |")
    w("")

    if versus_local:
        w("## Rate limits shared through Redis: cost next to local limits")
        w("")
        w("The same gateway and config, plus `[rate_limit] backend = \"redis\"` (one "
          "redis-server for the run, unix socket, no persistence, `redis_timeout = \"1s\"`, "
          "`on_redis_error = \"local\"`), limits still far above the offered load. One Redis "
          "round trip (an `EVALSHA`) per request; after every phase run.sh reads the gateway's "
          "/metrics and marks the run INVALID unless `rate_limit_backend{backend=\"redis\"}` "
          "is 1, `redis_errors_total` is 0 and the Redis round trips are at least the requests "
          "answered.")
        w("")
        w("| | local limits | limits in Redis | redis / local | difference | target |")
        w("|---|---:|---:|---:|---:|---|")
        rows = [
            ("p99_ms", "p99 latency at {rate} req/s (ms)", 3, " ms"),
            ("p50_ms", "p50 latency at {rate} req/s (ms)", 3, " ms"),
            ("cpu_us_max", "proxy CPU-µs per request, at max req/s", 1, " µs"),
            ("cpu_us_rate", "proxy CPU-µs per request, at {rate} req/s", 1, " µs"),
            ("rps", "max requests/s", 0, ""),
        ]
        for metric, label, decimals, unit in rows:
            g, r = median("gateway", metric), median("gateway_redis", metric)
            diff = f"{r - g:+,.{decimals}f}{unit}" if g is not None and r is not None else "—"
            check = ""
            if metric == "p99_ms" and g is not None and r is not None:
                # Paired per round too: both ran in the same round, minutes apart at most.
                rounds = sorted(set(by_round[("gateway", metric)]) & set(by_round[("gateway_redis", metric)]))
                paired = ", ".join(f"{by_round[('gateway_redis', metric)][k] - by_round[('gateway', metric)][k]:+.3f}"
                                   for k in rounds)
                diff += f" (per round {paired})" if len(rounds) > 1 else ""
                ok = r - g <= REDIS_P99_BUDGET_MS
                check = f"≤ +{REDIS_P99_BUDGET_MS} ms of local: {'met' if ok else '**not met**'}"
            w(f"| {label.format(**meta)} | {cell('gateway', metric, decimals)} | "
              f"{cell('gateway_redis', metric, decimals)} | {ratio(r, g)} | {diff} | {check} |")
        w(f"| redis-server CPU-µs per request, at max req/s | — | "
          f"{cell('gateway_redis', 'redis_cpu_us_max', 1)} | | | |")
        w(f"| redis-server CPU-µs per request, at {meta['rate']} req/s | — | "
          f"{cell('gateway_redis', 'redis_cpu_us_rate', 1)} | | | |")
        w("")
        w("redis-server's CPU (utime+stime of its process over the phase ÷ requests) is not in "
          "the proxy's column: it runs on the load CPU, and in production on another host.")
        w("")

    w("How measured: max requests/s with `wrk -t1 -c{conns} -d{duration_s}s` (a Lua `response()` "
      "counts every non-200); latency with `oha -q {rate} -c {conns} -z {rate_duration_s}s "
      "--latency-correction` (fixed rate, coordinated-omission corrected); CPU-µs per request = "
      "utime+stime delta of the proxy (nginx: master + worker) from /proc/PID/stat over the "
      "phase ÷ requests completed; peak RSS = VmHWM after the load phases (nginx: the worker); "
      "idle RSS = VmRSS with {idle_conns} caller connections open, each having completed one "
      "request. Access logs on for both. Host CPU steal = the `steal` ticks of /proc/stat over "
      "the phase, all CPUs, as a share of their time: on a virtual machine whose host is busy, "
      "a round with much of it ran slower and costlier for reasons outside the proxy."
      .format(**meta))
    w("")
    if h2_ran:
        w("HTTP/2 rows: h2c with prior knowledge (gateway: its proxy listener; nginx: a second "
          "`http2` listener of the same server, so the same job), `h2load -n {h2_requests} "
          "-c {h2_conns} -m {h2_streams}` POSTing the same body with the same headers "
          "(requests/s as h2load gives it, over its whole run, connection set-up "
          "included); CPU-µs per request as above, over the h2load run ÷ requests answered. "
          "Measured last for each proxy, after the idle callers have gone, so neither RSS "
          "figure holds what HTTP/2 allocated. *h2c not supported*: no h2c request got an "
          "answer.".format(**meta))
        w("")
    versions = f"kwikid-gateway {meta['gateway']}"
    if "nginx" in present:
        versions += f", {meta['nginx']}"
    if "redis" in meta:
        versions += f", redis-server {meta['redis']}"
    versions += f", wrk {meta['wrk']}, oha {meta['oha']}"
    if "h2load" in meta:
        versions += f", h2load {meta['h2load']}"
    if "code_layout" in meta:
        versions += (f"; the gateway binary has {meta['code_layout']} of "
                     "link/kwikid-gateway.order placed first (build.rs)")
    w(f"Machine: {meta['cpu']}, Linux {meta['kernel']}. Versions: {versions}. "
      f"Contenders: {meta.get('contenders', ' '.join(present))}. "
      f"Run {meta['date']}, {meta['elapsed_s']} s. Load average before the run "
      f"{meta['loadavg_start']} (1/5/15 min; well above 0 means other work was sharing the "
      f"CPUs), at the end {meta['loadavg_end']} (the benchmark itself accounts for ~1.5).")
    print("\n".join(out))


if __name__ == "__main__":
    main()
