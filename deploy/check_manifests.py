#!/usr/bin/env python3
"""Cross-checks of deploy/ that no schema can see, for deploy/check.sh.

  check_manifests.py assert DEPLOY_DIR
      One line per check ("ok   ..." or "FAIL ...: why"); exit 1 if any failed. Checks that the
      Deployment, HorizontalPodAutoscaler, Service, NetworkPolicy, PodDisruptionBudget,
      ConfigMap, example Secrets, Dockerfile and systemd unit agree with each other: ports,
      probe paths, mount paths, the token and Redis URL paths, replica counts, shutdown budgets,
      hardening. Twice: for the default manifests (kubernetes/*.yaml: one replica, local
      limits, no Redis) and for the shared-limits variant (the same with kubernetes/redis/*.yaml
      replacing the objects of the same kind and name).

  check_manifests.py backend SOURCE
      Prints the config's [rate_limit] backend ("local" or "redis").

  check_manifests.py render SOURCE OUT TOKEN_FILE [REDIS_URL_FILE]
      Writes the gateway config found in SOURCE (a config.toml, or a ConfigMap YAML holding
      one under config.toml) to OUT, with [token] file rewritten to TOKEN_FILE (and a
      [rate_limit] redis_url_file to REDIS_URL_FILE, or a redis_url to the URL that file holds)
      so that `kwikid-gateway check` can run here. Prints "file" or "env NAME" (the token source).

Needs Python >= 3.11 (tomllib) and PyYAML (a dependency of kubernetes-validate).
"""

import glob
import os
import re
import sys
import tomllib
from urllib.parse import urlsplit

import yaml

FAILED = []


def check(name, fn):
    """Runs one check; fn returns None on success, or raises/returns a reason string."""
    try:
        reason = fn()
    except Exception as e:  # a missing key is a failed check, not a crash
        reason = f"{type(e).__name__}: {e}"
    if reason:
        FAILED.append(name)
        print(f"FAIL {name}: {reason}")
    else:
        print(f"ok   {name}")


def seconds(duration):
    """A humantime duration as used in config.toml ("250ms", "5s", "1m") in seconds."""
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h)", duration):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    if total == 0 and duration.strip() not in ("0s", "0ms", "0"):
        raise ValueError(f"cannot parse duration {duration!r}")
    return total


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


VARIANTS = ("default", "redis")


def load_manifests(deploy, variant):
    """The objects `kubectl apply` makes of the variant: the default files, then (for "redis")
    kubernetes/redis/*.yaml, whose objects replace those of the same kind and name."""
    files = sorted(glob.glob(os.path.join(deploy, "kubernetes", "*.yaml")))
    files += sorted(glob.glob(os.path.join(deploy, "kubernetes", "examples", "*.yaml")))
    if variant == "redis":
        files += sorted(glob.glob(os.path.join(deploy, "kubernetes", "redis", "*.yaml")))
    objects = {}
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    objects[(doc["kind"], doc["metadata"]["name"])] = doc
    docs = {}
    for (kind, _), doc in objects.items():
        docs.setdefault(kind, []).append(doc)
    return {kind: items[0] if len(items) == 1 else items for kind, items in docs.items()}


