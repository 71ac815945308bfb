#!/usr/bin/env python3
"""Cross-checks of deploy/ that no schema can see, for deploy/check.sh.

  check_manifests.py assert DEPLOY_DIR
      One line per check ("ok   ..." or "FAIL ...: why"); exit 1 if any failed. Checks that the
      Deployment, Service, NetworkPolicy, PodDisruptionBudget, ConfigMap, example Secret,
      Dockerfile and systemd unit agree with each other: ports, probe paths, mount paths, the
      token path, shutdown budgets, hardening.

  check_manifests.py render SOURCE OUT TOKEN_FILE
      Writes the gateway config found in SOURCE (a config.toml, or a ConfigMap YAML holding
      one under config.toml) to OUT, with [token] file rewritten to TOKEN_FILE so that
      `kwikid-gateway check` can run here. Prints "file" or "env NAME" (the token source).

Needs Python >= 3.11 (tomllib) and PyYAML (a dependency of kubernetes-validate).
"""

import glob
import os
import re
import sys
import tomllib

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


def load_manifests(deploy):
    docs = {}
    files = sorted(glob.glob(os.path.join(deploy, "kubernetes", "*.yaml")))
    files += sorted(glob.glob(os.path.join(deploy, "kubernetes", "examples", "*.yaml")))
    for path in files:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs.setdefault(doc["kind"], []).append(doc)
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


def run_asserts(deploy):
    k = load_manifests(deploy)
    dep, svc, cm = k["Deployment"], k["Service"], k["ConfigMap"]
    netpol, pdb, secret = k["NetworkPolicy"], k["PodDisruptionBudget"], k["Secret"]
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

    def token_mount():
        token = cfg["token"]["file"]
        if "env" in cfg["token"]:
            return "token.env set too"
        mount = mounts["token"]
        if "subPath" in mount or "subPathExpr" in mount:
            return "subPath mounts are never updated: rotation would not reach the pod"
        if mount["mountPath"].rstrip("/") != os.path.dirname(token):
            return f"mounted at {mount['mountPath']}, token.file is {token}"
        vol = volumes["token"]["secret"]
        paths = {i["path"]: i["key"] for i in vol.get("items", [])} or {key: key for key in secret["stringData"]}
        key = paths.get(os.path.basename(token))
        if vol["secretName"] != secret["metadata"]["name"] or key not in secret["stringData"]:
            return f"Secret {vol['secretName']} key {key} does not provide {os.path.basename(token)}"

    check("k8s Secret volume (no subPath) mounted where ConfigMap token.file points", token_mount)

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
        if not term > sleep + grace:
            return f"terminationGracePeriodSeconds {term} <= preStop {sleep}s + shutdown_grace {grace}s"

    check("k8s terminationGracePeriodSeconds > preStop sleep + listen.shutdown_grace", shutdown_budget)

    def sizing():
        res = ctr["resources"]
        got = (dep["spec"]["replicas"], res["requests"].get("cpu"), res["requests"].get("memory"),
               res["limits"].get("memory"))
        if got != (2, "100m", "32Mi", "128Mi"):
            return f"replicas/cpu/memory/limit = {got}"

    check("k8s replicas 2, requests cpu 100m memory 32Mi, limit memory 128Mi", sizing)

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
        if egress != [("TCP", 53), ("TCP", 443), ("UDP", 53)]:
            return f"egress {egress}"

    check("k8s NetworkPolicy: 8080 from caller namespaces, 9090 from monitoring, egress DNS + 443", network_policy)

    def disruption_budget():
        if pdb["spec"].get("minAvailable") != 1 or not selects(pdb["spec"]["selector"]):
            return "minAvailable must be 1, selecting the pods"

    check("k8s PodDisruptionBudget: minAvailable 1, selects the pods", disruption_budget)

    def placeholder():
        for key, value in secret.get("stringData", {}).items():
            if "REPLACE_ME" not in value:
                return f"stringData.{key} is not a REPLACE_ME placeholder"
        if secret.get("data"):
            return "example Secret must not carry base64 data"

    check("k8s example Secret holds only a placeholder", placeholder)

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
        if not re.search(r"cargo build --release --locked --target x86_64-unknown-linux-musl", docker_text):
            return "the builder does not run cargo build --release --locked for musl"

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
        if not stop > grace:
            return f"TimeoutStopSec {stop}s <= shutdown_grace {grace}s"
        if unit.get("KillSignal") != ["SIGTERM"] or unit.get("ExecReload") != ["/bin/kill -HUP $MAINPID"]:
            return "KillSignal=SIGTERM and ExecReload=/bin/kill -HUP $MAINPID expected"

    check("systemd: TimeoutStopSec > shutdown_grace, KillSignal=SIGTERM, ExecReload sends SIGHUP", stop_budget)

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

    return 1 if FAILED else 0


def render(source, out, token_file):
    with open(source) as f:
        text = f.read()
    if source.endswith((".yaml", ".yml")):
        (cm,) = [d for d in yaml.safe_load_all(text) if d and d["kind"] == "ConfigMap"]
        text = cm["data"]["config.toml"]
    token = tomllib.loads(text).get("token", {})
    if "file" in token:
        quoted = '"' + token["file"] + '"'
        if text.count(quoted) != 1:
            sys.exit(f"render: {source}: token.file {quoted} must appear exactly once")
        text = text.replace(quoted, '"' + token_file + '"')
        print("file")
    else:
        print("env", token.get("env", "KWIKID_API_TOKEN"))
    with open(out, "w") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "assert":
        sys.exit(run_asserts(sys.argv[2]))
    if len(sys.argv) == 5 and sys.argv[1] == "render":
        sys.exit(render(*sys.argv[2:]))
    sys.exit(__doc__)