def parse_unit(path):
    """A systemd unit as {key: [values]} (keys repeat, e.g. SystemCallFilter=)."""
    unit = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;[":
                continue
            key, _, value = line.partition("=")
            unit.setdefault(key.strip(), []).append(value.strip())
    return unit


def dockerfile_final_stage(path):
    """The instructions of the Dockerfile's last stage as (INSTRUCTION, rest) pairs."""
    with open(path) as f:
        text = re.sub(r"\\\n", " ", f.read())
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    last_from = max(i for i, l in enumerate(lines) if l.upper().startswith("FROM "))
    return [tuple((l.split(None, 1) + [""])[:2]) for l in lines[last_from:]], text


def as_list(docs):
    return docs if isinstance(docs, list) else [docs]


def run_asserts(deploy):
    containers = {variant: k8s_asserts(deploy, variant) for variant in VARIANTS}
    other_asserts(deploy, containers["default"])
    return 1 if FAILED else 0


def k8s_asserts(deploy, variant):
    """The manifests' checks for one variant; returns the gateway container."""
    k = load_manifests(deploy, variant)
    shared = variant == "redis"
    dep, svc, cm = k["Deployment"], k["Service"], k["ConfigMap"]
    netpol, pdb, hpa = k["NetworkPolicy"], k["PodDisruptionBudget"], k.get("HorizontalPodAutoscaler")

    def check(name, fn):
        # The module's check, with the variant in the name.
        globals()["check"](name.replace("k8s ", f"k8s[{variant}] ", 1), fn)

    secrets = {s["metadata"]["name"]: s for s in as_list(k["Secret"])}
    pod = dep["spec"]["template"]["spec"]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    (ctr,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    cfg = tomllib.loads(cm["data"]["config.toml"])
    mounts = {m["name"]: m for m in ctr["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def resolve(port):
        return ports[port] if isinstance(port, str) else port

    def selects(selector):
        return all(pod_labels.get(key) == v for key, v in selector["matchLabels"].items())

    def cfg_ports():
        if (port_of(cfg["listen"]["addr"]), port_of(cfg["admin"]["addr"])) != (8080, 9090):
            return f"listen {cfg['listen']['addr']}, admin {cfg['admin']['addr']}"
        if not cfg["listen"]["addr"].startswith("0.0.0.0:") or not cfg["admin"]["addr"].startswith("0.0.0.0:"):
            return "listen/admin must bind 0.0.0.0 in a pod"

    check("k8s ConfigMap config.toml: listen 0.0.0.0:8080, admin 0.0.0.0:9090", cfg_ports)

    def container_ports():
        want = {"proxy": port_of(cfg["listen"]["addr"]), "metrics": port_of(cfg["admin"]["addr"])}
        if ports != want:
            return f"containerPorts {ports} != ConfigMap {want}"

    check("k8s containerPorts proxy=8080 metrics=9090 match ConfigMap listen/admin", container_ports)

    def probes():
        live, ready = ctr["livenessProbe"]["httpGet"], ctr["readinessProbe"]["httpGet"]
        got = (live["path"], resolve(live["port"]), ready["path"], resolve(ready["port"]))
        if got != ("/healthz", 9090, "/readyz", 9090):
            return f"liveness {got[0]}:{got[1]}, readiness {got[2]}:{got[3]}"

    check("k8s probes: liveness GET /healthz, readiness GET /readyz, on 9090", probes)

    def service():
        if svc["spec"].get("type", "ClusterIP") != "ClusterIP":
            return "not ClusterIP"
        if not all(pod_labels.get(k2) == v for k2, v in svc["spec"]["selector"].items()):
            return "selector does not match the pod labels"
        got = {p["name"]: (p["port"], resolve(p["targetPort"])) for p in svc["spec"]["ports"]}
        if got != {"proxy": (8080, ports["proxy"]), "metrics": (9090, ports["metrics"])}:
            return f"ports {got}"

    check("k8s Service: ClusterIP, proxy 8080 and metrics 9090 -> the containerPorts", service)

    def secret_mount(volume, path):
        """The Secret volume `volume` is a directory mount (no subPath) at dirname(path), and an
        example Secret of that name provides the file basename(path)."""
        mount = mounts[volume]
        if "subPath" in mount or "subPathExpr" in mount:
            return "subPath mounts are never updated: a changed Secret would not reach the pod"
        if mount["mountPath"].rstrip("/") != os.path.dirname(path):
            return f"mounted at {mount['mountPath']}, the config names {path}"
        vol = volumes[volume]["secret"]
        example = secrets.get(vol["secretName"])
        if example is None:
            return f"no example Secret {vol['secretName']} in kubernetes/examples/"
        paths = {i["path"]: i["key"] for i in vol.get("items", [])} or {key: key for key in example["stringData"]}
        key = paths.get(os.path.basename(path))
        if key not in example["stringData"]:
            return f"Secret {vol['secretName']} key {key} does not provide {os.path.basename(path)}"

    def token_mount():
        if "env" in cfg["token"]:
            return "token.env set too"
        return secret_mount("token", cfg["token"]["file"])

    check("k8s Secret volume (no subPath) mounted where ConfigMap token.file points", token_mount)

    rl = cfg["rate_limit"]

    def local_config():
        if rl.get("backend", "local") != "local" or "redis_url" in rl or "redis_url_file" in rl:
            return f"backend {rl.get('backend')!r}: one replica keeps its limits in memory, no Redis"
        if (rl["global"], rl["per_caller"]) != ({"per_second": 20, "burst": 40}, {"per_second": 5, "burst": 10}):
            return f"global {rl['global']}, per_caller {rl['per_caller']}"

    def redis_config():
        if rl.get("backend") != "redis":
            return f"backend {rl.get('backend')!r}: the replicas must share their limits"
        if "redis_url" in rl or "redis_url_file" not in rl:
            return "the URL (it may hold a password) must come from redis_url_file, not redis_url"
        if rl.get("on_redis_error", "local") not in ("local", "allow", "deny"):
            return f"on_redis_error {rl.get('on_redis_error')!r}"
        if (rl["global"], rl["per_caller"]) != ({"per_second": 20, "burst": 40}, {"per_second": 5, "burst": 10}):
            return f"global {rl['global']}, per_caller {rl['per_caller']}: the account's rates, not divided per pod"

    def redis_mount():
        return secret_mount("redis", rl["redis_url_file"])

    def no_redis_mount():
        if "redis" in mounts or "redis" in volumes:
            return "a Redis Secret volume, but the limits are local"

    if shared:
        check("k8s ConfigMap rate_limit: backend redis, redis_url_file, account-wide rates 20/s burst 40", redis_config)
        check("k8s Redis Secret volume (no subPath) mounted where ConfigMap redis_url_file points", redis_mount)
    else:
        check("k8s ConfigMap rate_limit: backend local (no Redis), rates 20/s burst 40", local_config)
        check("k8s no Redis Secret volume (the pod starts without one)", no_redis_mount)

    def config_mount():
        conf = ctr["args"][ctr["args"].index("--config") + 1]
        vol = volumes["config"]["configMap"]
        paths = {i["path"]: i["key"] for i in vol.get("items", [])} or {"config.toml": "config.toml"}
        if mounts["config"]["mountPath"].rstrip("/") != os.path.dirname(conf):
            return f"ConfigMap mounted at {mounts['config']['mountPath']}, --config is {conf}"
        if vol["name"] != cm["metadata"]["name"] or paths.get(os.path.basename(conf)) != "config.toml":
            return "the ConfigMap volume does not provide the --config file"

    check("k8s ConfigMap mounted where --config points", config_mount)

    def security():
        psc, csc = pod["securityContext"], ctr["securityContext"]
        wanted = {
            "runAsNonRoot": (csc.get("runAsNonRoot", psc.get("runAsNonRoot")), True),
            "runAsUser": (csc.get("runAsUser", psc.get("runAsUser")), 65532),
            "readOnlyRootFilesystem": (csc.get("readOnlyRootFilesystem"), True),
            "allowPrivilegeEscalation": (csc.get("allowPrivilegeEscalation"), False),
            "capabilities.drop": (csc.get("capabilities", {}).get("drop"), ["ALL"]),
            "seccompProfile": (csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type"), "RuntimeDefault"),
            "automountServiceAccountToken": (pod.get("automountServiceAccountToken"), False),
        }
        bad = [f"{key}={got!r}" for key, (got, want) in wanted.items() if got != want]
        return ", ".join(bad)

    check("k8s securityContext: non-root 65532, read-only root, no escalation, drop ALL, RuntimeDefault", security)

    def shutdown_budget():
        grace = seconds(cfg["listen"].get("shutdown_grace", "30s"))
        sleep = ctr.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        term = pod["terminationGracePeriodSeconds"]
        # The gateway's drain takes up to 2 s past the grace to write its 503s.
        if not term > sleep + grace + 2:
            return f"terminationGracePeriodSeconds {term} <= preStop {sleep}s + shutdown_grace {grace}s + 2s"

    check("k8s terminationGracePeriodSeconds > preStop sleep + listen.shutdown_grace + 2s", shutdown_budget)

    replicas = 2 if shared else 1

    def sizing():
        res = ctr["resources"]
        got = (dep["spec"]["replicas"], res["requests"].get("cpu"), res["requests"].get("memory"),
               res["limits"].get("memory"))
        if got != (replicas, "100m", "32Mi", "128Mi"):
            return f"replicas/cpu/memory/limit = {got}"

    check(f"k8s replicas {replicas}, requests cpu 100m memory 32Mi, limit memory 128Mi", sizing)

    def autoscaler():
        spec = hpa["spec"]
        ref = spec["scaleTargetRef"]
        if (ref["apiVersion"], ref["kind"], ref["name"]) != ("apps/v1", "Deployment", dep["metadata"]["name"]):
            return f"scaleTargetRef {ref}"
        lo, hi = spec.get("minReplicas", 1), spec["maxReplicas"]
        if not 2 <= lo <= dep["spec"]["replicas"] <= hi:
            return f"want 2 <= minReplicas {lo} <= Deployment replicas {dep['spec']['replicas']} <= maxReplicas {hi}"
        for metric in spec["metrics"]:
            if metric["type"] == "Resource" and metric["resource"]["target"]["type"] == "Utilization":
                name = metric["resource"]["name"]
                if not ctr["resources"].get("requests", {}).get(name):
                    return f"{name} Utilization needs a {name} request on the container"
        if not any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in spec["metrics"]):
            return "no CPU metric"

    def no_autoscaler():
        if hpa is not None:
            return "an HPA would add replicas that each admit the full rate"

    if shared:
        check("k8s HPA: targets the Deployment, 2 <= minReplicas <= replicas <= max, CPU request present", autoscaler)
    else:
        check("k8s no HorizontalPodAutoscaler (local limits: one replica)", no_autoscaler)

    def anti_affinity():
        terms = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        if not any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
                   and selects(t["podAffinityTerm"]["labelSelector"]) for t in terms):
            return "no preferred anti-affinity on kubernetes.io/hostname selecting the pods"
        if "requiredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]:
            return "required anti-affinity would leave pods beyond the node count Pending"
        for tsc in pod.get("topologySpreadConstraints", []):
            if tsc["topologyKey"] == "kubernetes.io/hostname" and (
                    tsc["whenUnsatisfiable"] != "ScheduleAnyway" or not selects(tsc["labelSelector"])):
                return "the hostname topologySpreadConstraint must be ScheduleAnyway and select the pods"

    check("k8s pods spread across nodes: preferred anti-affinity + soft topology spread on hostname", anti_affinity)

    def no_redis_server():
        workloads = [d for kind in ("Deployment", "StatefulSet", "DaemonSet", "Pod", "Job")
                     for d in as_list(k.get(kind, []))]
        if len(workloads) != 1:
            return f"{len(workloads)} workloads; only the gateway's Deployment belongs here"
        images = [c["image"] for c in pod["containers"] + pod.get("initContainers", [])]
        if any("redis" in image or "valkey" in image for image in images):
            return f"images {images}"

    check("k8s manifests ship no Redis server (the team's own is used)", no_redis_server)

    def scrape():
        ann = dep["spec"]["template"]["metadata"].get("annotations", {})
        if (ann.get("prometheus.io/scrape"), ann.get("prometheus.io/port"), ann.get("prometheus.io/path")) != (
                "true", str(ports["metrics"]), "/metrics"):
            return f"annotations {ann}"

    check("k8s Prometheus scrape annotations point at metrics:9090/metrics", scrape)

    def network_policy():
        spec = netpol["spec"]
        if not selects(spec["podSelector"]) or set(spec["policyTypes"]) != {"Ingress", "Egress"}:
            return "does not select the pods for Ingress and Egress"
        rules = {}
        for rule in spec["ingress"]:
            labels = [tuple(sorted(f["namespaceSelector"]["matchLabels"].items())) for f in rule["from"]]
            for port in rule["ports"]:
                rules[resolve(port["port"])] = labels
        if rules != {8080: [(("kwikid-gateway/caller", "true"),)],
                     9090: [(("kwikid-gateway/monitoring", "true"),)]}:
            return f"ingress {rules}"
        egress = sorted((p["protocol"], p["port"]) for r in spec["egress"] for p in r["ports"])
        if not shared:
            if egress != [("TCP", 53), ("TCP", 443), ("UDP", 53)]:
                return f"egress {egress}"
            return None
        if egress != [("TCP", 53), ("TCP", 443), ("TCP", 6379), ("TCP", 6380), ("UDP", 53)]:
            return f"egress {egress}"
        url = secrets["kwikid-gateway-redis"]["stringData"]["url"]
        port = urlsplit(url).port or (6380 if url.startswith("rediss://") else 6379)
        if ("TCP", port) not in egress:
            return f"the example Redis URL's port {port} is not allowed out"

    check("k8s NetworkPolicy: 8080 from callers, 9090 from monitoring, egress DNS + 443"
          + (" + Redis 6379/6380" if shared else ""), network_policy)

    def single_disruption_budget():
        if pdb["spec"].get("maxUnavailable") != 1 or "minAvailable" in pdb["spec"] or not selects(pdb["spec"]["selector"]):
            return "one replica: maxUnavailable 1 (minAvailable 1 would block node drains), selecting the pods"

    def disruption_budget():
        if pdb["spec"].get("minAvailable") != 1 or not selects(pdb["spec"]["selector"]):
            return "minAvailable must be 1, selecting the pods"
        if not pdb["spec"]["minAvailable"] < hpa["spec"].get("minReplicas", 1):
            return f"minAvailable {pdb['spec']['minAvailable']} >= HPA minReplicas: a drain could never evict"

    if shared:
        check("k8s PodDisruptionBudget: minAvailable 1 < HPA minReplicas, selects the pods", disruption_budget)
    else:
        check("k8s PodDisruptionBudget: maxUnavailable 1 for one replica, selects the pods", single_disruption_budget)

    def placeholders():
        if set(secrets) != {"kwikid-gateway-token", "kwikid-gateway-redis"}:
            return f"example Secrets {sorted(secrets)}"
        for name, secret in secrets.items():
            if secret.get("data"):
                return f"{name}: an example Secret must not carry base64 data"
        if "REPLACE_ME" not in secrets["kwikid-gateway-token"]["stringData"]["token"]:
            return "the token is not a REPLACE_ME placeholder"
        url = secrets["kwikid-gateway-redis"]["stringData"]["url"]
        if url != "rediss://:CHANGE-ME@redis.example.internal:6380/0":
            return f"the Redis URL is not the placeholder: {url}"

    check("k8s example Secrets (token, Redis URL) hold only placeholders", placeholders)
    return ctr


def other_asserts(deploy, ctr):
    """The Dockerfile and the systemd unit (against the default Deployment's container)."""
    # ---- Dockerfile ----
    stage, docker_text = dockerfile_final_stage(os.path.join(deploy, "Dockerfile"))
    last = {}
    for instr, rest in stage:
        last[instr.upper()] = rest

    def dockerfile():
        base = last["FROM"].split()[0]
        if not (base.startswith("gcr.io/distroless/static") or base == "scratch"):
            return f"final stage FROM {base}"
        if last.get("USER", "").split(":")[0] != "65532":
            return f"USER {last.get('USER')!r}"
        if sorted(last.get("EXPOSE", "").split()) != ["8080", "9090"]:
            return f"EXPOSE {last.get('EXPOSE')!r}"
        if yaml.safe_load(last["ENTRYPOINT"]) != ["/kwikid-gateway"]:
            return f"ENTRYPOINT {last['ENTRYPOINT']}"
        if yaml.safe_load(last["CMD"]) != ctr["args"]:
            return f"CMD {last['CMD']} differs from the Deployment's args {ctr['args']}"
        # deploy/build.sh: the production build (cargo build --release --locked, profile-guided).
        if not re.search(r"bash deploy/build\.sh --target x86_64-unknown-linux-musl", docker_text):
            return "the builder does not run deploy/build.sh (the production build) for musl"

    check("Dockerfile: distroless/scratch, USER 65532, EXPOSE 8080 9090, CMD = Deployment args", dockerfile)

    # ---- systemd ----
    unit_path = os.path.join(deploy, "systemd", "kwikid-gateway.service")
    unit = parse_unit(unit_path)
    with open(os.path.join(deploy, "systemd", "config.toml"), "rb") as f:
        scfg = tomllib.load(f)

    def credential():
        (cred,) = unit["LoadCredential"]
        name, _, _ = cred.partition(":")
        want = f"/run/credentials/{os.path.basename(unit_path)}/{name}"
        if scfg["token"].get("file") != want:
            return f"config token.file {scfg['token'].get('file')} != {want}"
        if "--config /etc/kwikid-gateway/config.toml" not in unit["ExecStart"][0]:
            return f"ExecStart {unit['ExecStart'][0]}"

    check("systemd: config token.file is the LoadCredential path; ExecStart uses /etc/kwikid-gateway/config.toml", credential)

    def stop_budget():
        stop = seconds(unit["TimeoutStopSec"][-1] + ("" if unit["TimeoutStopSec"][-1][-1].isalpha() else "s"))
        grace = seconds(scfg["listen"].get("shutdown_grace", "30s"))
        if not stop > grace + 2:
            return f"TimeoutStopSec {stop}s <= shutdown_grace {grace}s + 2s"
        if unit.get("KillSignal") != ["SIGTERM"] or unit.get("ExecReload") != ["/bin/kill -HUP $MAINPID"]:
            return "KillSignal=SIGTERM and ExecReload=/bin/kill -HUP $MAINPID expected"

    check("systemd: TimeoutStopSec > shutdown_grace + 2s, KillSignal=SIGTERM, ExecReload sends SIGHUP", stop_budget)

    def hardening():
        wanted = {
            "DynamicUser": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
            "PrivateTmp": "yes", "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
            "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
            "MemoryDenyWriteExecute": "yes", "LockPersonality": "yes", "Restart": "on-failure",
        }
        bad = [f"{key}={unit.get(key)}" for key, want in wanted.items() if unit.get(key) != [want]]
        if "@system-service" not in unit.get("SystemCallFilter", []):
            bad.append("SystemCallFilter lacks @system-service")
        return ", ".join(bad)

    check("systemd: hardening (DynamicUser, ProtectSystem=strict, no capabilities, syscall filter, ...)", hardening)

    def core_and_memlock():
        if unit.get("LimitCORE") != ["0"]:
            return f"LimitCORE={unit.get('LimitCORE')}, want [0]: a core file would hold the token"
        # The token's pages are locked with mlock (@memlock); a filter denying it would leave
        # them swappable (the gateway would only warn).
        denied = {name for v in unit.get("SystemCallFilter", []) if v.startswith("~") for name in v[1:].split()}
        if denied & {"@memlock", "mlock", "munlock"}:
            return f"SystemCallFilter denies {sorted(denied & {'@memlock', 'mlock', 'munlock'})}"

    check("systemd: LimitCORE=0, and the system-call filter lets the token's pages be locked (@memlock)", core_and_memlock)

    def single_instance_backends():
        with open(os.path.join(deploy, "docker", "config.toml"), "rb") as f:
            dcfg = tomllib.load(f)
        got = {name: c.get("rate_limit", {}).get("backend", "local") for name, c in
               (("systemd", scfg), ("docker", dcfg))}
        if set(got.values()) != {"local"}:
            return f"backends {got}"

    check("systemd and docker configs: rate_limit backend local (one instance)", single_instance_backends)


def config_text(source):
    with open(source) as f:
        text = f.read()
    if source.endswith((".yaml", ".yml")):
        (cm,) = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "ConfigMap"]
        text = cm["data"]["config.toml"]
    return text


def backend(source):
    print(tomllib.loads(config_text(source)).get("rate_limit", {}).get("backend", "local"))
    return 0


def replace_once(source, text, what, old, new):
    quoted = '"' + old + '"'
    if text.count(quoted) != 1:
        sys.exit(f"render: {source}: {what} {quoted} must appear exactly once")
    return text.replace(quoted, '"' + new + '"')


def render(source, out, token_file, redis_url_file=None):
    text = config_text(source)
    cfg = tomllib.loads(text)
    rl = cfg.get("rate_limit", {})
    if rl.get("backend") == "redis" and redis_url_file is None:
        sys.exit(f"render: {source}: backend = \"redis\" needs REDIS_URL_FILE")
    if redis_url_file is not None and "redis_url_file" in rl:
        text = replace_once(source, text, "rate_limit.redis_url_file", str(rl["redis_url_file"]), redis_url_file)
    elif redis_url_file is not None and "redis_url" in rl:
        with open(redis_url_file) as f:
            url = f.read().rstrip("\r\n")
        text = replace_once(source, text, "rate_limit.redis_url", rl["redis_url"], url)
    token = cfg.get("token", {})
    if "file" in token:
        text = replace_once(source, text, "token.file", token["file"], token_file)
        print("file")
    else:
        print("env", token.get("env", "KWIKID_API_TOKEN"))
    with open(out, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "assert":
        sys.exit(run_asserts(sys.argv[2]))
    if len(sys.argv) == 3 and sys.argv[1] == "backend":
        sys.exit(backend(sys.argv[2]))
    if len(sys.argv) in (5, 6) and sys.argv[1] == "render":
        sys.exit(render(*sys.argv[2:]))
    sys.exit(__doc__)
