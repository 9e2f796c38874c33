#!/usr/bin/env python3
"""Checks the Kubernetes manifests in k8s/ without a cluster.

Every manifest is parsed and cross-checked against the rest of the repository:

- each object has apiVersion (the one its kind needs), kind, metadata.name and metadata.namespace
  (drover); kustomization.yaml lists exactly the manifests of k8s/;
- Drover's configuration: every key of the drover.conf ConfigMap and every DR_* variable is an option
  of common/src/settings.c (DR_ + key upper-cased, '.' -> '_', docs/configuration.md §1), no secret and
  no node.id is in the shared file, node.id comes from the pod name of a StatefulSet, the cross-key rules
  hold, and, given DROVER_BIN_DIR, the built drover-ingress and drover-dispatcher accept the file and
  the variables (`--help` parses every source and exits 0);
- every Secret key a pod uses exists in secret.example.yaml, and Redis, NATS, the broker and Drover
  use the same key for the same password;
- every Service, PodDisruptionBudget and HorizontalPodAutoscaler points at a workload, every Service
  port and probe port exists on the container, the ingress probes use open REST routes of
  services/ingress/http_api.c, volumes and `-c` files resolve to ConfigMap keys;
- Redis, NATS and Mosquitto settings Drover depends on, the NATS routes, shutdown grace periods, pod
  security settings and resources; redis-server and nats-server (when installed) accept their configs;
- the runtime packages of deploy/container/Containerfile cover the libraries the built binaries load;
- with python3-kubernetes installed, every object survives a round trip through its API model (no
  unknown, e.g. misspelt, field);
- the manifests are the Helm chart k8s/chart/drover rendered with its default values
  (tests/k8s/render_chart.py): every check above runs again on a fresh render, k8s/*.yaml must equal
  it, and renders with other values (external Redis, ServiceMonitor) give what they promise.

Finally the checker breaks the manifests in memory in several ways and fails unless each break is
reported: the checker must be able to fail.

Usage: tests/k8s/check_manifests.py [--root DIR]      (DROVER_BIN_DIR: folder of the built binaries)
Exit status 0 when every check passes, 1 otherwise.
"""

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render_chart  # noqa: E402  (tests/k8s/render_chart.py, next to this file)

NAMESPACE = "drover"
SECRET_NAME = "drover-secrets"
IMAGE = "drover:latest"
DROVER_BINARIES = ("drover-ingress", "drover-dispatcher")

API_VERSIONS = {
    "ConfigMap": "v1",
    "Secret": "v1",
    "Service": "v1",
    "Namespace": "v1",
    "StatefulSet": "apps/v1",
    "Deployment": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "NetworkPolicy": "networking.k8s.io/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
}
WORKLOAD_KINDS = ("StatefulSet", "Deployment")

# Libraries that the runtime base image (debian:12-slim) already has, and the sanitizer runtimes of
# instrumented test builds.
BASE_IMAGE_PACKAGES = {"libc6", "libgcc-s1", "zlib1g"}
SANITIZER_PACKAGE = re.compile(r"^lib(asan|ubsan|lsan|tsan)\d")


# ---- loading ------------------------------------------------------------------------------------


class Repo:
    """Everything the checks read: the manifests and the repository files they refer to."""

    def __init__(self, root, rendered=None):
        """rendered: {file name: text} of a chart render that replaces those files of k8s/."""
        self.root = root
        self.k8s = os.path.join(root, "k8s")
        self.docs = {}  # relative path -> list of documents
        for dirpath, dirnames, files in os.walk(self.k8s):
            if dirpath == self.k8s:
                dirnames[:] = [d for d in dirnames if d != "chart"]  # templates, not manifests
            for f in sorted(files):
                if f.endswith((".yaml", ".yml")):
                    path = os.path.join(dirpath, f)
                    rel = os.path.relpath(path, self.k8s)
                    with open(path, encoding="utf-8") as fh:
                        self.docs[rel] = [d for d in yaml.safe_load_all(fh) if d is not None]
        for rel, text in (rendered or {}).items():
            self.docs[rel] = [d for d in yaml.safe_load_all(text) if d is not None]
        self.settings_c = read(root, "common/src/settings.c")
        self.http_api_c = read(root, "services/ingress/http_api.c")
        self.containerfile = read(root, "deploy/container/Containerfile")


def read(root, rel):
    with open(os.path.join(root, rel), encoding="utf-8") as fh:
        return fh.read()


def parse_options(settings_c):
    """The option table of common/src/settings.c: name -> dict(type, min, max, default, secret)."""
    opts = {}
    pat = re.compile(r'OPT\("([^"]+)",\s*DR_CFG_(\w+),\s*([^,]+),\s*([^,]+),\s*"([^"]*)",\s*\w+,\s*([^,]+),')
    for m in pat.finditer(settings_c):
        name, typ, lo, hi, default, flags = m.groups()
        opts[name] = {
            "type": typ,
            "min": float(lo),
            "max": float(hi),
            "default": default,
            "secret": "DR_CFG_SECRET" in flags,
        }
    return opts


def env_name(key):
    """docs/configuration.md §1: DR_ + the key in upper case with every '.' replaced by '_'."""
    return "DR_" + key.upper().replace(".", "_")


def parse_routes(http_api_c):
    """REST routes of services/ingress/http_api.c: (method, path) -> open (no API key needed)."""
    routes = {}
    for m in re.finditer(r'\{"(GET|POST|PUT|DELETE|PATCH)",\s*"([^"]+)",\s*([^,]+),', http_api_c):
        routes[(m.group(1), m.group(2))] = m.group(3).strip() == "OPEN"
    return routes


def parse_drover_conf(text):
    """A Drover config file (docs/configuration.md §1.1): list of (line number, key, value)."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if "=" not in s:
            out.append((n, None, s))
            continue
        key, value = s.split("=", 1)
        key, value = key.strip(), value.strip()
        if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
            value = value[1:-1]
        out.append((n, key, value))
    return out


def parse_space_conf(text):
    """Redis / Mosquitto style 'directive value...' lines: list of (directive, rest)."""
    out = []
    for line in text.splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        parts = s.split(None, 1)
        out.append((parts[0].lower(), parts[1] if len(parts) > 1 else ""))
    return out


# ---- the model ----------------------------------------------------------------------------------


class Model:
    def __init__(self, repo):
        self.repo = repo
        self.objects = []  # (file, doc)
        for rel, docs in repo.docs.items():
            if os.path.basename(rel) == "kustomization.yaml":
                continue
            for d in docs:
                self.objects.append((rel, d))

    def of_kind(self, kind, include_example=False):
        return [
            (f, d)
            for f, d in self.objects
            if isinstance(d, dict) and d.get("kind") == kind and (include_example or f != "secret.example.yaml")
        ]

    def get(self, kind, name):
        for f, d in self.of_kind(kind):
            if d.get("metadata", {}).get("name") == name:
                return d
        return None

    def workloads(self):
        return [(f, d) for f, d in self.objects if isinstance(d, dict) and d.get("kind") in WORKLOAD_KINDS]

    def secret_template(self):
        for f, d in self.objects:
            if f == "secret.example.yaml" and isinstance(d, dict) and d.get("kind") == "Secret":
                return d
        return None


def pod_spec(w):
    return w.get("spec", {}).get("template", {}).get("spec", {}) or {}


def pod_labels(w):
    return w.get("spec", {}).get("template", {}).get("metadata", {}).get("labels", {}) or {}


def containers(w, init=True):
    spec = pod_spec(w)
    cs = list(spec.get("containers", []) or [])
    if init:
        cs += list(spec.get("initContainers", []) or [])
    return cs


def name_of(d):
    return d.get("metadata", {}).get("name", "?")


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def drover_binary(c):
    args = (c.get("command") or []) + (c.get("args") or [])
    for a in args:
        if a in DROVER_BINARIES:
            return a
    return None


def container_port(c, port):
    """The containerPort that `port` (a name or a number) refers to in container c, or None."""
    for p in c.get("ports", []) or []:
        if isinstance(port, str) and not port.isdigit():
            if p.get("name") == port:
                return p.get("containerPort")
        elif int(port) == p.get("containerPort"):
            return p.get("containerPort")
    return None


def env_value(c, name):
    for e in c.get("env", []) or []:
        if e.get("name") == name:
            return e
    return None


def configmap_files(model, w, c):
    """Files container c sees from ConfigMap volumes: path -> (configmap name, key)."""
    vols = {v.get("name"): v for v in pod_spec(w).get("volumes", []) or []}
    out = {}
    for m in c.get("volumeMounts", []) or []:
        v = vols.get(m.get("name"))
        if not v or "configMap" not in v:
            continue
        cm_name = v["configMap"].get("name")
        cm = model.get("ConfigMap", cm_name)
        items = v["configMap"].get("items")
        if items:
            pairs = [(i.get("path"), i.get("key")) for i in items]
        else:
            pairs = [(k, k) for k in ((cm or {}).get("data") or {})]
        for path, key in pairs:
            out[os.path.join(m.get("mountPath", ""), path)] = (cm_name, key)
    return out


def mount_kind(w, c, path):
    """What backs `path` in container c: 'pvc', 'emptyDir', 'configMap', 'secret' or None."""
    vols = {v.get("name"): v for v in pod_spec(w).get("volumes", []) or []}
    claims = {t.get("metadata", {}).get("name") for t in w.get("spec", {}).get("volumeClaimTemplates", []) or []}
    best, kind = "", None
    for m in c.get("volumeMounts", []) or []:
        mp = m.get("mountPath", "").rstrip("/") + "/"
        if (path.rstrip("/") + "/").startswith(mp) and len(mp) > len(best):
            best = mp
            if m.get("name") in claims:
                kind = "pvc"
            else:
                v = vols.get(m.get("name"), {})
                kind = next((k for k in ("emptyDir", "configMap", "secret", "persistentVolumeClaim") if k in v), None)
                if kind == "persistentVolumeClaim":
                    kind = "pvc"
    return kind


def resolve_env(c, secret_data, pod_name):
    """The environment container c gets, with Secret values from the template and fieldRef values for
    pod `pod_name`; $(VAR) references to earlier variables are expanded as Kubernetes does."""
    env = {}
    for e in c.get("env", []) or []:
        name = e.get("name")
        if "value" in e:
            val = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), str(e["value"]))
        else:
            vf = e.get("valueFrom", {}) or {}
            if "secretKeyRef" in vf:
                val = secret_data.get(vf["secretKeyRef"].get("key"))
                if val is None:
                    continue
            elif "fieldRef" in vf and vf["fieldRef"].get("fieldPath") == "metadata.name":
                val = pod_name
            else:
                continue
        env[name] = val
    return env


# ---- checks -------------------------------------------------------------------------------------


class Checker:
    def __init__(self, model, run_tools, bin_dir):
        self.m = model
        self.run_tools = run_tools
        self.bin_dir = bin_dir
        self.errors = []
        self.notes = []
        self.opts = parse_options(model.repo.settings_c)
        self.routes = parse_routes(model.repo.http_api_c)
        tmpl = model.secret_template() or {}
        self.secret_data = dict(tmpl.get("stringData") or {})
        self.drover_conf = None  # merged settings: key -> value (defaults + file)

    def err(self, where, msg):
        self.errors.append(f"{where}: {msg}")

    def run(self):
        if len(self.opts) < 20:
            self.err("common/src/settings.c", f"found only {len(self.opts)} options in the OPT table; parser out of date?")
        if not self.routes:
            self.err("services/ingress/http_api.c", "no routes found; parser out of date?")
        self.check_objects()
        self.check_kustomization()
        self.check_secret_template()
        self.check_workloads()
        self.check_selectors()
        self.check_drover()
        self.check_redis()
        self.check_nats()
        self.check_mosquitto()
        self.check_containerfile()
        if self.run_tools:
            self.check_schema()
        return self.errors

    def check_schema(self):
        """Field names: each object must survive a round trip through the Kubernetes API model of its kind
        (python3-kubernetes, when installed), which drops fields it does not know, such as misspelt ones."""
        try:
            from kubernetes import client
        except ImportError:
            self.notes.append("python3-kubernetes not installed: field names were not checked against the API models")
            return

        class Response:
            def __init__(self, d):
                self.data = json.dumps(d)

        api = client.ApiClient()

        def model_of(api_version, kind):
            group = api_version.split("/")[-1]
            for version in (group, {"v2": "v2beta2"}.get(group)):
                name = f"{version.capitalize()}{kind}" if version else None
                if name and hasattr(client, name):
                    return name
            return None

        def lost(a, b, path):
            if isinstance(a, dict):
                for k, v in a.items():
                    if v is None:
                        continue
                    if not isinstance(b, dict) or k not in b:
                        yield f"{path}.{k}"
                    else:
                        yield from lost(v, b[k], f"{path}.{k}")
            elif isinstance(a, list) and isinstance(b, list):
                for i, (x, y) in enumerate(zip(a, b)):
                    yield from lost(x, y, f"{path}[{i}]")

        for f, d in self.m.objects:
            if not isinstance(d, dict) or not d.get("kind"):
                continue
            name = model_of(str(d.get("apiVersion", "")), d["kind"])
            if not name:
                self.notes.append(f"{f}: no API model for {d.get('apiVersion')} {d['kind']}; field names not checked")
                continue
            back = api.sanitize_for_serialization(api.deserialize(Response(d), name))
            for path in lost(d, back, ""):
                self.err(f"{f}: {d['kind']}/{name_of(d)}", f"unknown field {path[1:]}")

    # -- structure

    def check_objects(self):
        seen = {}
        for f, d in self.m.objects:
            where = f
            if not isinstance(d, dict):
                self.err(where, "a document is not a mapping")
                continue
            kind, api = d.get("kind"), d.get("apiVersion")
            meta = d.get("metadata") or {}
            where = f"{f}: {kind or '?'}/{meta.get('name', '?')}"
            if not kind:
                self.err(where, "no kind")
            if not api:
                self.err(where, "no apiVersion")
            elif kind in API_VERSIONS and api != API_VERSIONS[kind]:
                self.err(where, f"apiVersion {api}, expected {API_VERSIONS[kind]}")
            elif kind not in API_VERSIONS:
                self.err(where, f"kind {kind} is not one this checker knows (add it to API_VERSIONS)")
            if not meta.get("name"):
                self.err(where, "no metadata.name")
            if kind != "Namespace" and meta.get("namespace") != NAMESPACE:
                self.err(where, f"metadata.namespace is {meta.get('namespace')!r}, expected {NAMESPACE!r}")
            key = (kind, meta.get("name"))
            if key in seen:
                self.err(where, f"same kind and name as an object in {seen[key]}")
            seen[key] = f

    def check_kustomization(self):
        kust = self.m.repo.docs.get("kustomization.yaml")
        if not kust:
            self.err("k8s/kustomization.yaml", "missing")
            return
        k = kust[0]
        if k.get("namespace") != NAMESPACE:
            self.err("kustomization.yaml", f"namespace is {k.get('namespace')!r}, expected {NAMESPACE!r}")
        listed = set(k.get("resources") or [])
        top = {f for f in self.m.repo.docs if "/" not in f and f not in ("kustomization.yaml", "secret.example.yaml")}
        for f in sorted(top - listed):
            self.err("kustomization.yaml", f"{f} is not listed in resources")
        for f in sorted(listed - top):
            self.err("kustomization.yaml", f"resource {f} does not exist in k8s/")
        if "secret.example.yaml" in listed:
            self.err("kustomization.yaml", "lists secret.example.yaml: the template must never be applied")

    def check_secret_template(self):
        tmpl = self.m.secret_template()
        if not tmpl:
            self.err("secret.example.yaml", "no Secret in it")
            return
        if name_of(tmpl) != SECRET_NAME:
            self.err("secret.example.yaml", f"the Secret is named {name_of(tmpl)!r}, expected {SECRET_NAME!r}")
        if tmpl.get("data"):
            self.err("secret.example.yaml", "use stringData with placeholders, not data")
        for key, val in self.secret_data.items():
            val = str(val)
            if key.endswith("-password") and not re.fullmatch(r"[A-Za-z][A-Za-z0-9]{15,}", val):
                self.err("secret.example.yaml", f"{key}: a password must be a letter followed by letters and digits")
            if key == "mqtt-users":
                for line in val.splitlines():
                    if line.strip() and not re.fullmatch(r"[A-Za-z0-9._-]+:[A-Za-z][A-Za-z0-9]*", line.strip()):
                        self.err("secret.example.yaml", f"mqtt-users line {line!r} is not user:password")
        for f, d in self.m.of_kind("Secret"):
            self.err(f"{f}: Secret/{name_of(d)}", "a Secret outside secret.example.yaml: secrets are never committed")

    # -- workloads

    def check_workloads(self):
        for f, w in self.m.workloads():
            where = f"{f}: {w['kind']}/{name_of(w)}"
            spec = w.get("spec", {})
            sel = (spec.get("selector") or {}).get("matchLabels") or {}
            if not matches(sel, pod_labels(w)):
                self.err(where, f"selector {sel} does not match the pod labels {pod_labels(w)}")
            if w["kind"] == "StatefulSet" and not spec.get("serviceName"):
                self.err(where, "no serviceName")
            ps = pod_spec(w)
            if ps.get("automountServiceAccountToken") is not False:
                self.err(where, "automountServiceAccountToken must be false (no pod talks to the API server)")
            psc = ps.get("securityContext") or {}
            if psc.get("runAsNonRoot") is not True:
                self.err(where, "pod securityContext.runAsNonRoot must be true")
            if not isinstance(psc.get("runAsUser"), int) or psc.get("runAsUser") == 0:
                self.err(where, "pod securityContext.runAsUser must be a non-zero uid")
            vol_names = {v.get("name") for v in ps.get("volumes", []) or []}
            vol_names |= {t.get("metadata", {}).get("name") for t in spec.get("volumeClaimTemplates", []) or []}
            for v in ps.get("volumes", []) or []:
                if "configMap" in v and not self.m.get("ConfigMap", v["configMap"].get("name")):
                    self.err(where, f"volume {v.get('name')}: ConfigMap {v['configMap'].get('name')} is not in k8s/")
                if "configMap" in v:
                    cm = self.m.get("ConfigMap", v["configMap"].get("name")) or {}
                    for it in v["configMap"].get("items") or []:
                        if it.get("key") not in (cm.get("data") or {}):
                            self.err(where, f"volume {v.get('name')}: key {it.get('key')} not in its ConfigMap")
                if "secret" in v:
                    self.check_secret_ref(where, v["secret"].get("secretName"), None)
            for c in containers(w):
                self.check_container(where, w, c, vol_names)

    def check_secret_ref(self, where, name, key):
        if name != SECRET_NAME:
            self.err(where, f"refers to Secret {name!r}; every secret is in {SECRET_NAME} (secret.example.yaml)")
        elif key is not None and key not in self.secret_data:
            self.err(where, f"Secret key {key!r} is not in secret.example.yaml")

    def check_container(self, where, w, c, vol_names):
        cw = f"{where} container {c.get('name')}"
        if not c.get("image"):
            self.err(cw, "no image")
        sc = c.get("securityContext") or {}
        if sc.get("allowPrivilegeEscalation") is not False:
            self.err(cw, "securityContext.allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            self.err(cw, "securityContext.readOnlyRootFilesystem must be true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            self.err(cw, "securityContext.capabilities.drop must contain ALL")
        res = c.get("resources") or {}
        for r in ("cpu", "memory"):
            if r not in (res.get("requests") or {}):
                self.err(cw, f"no resources.requests.{r}")
        if "memory" not in (res.get("limits") or {}):
            self.err(cw, "no resources.limits.memory")
        for m in c.get("volumeMounts", []) or []:
            if m.get("name") not in vol_names:
                self.err(cw, f"volumeMount {m.get('name')} has no volume or volumeClaimTemplate")
        defined = set()
        for e in c.get("env", []) or []:
            vf = e.get("valueFrom") or {}
            if "secretKeyRef" in vf:
                self.check_secret_ref(f"{cw} env {e.get('name')}", vf["secretKeyRef"].get("name"), vf["secretKeyRef"].get("key"))
            if "configMapKeyRef" in vf:
                cm = self.m.get("ConfigMap", vf["configMapKeyRef"].get("name")) or {}
                if vf["configMapKeyRef"].get("key") not in (cm.get("data") or {}):
                    self.err(f"{cw} env {e.get('name')}", "configMapKeyRef to a missing ConfigMap key")
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
                if ref not in defined:
                    self.err(f"{cw} env {e.get('name')}", f"$({ref}) is not defined earlier in env, so it stays literal")
            defined.add(e.get("name"))
        for pname in ("readinessProbe", "livenessProbe", "startupProbe"):
            p = c.get(pname)
            if not p:
                continue
            for h in ("httpGet", "tcpSocket", "grpc"):
                if h in p and container_port(c, p[h].get("port")) is None:
                    self.err(cw, f"{pname} uses port {p[h].get('port')!r}, which the container does not declare")

    def check_selectors(self):
        wl = self.m.workloads()
        for f, s in self.m.of_kind("Service"):
            where = f"{f}: Service/{name_of(s)}"
            sel = (s.get("spec") or {}).get("selector") or {}
            targets = [w for _, w in wl if matches(sel, pod_labels(w))]
            if not targets:
                self.err(where, f"selector {sel} matches no workload's pod labels")
                continue
            for p in (s.get("spec") or {}).get("ports", []) or []:
                tp = p.get("targetPort", p.get("port"))
                if not any(container_port(c, tp) is not None for w in targets for c in containers(w, init=False)):
                    self.err(where, f"port {p.get('name')}: targetPort {tp!r} is not a port of the selected pods")
        for f, d in self.m.of_kind("PodDisruptionBudget"):
            sel = ((d.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if not any(matches(sel, pod_labels(w)) for _, w in wl):
                self.err(f"{f}: PodDisruptionBudget/{name_of(d)}", f"selector {sel} matches no workload")
        for f, d in self.m.of_kind("HorizontalPodAutoscaler"):
            ref = (d.get("spec") or {}).get("scaleTargetRef") or {}
            if not self.m.get(ref.get("kind"), ref.get("name")):
                self.err(f"{f}: HorizontalPodAutoscaler/{name_of(d)}", f"scaleTargetRef {ref.get('kind')}/{ref.get('name')} is not in k8s/")
        for f, w in self.m.of_kind("StatefulSet"):
            svc = self.m.get("Service", w["spec"].get("serviceName"))
            if svc and not matches((svc.get("spec") or {}).get("selector") or {}, pod_labels(w)):
                self.err(f"{f}: StatefulSet/{name_of(w)}", f"serviceName {svc['metadata']['name']} selects other pods")

    # -- Drover

    def drover_containers(self):
        out = []
        for f, w in self.m.workloads():
            for c in containers(w):
                b = drover_binary(c)
                if b:
                    out.append((f, w, c, b))
        return out

    def check_drover(self):
        dcs = self.drover_containers()
        found = {b for _, _, _, b in dcs}
        for b in DROVER_BINARIES:
            if b not in found:
                self.err("k8s/", f"no workload runs {b}")
        confs = {}
        for f, w, c, b in dcs:
            where = f"{f}: {w['kind']}/{name_of(w)} container {c.get('name')}"
            if c.get("command"):
                self.err(where, "sets command, which replaces the image's entrypoint (tini): set only args")
            if c.get("image") != IMAGE:
                self.err(where, f"image {c.get('image')!r}, expected the placeholder {IMAGE!r}")
            if w["kind"] != "StatefulSet":
                self.err(where, "must be a StatefulSet: node.id must stay the same across restarts (docs/operations.md §1)")
            ne = env_value(c, "DR_NODE_ID")
            if not ne or ((ne.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "metadata.name":
                self.err(where, "DR_NODE_ID must come from fieldRef metadata.name (a unique, stable pod name)")
            for e in c.get("env", []) or []:
                n = e.get("name", "")
                if n.startswith("DR_"):
                    key = next((k for k in self.opts if env_name(k) == n), None)
                    if key is None:
                        self.err(where, f"{n} is not the variable of any option (DR_ + key upper-cased, '.' -> '_')")
                    elif self.opts[key]["secret"] and "secretKeyRef" not in (e.get("valueFrom") or {}):
                        self.err(where, f"{n} is a secret and must come from a secretKeyRef")
            args = c.get("args") or []
            files = configmap_files(self.m, w, c)
            cfiles = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--config")]
            cfiles += [a.split("=", 1)[1] for a in args if a.startswith("--config=")]
            if not cfiles:
                self.err(where, "no -c FILE: the shared drover.conf is not read")
            for cf in cfiles:
                if cf not in files:
                    self.err(where, f"-c {cf} is not a file mounted from a ConfigMap")
                    continue
                cm_name, key = files[cf]
                text = ((self.m.get("ConfigMap", cm_name) or {}).get("data") or {}).get(key)
                if text is None:
                    self.err(where, f"-c {cf}: ConfigMap {cm_name} has no key {key}")
                    continue
                confs[(cm_name, key)] = text
            for a in args:
                if a.startswith("--") and not a.startswith("--config"):
                    k = a[2:].split("=", 1)[0]
                    if k not in self.opts:
                        self.err(where, f"argument {a}: unknown option {k}")
                    elif self.opts[k]["secret"]:
                        self.err(where, f"argument {a}: secrets never go on the command line")
            self.check_grace(where, w, c)
        if len(confs) > 1:
            self.err("k8s/", f"Drover pods read different config files {sorted(confs)}: keep one shared drover.conf")
        for (cm_name, key), text in confs.items():
            self.check_drover_conf(f"ConfigMap {cm_name} key {key}", text)
        if self.drover_conf is not None:
            self.check_drover_cluster(dcs)
            if self.run_tools:
                self.run_drover_help(dcs, confs)

    def check_drover_conf(self, where, text):
        values = {k: o["default"] for k, o in self.opts.items()}
        for n, key, value in parse_drover_conf(text):
            lw = f"{where} line {n}"
            if key is None:
                self.err(lw, f"expected 'key = value': {value!r}")
                continue
            o = self.opts.get(key)
            if o is None:
                self.err(lw, f"unknown option {key!r} (not in common/src/settings.c)")
                continue
            if o["secret"]:
                self.err(lw, f"{key} is a secret: it comes from the Secret through {env_name(key)}, not a ConfigMap")
            if key == "node.id":
                self.err(lw, "node.id must not be in the shared file: each pod sets its own (DR_NODE_ID)")
            if o["type"] == "STR" and not (o["min"] <= len(value.encode()) <= o["max"]):
                self.err(lw, f"{key}: length {len(value)} outside [{o['min']:.0f}, {o['max']:.0f}]")
            elif o["type"] in ("INT", "DBL"):
                try:
                    v = int(value) if o["type"] == "INT" else float(value)
                    if not (o["min"] <= v <= o["max"]):
                        self.err(lw, f"{key}: {value} outside [{o['min']:g}, {o['max']:g}]")
                except ValueError:
                    self.err(lw, f"{key}: {value!r} is not {'an integer' if o['type'] == 'INT' else 'a number'}")
            values[key] = value
        self.drover_conf = values

    def num(self, key):
        try:
            return float(self.drover_conf[key])
        except (KeyError, ValueError):
            return float("nan")

    def check_drover_cluster(self, dcs):
        v = self.drover_conf
        w = "drover.conf"
        if self.num("dispatch.retry_max_ms") < self.num("dispatch.ack_timeout_ms"):
            self.err(w, "dispatch.retry_max_ms must be >= dispatch.ack_timeout_ms")
        if self.num("lease.renew_ms") * 2 > self.num("lease.ttl_ms"):
            self.err(w, "lease.renew_ms must be at most half of lease.ttl_ms")
        if v.get("http.bind") in ("127.0.0.1", "::1", "localhost"):
            self.err(w, "http.bind is loopback: neither the Service nor the probes could reach the REST API")
        if v.get("http.duster_open") == "1":
            self.err(w, "http.duster_open = 1 is allowed only on loopback")
        for f, wl, c, b in dcs:
            replicas = int(wl.get("spec", {}).get("replicas", 1) or 1)
            longest = f"{name_of(wl)}-{max(replicas - 1, 0)}"
            limit = 64
            if len(longest) > limit - 3:  # room for ordinals up to 999
                self.err(f"{f}: {name_of(wl)}", f"pod names are too long for node.id (at most {limit} characters)")
            if re.search(r"[ /+#]", longest):
                self.err(f"{f}: {name_of(wl)}", "pod names would make an invalid node.id")
            for name, key in (("DR_REDIS_PASSWORD", None), ("DR_NATS_PASSWORD", "nats.user"), ("DR_MQTT_PASSWORD", "mqtt.username")):
                if (key is None or v.get(key)) and not env_value(c, name):
                    self.err(f"{f}: {name_of(wl)} container {c.get('name')}", f"{name} is not set")
            if b == "drover-ingress":
                self.check_ingress_probes(f, wl, c)
        # The hosts Drover connects to are Services of this folder, on ports those Services expose.
        self.check_endpoint("redis.host", v.get("redis.host"), v.get("redis.port"))
        for url in (v.get("nats.url") or "").split(","):
            m = re.fullmatch(r"\s*nats://([^:/@]+):(\d+)\s*", url)
            if not m:
                self.err(w, f"nats.url entry {url!r} is not nats://service:port")
            else:
                self.check_endpoint("nats.url", m.group(1), m.group(2))
        m = re.fullmatch(r"tcp://([^:/@]+):(\d+)", v.get("mqtt.url") or "")
        if not m:
            self.err(w, f"mqtt.url {v.get('mqtt.url')!r} is not tcp://service:port")
        else:
            self.check_endpoint("mqtt.url", m.group(1), m.group(2))

    def check_endpoint(self, key, host, port):
        svc = self.m.get("Service", host)
        if not svc:
            self.err("drover.conf", f"{key}: {host} is not a Service in k8s/")
            return
        ports = [p.get("port") for p in (svc.get("spec") or {}).get("ports", []) or []]
        if int(port or 0) not in ports:
            self.err("drover.conf", f"{key}: Service {host} has no port {port} (it has {ports})")

    def check_ingress_probes(self, f, w, c):
        where = f"{f}: {name_of(w)} container {c.get('name')}"
        http_port = int(self.num("http.port"))
        if container_port(c, http_port) is None:
            self.err(where, f"http.port {http_port} is not a container port")
        for pname, want in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            p = (c.get(pname) or {}).get("httpGet")
            if not p:
                self.err(where, f"no {pname}.httpGet (expected {want})")
                continue
            if p.get("path") != want:
                self.err(where, f"{pname} path {p.get('path')!r}, expected {want}")
            if self.routes.get(("GET", p.get("path"))) is not True:
                self.err(where, f"{pname}: GET {p.get('path')} is not an open route of services/ingress/http_api.c")
            if container_port(c, p.get("port")) != http_port:
                self.err(where, f"{pname} port {p.get('port')!r} is not http.port {http_port}")

    def check_grace(self, where, w, c):
        """SIGTERM hand-over: a preStop pause, then up to redis.timeout_ms for work in flight and again for
        the lease release; Kubernetes must not SIGKILL before that."""
        timeout_ms = 5000.0
        for _, cm in self.m.of_kind("ConfigMap"):
            for _, key, value in parse_drover_conf((cm.get("data") or {}).get("drover.conf", "")):
                if key == "redis.timeout_ms":
                    try:
                        timeout_ms = float(value)
                    except ValueError:
                        pass
        pre = 0
        cmd = (((c.get("lifecycle") or {}).get("preStop") or {}).get("exec") or {}).get("command") or []
        if len(cmd) == 2 and cmd[0].endswith("sleep"):
            pre = float(cmd[1])
        need = pre + 2 * timeout_ms / 1000 + 5
        grace = pod_spec(w).get("terminationGracePeriodSeconds", 30)
        if grace < need:
            self.err(where, f"terminationGracePeriodSeconds {grace} < {need:g} (preStop {pre:g} s + 2 x redis.timeout_ms + 5 s)")

    def run_drover_help(self, dcs, confs):
        if not self.bin_dir:
            self.notes.append("DROVER_BIN_DIR not set: the binaries were not asked to parse the configuration")
            return
        tmp = tempfile.mkdtemp(prefix="drover-k8s-")
        try:
            paths = {}
            for (cm_name, key), text in confs.items():
                p = os.path.join(tmp, f"{cm_name}-{key}")
                with open(p, "w", encoding="utf-8") as fh:
                    fh.write(text)
                paths[(cm_name, key)] = p
            for f, w, c, b in dcs:
                exe = os.path.join(self.bin_dir, b)
                where = f"{f}: {name_of(w)} running {exe}"
                if not os.access(exe, os.X_OK):
                    self.err(where, "not built (DROVER_BIN_DIR is set, so the binaries are expected)")
                    continue
                files = configmap_files(self.m, w, c)
                args = []
                it = iter(c.get("args") or [])
                for a in it:
                    if a == b:
                        continue
                    if a in ("-c", "--config"):
                        args += ["-c", paths.get(files.get(next(it, ""), ("", "")), "/nonexistent")]
                    else:
                        args.append(a)
                env = {k: os.environ[k] for k in ("PATH", "LANG") if k in os.environ}
                env["ASAN_OPTIONS"] = "detect_leaks=0"
                env.update(resolve_env(c, self.secret_data, f"{name_of(w)}-0"))
                r = subprocess.run([exe] + args + ["--help"], env=env, capture_output=True, text=True, timeout=30)
                if r.returncode != 0:
                    self.err(where, f"rejects the configuration: {(r.stderr or r.stdout).strip()}")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    # -- servers

    def workload_running(self, image_prefix):
        for f, w in self.m.workloads():
            for c in containers(w, init=False):
                if str(c.get("image", "")).split(":")[0] == image_prefix:
                    return f, w, c
        return None, None, None

    def secret_key_of(self, c, var):
        e = env_value(c, var) or {}
        return ((e.get("valueFrom") or {}).get("secretKeyRef") or {}).get("key")

    def same_secret(self, what, server_key, drover_var):
        for f, w, c, b in self.drover_containers():
            k = self.secret_key_of(c, drover_var)
            if k != server_key:
                self.err(f"{f}: {name_of(w)}", f"{drover_var} comes from Secret key {k!r}, but {what} uses {server_key!r}")

    def check_redis(self):
        f, w, c = self.workload_running("redis")
        if not w:
            self.err("k8s/", "no Redis workload (image redis:...)")
            return
        where = f"{f}: {name_of(w)}"
        if int(w["spec"].get("replicas", 1)) != 1:
            self.err(where, "Redis must run exactly one replica (one primary)")
        conf_files = configmap_files(self.m, w, c)
        cmd = " ".join((c.get("command") or []) + (c.get("args") or []))
        m = re.search(r"redis-server\s+(\S+)", cmd)
        if not m or m.group(1) not in conf_files:
            self.err(where, "redis-server is not started with a config file from a ConfigMap")
            return
        cm_name, key = conf_files[m.group(1)]
        text = (self.m.get("ConfigMap", cm_name).get("data") or {}).get(key, "")
        d = {}
        for k, v in parse_space_conf(text):
            d[k] = v
        want = {
            "appendonly": "yes",
            "appendfsync": "always",
            "maxmemory-policy": "noeviction",
            "hash-max-listpack-value": "1024",
            "stream-node-max-bytes": "512",
            "protected-mode": "yes",
        }
        for k, v in want.items():
            if d.get(k) != v:
                self.err(where, f"redis.conf: {k} is {d.get(k)!r}, expected {v!r} (docs/operations.md §4)")
        if "requirepass" in d:
            self.err(where, "redis.conf: requirepass in a ConfigMap; it must come from the Secret")
        inc = d.get("include")
        if not inc or mount_kind(w, c, inc) != "emptyDir" or inc not in cmd:
            self.err(where, "the password file (include ...) must be written at start into an emptyDir")
        if mount_kind(w, c, d.get("dir", "")) != "pvc":
            self.err(where, f"redis.conf dir {d.get('dir')!r} is not on a PersistentVolumeClaim")
        if "REDISCLI_AUTH" not in cmd:
            self.err(where, "requirepass is not written from the Secret's variable REDISCLI_AUTH")
        key = self.secret_key_of(c, "REDISCLI_AUTH")
        if not key:
            self.err(where, "REDISCLI_AUTH does not come from the Secret")
        self.same_secret("Redis requirepass", key, "DR_REDIS_PASSWORD")
        if self.run_tools:
            self.run_redis(where, text, inc)

    def run_redis(self, where, text, include):
        exe = shutil.which("redis-server")
        cli = shutil.which("redis-cli")
        if not exe or not cli:
            self.notes.append("redis-server not installed: Redis's config was not tried")
            return
        tmp = tempfile.mkdtemp(prefix="drover-k8s-redis-")
        proc = None
        try:
            inc = os.path.join(tmp, "auth.conf")
            with open(inc, "w") as fh:
                fh.write("requirepass pCheck0123456789abcdef\n")
            conf = text.replace(include, inc)
            conf = re.sub(r"(?m)^dir .*$", f"dir {tmp}", conf)
            path = os.path.join(tmp, "redis.conf")
            with open(path, "w") as fh:
                fh.write(conf)
            sock = os.path.join(tmp, "redis.sock")
            proc = subprocess.Popen([exe, path, "--port", "0", "--unixsocket", sock, "--logfile", os.path.join(tmp, "log")],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            env = dict(os.environ, REDISCLI_AUTH="pCheck0123456789abcdef")
            got = None
            for _ in range(100):
                if proc.poll() is not None:
                    break
                r = subprocess.run([cli, "-s", sock, "CONFIG", "GET", "appendfsync"], env=env, capture_output=True, text=True)
                if r.stdout.split() == ["appendfsync", "always"]:
                    got = True
                    break
                time.sleep(0.05)
            if not got:
                log = ""
                if os.path.exists(os.path.join(tmp, "log")):
                    log = open(os.path.join(tmp, "log")).read()[-400:]
                self.err(where, f"redis-server did not run with redis.conf: {(proc.stderr.read() if proc.poll() is not None else '') or log}")
            else:
                subprocess.run([cli, "-s", sock, "SHUTDOWN", "NOSAVE"], env=env, capture_output=True)
        finally:
            if proc and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
            shutil.rmtree(tmp, ignore_errors=True)

    def check_nats(self):
        f, w, c = self.workload_running("nats")
        if not w:
            self.err("k8s/", "no NATS workload (image nats:...)")
            return
        where = f"{f}: {name_of(w)}"
        replicas = int(w["spec"].get("replicas", 1))
        if replicas < 3:
            self.err(where, f"NATS runs {replicas} replicas; a cluster needs 3")
        files = configmap_files(self.m, w, c)
        args = c.get("args") or []
        cfg = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-c", "--config")), None)
        if cfg not in files:
            self.err(where, "nats-server is not started with --config FILE from a ConfigMap")
            return
        cm_name, key = files[cfg]
        text = (self.m.get("ConfigMap", cm_name).get("data") or {}).get(key, "")
        env = resolve_env(c, self.secret_data, f"{name_of(w)}-0")
        # Routes: every $VAR in routes must be an env var holding a route to an existing pod through a
        # headless Service that publishes pods before they are ready.
        rm = re.search(r"routes\s*[:=]?\s*\[(.*?)\]", text, re.S)
        if not rm:
            self.err(where, "nats.conf has no cluster routes")
        else:
            refs = re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", rm.group(1))
            if len(refs) < min(replicas, 3):
                self.err(where, f"nats.conf lists {len(refs)} routes for {replicas} servers")
            for ref in refs:
                url = env.get(ref)
                mm = re.fullmatch(r"nats-route://[^@]+@([a-z0-9-]+)-(\d+)\.([a-z0-9-]+):(\d+)", url or "")
                if not mm:
                    self.err(where, f"route ${ref} = {url!r} is not nats-route://user:pass@<pod>.<service>:port")
                    continue
                sts, ordinal, svc_name, port = mm.group(1), int(mm.group(2)), mm.group(3), int(mm.group(4))
                if sts != name_of(w) or ordinal >= replicas:
                    self.err(where, f"route ${ref} points at {sts}-{ordinal}, which is not a pod of {name_of(w)} ({replicas} replicas)")
                svc = self.m.get("Service", svc_name)
                if svc_name != w["spec"].get("serviceName") or not svc:
                    self.err(where, f"route ${ref}: {svc_name} is not the StatefulSet's serviceName")
                elif (svc.get("spec") or {}).get("clusterIP") != "None" or not (svc.get("spec") or {}).get("publishNotReadyAddresses"):
                    self.err(where, f"route ${ref}: Service {svc_name} must be headless with publishNotReadyAddresses")
                elif port not in [p.get("port") for p in svc["spec"].get("ports", [])] or container_port(c, port) is None:
                    self.err(where, f"route ${ref}: port {port} is not the cluster port")
        for var in sorted(set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))):
            if var not in env:
                self.err(where, f"nats.conf refers to ${var}, which the container's env does not define")
        um = re.search(r"authorization\s*\{[^}]*user\s*[:=]\s*\"?([A-Za-z0-9_-]+)", text)
        if not um or um.group(1) != (self.drover_conf or {}).get("nats.user"):
            self.err(where, f"the NATS user ({um.group(1) if um else None}) is not drover.conf's nats.user")
        self.same_secret("NATS", self.secret_key_of(c, "NATS_PASSWORD"), "DR_NATS_PASSWORD")
        if self.run_tools:
            exe = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.path.exists("/usr/sbin/nats-server") else None)
            if not exe:
                self.notes.append("nats-server not installed: NATS's config was not tried")
                return
            tmp = tempfile.mkdtemp(prefix="drover-k8s-nats-")
            try:
                path = os.path.join(tmp, "nats.conf")
                with open(path, "w") as fh:
                    fh.write(text)
                r = subprocess.run([exe, "-c", path, "-t"], env=dict(env, PATH=os.environ.get("PATH", "")),
                                   capture_output=True, text=True, timeout=30)
                if r.returncode != 0:
                    self.err(where, f"nats-server -t rejects nats.conf: {(r.stderr or r.stdout).strip()}")
            finally:
                shutil.rmtree(tmp, ignore_errors=True)

    def check_mosquitto(self):
        f, w, c = self.workload_running("eclipse-mosquitto")
        if not w:
            self.err("k8s/", "no MQTT broker workload (image eclipse-mosquitto:...)")
            return
        where = f"{f}: {name_of(w)}"
        files = configmap_files(self.m, w, c)
        cmd = (c.get("command") or []) + (c.get("args") or [])
        cfg = next((cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == "-c"), None)
        if cfg not in files:
            self.err(where, "mosquitto is not started with -c FILE from a ConfigMap")
            return
        cm_name, key = files[cfg]
        text = (self.m.get("ConfigMap", cm_name).get("data") or {}).get(key, "")
        d = dict(parse_space_conf(text))
        if d.get("allow_anonymous") != "false":
            self.err(where, "mosquitto.conf: allow_anonymous must be false")
        try:
            if int(d.get("max_queued_messages", "1000")) <= 1000:
                raise ValueError
        except ValueError:
            self.err(where, "mosquitto.conf: raise max_queued_messages above the default 1000 (docs/operations.md §1)")
        if d.get("set_tcp_nodelay") != "true":
            self.err(where, "mosquitto.conf: set_tcp_nodelay must be true (docs/operations.md §1)")
        if d.get("persistence") != "true" or mount_kind(w, c, d.get("persistence_location", "")) != "pvc":
            self.err(where, "mosquitto.conf: persistence must be on, on a PersistentVolumeClaim")
        acl = d.get("acl_file")
        if acl and acl not in files:
            self.err(where, f"acl_file {acl} is not mounted from a ConfigMap")
        pw = d.get("password_file", "")
        if mount_kind(w, c, pw) != "emptyDir":
            self.err(where, "password_file must be on an emptyDir filled by the init container")
        inits = [i for i in pod_spec(w).get("initContainers", []) or [] if pw and pw in " ".join((i.get("command") or []) + (i.get("args") or []))]
        if not inits or "mosquitto_passwd" not in " ".join(inits[0].get("command") or []):
            self.err(where, f"no init container builds {pw or 'the password file'} with mosquitto_passwd")
            return
        init = inits[0]
        script = " ".join(init.get("command") or [])
        user = (self.drover_conf or {}).get("mqtt.username", "")
        um = re.search(r"printf\s+'([A-Za-z0-9._-]+):%s", script)
        if not um or um.group(1) != user:
            self.err(where, f"the init container does not create drover.conf's mqtt.username {user!r}")
        else:
            var = re.search(re.escape(um.group(0)) + r"\\n'\s+\"\$([A-Za-z_]+)\"", script)
            self.same_secret("the broker's drover user", self.secret_key_of(init, var.group(1)) if var else None, "DR_MQTT_PASSWORD")

    # -- image

    def check_containerfile(self):
        cf = self.m.repo.containerfile
        where = "deploy/container/Containerfile"
        stages = re.split(r"(?im)^FROM\s+", cf)
        if len(stages) < 3:
            self.err(where, "expected a multi-stage build (build stage, runtime stage)")
            return
        runtime = stages[-1]
        if not runtime.lower().startswith("debian:12"):
            self.err(where, "the runtime stage is not Debian 12")
        if not re.search(r'(?m)^ENTRYPOINT\s+\[\s*"/usr/bin/tini"', runtime):
            self.err(where, "ENTRYPOINT must be tini: it reaps and forwards signals, so a service is never PID 1")
        m = re.search(r"(?m)^USER\s+(\d+)", runtime)
        if not m or m.group(1) == "0":
            self.err(where, "the runtime stage must switch to a numeric non-root USER")
        for src in re.findall(r"(?m)^COPY\s+(?!--from)(\S+)\s", cf):
            if not os.path.exists(os.path.join(self.m.repo.root, src)):
                self.err(where, f"COPY {src}: no such path in the repository")
        inst = re.search(r"apt-get install[^\n]*?--no-install-recommends((?:[^\n]*\\\n)*[^\n]*)", runtime)
        pkgs = set(re.findall(r"\b(lib[a-z0-9.+-]+|tini)\b", inst.group(1))) if inst else set()
        if "tini" not in pkgs:
            self.err(where, "the runtime stage does not install tini")
        if self.run_tools:
            self.check_runtime_packages(where, pkgs)

    def check_runtime_packages(self, where, pkgs):
        if not self.bin_dir:
            return
        ldconfig = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p)), None)
        if not (shutil.which("readelf") and shutil.which("dpkg") and ldconfig):
            self.notes.append("readelf/dpkg/ldconfig missing: the image's runtime packages were not compared with the binaries")
            return
        cache = {}
        for line in subprocess.run([ldconfig, "-p"], capture_output=True, text=True).stdout.splitlines():
            mm = re.match(r"\s*(\S+) \(([^)]*)\) => (\S+)", line)
            if mm and ("x86-64" in mm.group(2) or "64bit" in mm.group(2) or mm.group(1) not in cache):
                cache[mm.group(1)] = mm.group(3)
        needed = set()
        for b in DROVER_BINARIES + ("drover-ctl",):
            exe = os.path.join(self.bin_dir, b)
            if not os.path.exists(exe):
                continue
            out = subprocess.run(["readelf", "-d", exe], capture_output=True, text=True).stdout
            needed |= set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out))
        for soname in sorted(needed):
            path = cache.get(soname)
            if not path:
                self.err(where, f"{soname}: not found by ldconfig")
                continue
            r = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True, text=True)
            if r.returncode != 0:
                r = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
            pkg = r.stdout.split(":", 1)[0].strip() if r.returncode == 0 else None
            if not pkg:
                self.notes.append(f"{soname}: no Debian package owns {path}")
                continue
            if pkg in BASE_IMAGE_PACKAGES or SANITIZER_PACKAGE.match(pkg):
                continue
            if pkg not in pkgs:
                self.err(where, f"the binaries need {soname} from {pkg}, which the runtime stage does not install")


# ---- mutations: the checker must catch each of these ---------------------------------------------


def _doc(model, kind, name):
    for f, d in model.objects:
        if isinstance(d, dict) and d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
            return d
    raise KeyError(f"{kind}/{name}")


def _container(model, sts, cname):
    return next(c for c in containers(_doc(model, "StatefulSet", sts)) if c.get("name") == cname)


def _mut_secret_key(m):
    tmpl = m.secret_template()
    tmpl["stringData"].pop("nats-password")


def _mut_selector(m):
    _doc(m, "Service", "drover-ingress")["spec"]["selector"]["app.kubernetes.io/name"] = "drover-ingres"


def _mut_conf_key(m):
    cm = _doc(m, "ConfigMap", "drover-config")
    cm["data"]["drover.conf"] += "dispatch.windw = 2\n"


def _mut_conf_bounds(m):
    cm = _doc(m, "ConfigMap", "drover-config")
    cm["data"]["drover.conf"] += "lease.renew_ms = 9000\n"


def _mut_env(m):
    e = env_value(_container(m, "drover-dispatcher", "dispatcher"), "DR_REDIS_PASSWORD")
    e["name"] = "DR_REDIS_PASSWRD"


def _mut_probe_port(m):
    _container(m, "drover-ingress", "ingress")["readinessProbe"]["httpGet"]["port"] = "rest"


def _mut_probe_path(m):
    _container(m, "drover-ingress", "ingress")["livenessProbe"]["httpGet"]["path"] = "/health"


def _mut_namespace(m):
    _doc(m, "Service", "drover-mqtt")["metadata"].pop("namespace")


def _mut_grace(m):
    pod_spec(_doc(m, "StatefulSet", "drover-dispatcher"))["terminationGracePeriodSeconds"] = 5


def _mut_appendfsync(m):
    cm = _doc(m, "ConfigMap", "drover-redis")
    cm["data"]["redis.conf"] = cm["data"]["redis.conf"].replace("appendfsync always", "appendfsync everysec")


def _mut_route(m):
    c = _container(m, "drover-nats", "nats")
    e = env_value(c, "NATS_ROUTE_2")
    e["value"] = e["value"].replace("drover-nats-2.", "drover-nats-3.")


def _mut_command(m):
    c = _container(m, "drover-ingress", "ingress")
    c["command"] = c.pop("args")


def _mut_node_id(m):
    e = env_value(_container(m, "drover-ingress", "ingress"), "DR_NODE_ID")
    e.pop("valueFrom")
    e["value"] = "ingress"


def _mut_target_port(m):
    _doc(m, "Service", "drover-redis")["spec"]["ports"][0]["targetPort"] = 6380


def _mut_mqtt_user(m):
    cm = _doc(m, "ConfigMap", "drover-config")
    cm["data"]["drover.conf"] = cm["data"]["drover.conf"].replace("mqtt.username = drover", "mqtt.username = drovr")


def _mut_kustomization(m):
    m.repo.docs["kustomization.yaml"][0]["resources"].remove("nats.yaml")


MUTATIONS = [
    ("Secret key missing from the template", _mut_secret_key, "nats-password"),
    ("Service selector matching nothing", _mut_selector, "matches no workload"),
    ("unknown drover.conf key", _mut_conf_key, "dispatch.windw"),
    ("cross-key rule broken", _mut_conf_bounds, "lease.renew_ms"),
    ("DR_* variable of no option", _mut_env, "DR_REDIS_PASSWRD"),
    ("probe on an undeclared port", _mut_probe_port, "does not declare"),
    ("probe on a missing route", _mut_probe_path, "/health"),
    ("object without namespace", _mut_namespace, "namespace"),
    ("grace period shorter than the hand-over", _mut_grace, "terminationGracePeriodSeconds"),
    ("Redis without appendfsync always", _mut_appendfsync, "appendfsync"),
    ("NATS route to a pod that does not exist", _mut_route, "drover-nats-3"),
    ("command replacing tini", _mut_command, "tini"),
    ("node.id not from the pod name", _mut_node_id, "DR_NODE_ID"),
    ("Service targetPort not on the pod", _mut_target_port, "targetPort"),
    ("MQTT user the broker does not have", _mut_mqtt_user, "mqtt.username"),
    ("manifest left out of kustomization.yaml", _mut_kustomization, "nats.yaml"),
]


def self_test(repo):
    failures = []
    for what, mutate, expect in MUTATIONS:
        r = copy.deepcopy(repo)
        m = Model(r)
        mutate(m)
        errors = Checker(m, run_tools=False, bin_dir=None).run()
        if not any(expect in e for e in errors):
            failures.append(f"self-test: '{what}' was not reported (expected an error mentioning {expect!r}; got {errors[:3]})")
    return failures


# ---- the Helm chart -----------------------------------------------------------------------------


def check_chart(root):
    """Renders the chart: (rendered files with default values, errors). The manifests must be that
    render; other values must give what values.yaml promises, and bad values a clear error."""
    errors = []
    chart = os.path.join(root, "k8s", "chart", "drover")
    try:
        rendered = render_chart.render(chart)
    except render_chart.TemplateError as e:
        return None, [f"k8s/chart/drover: {e}"]
    errors += render_chart.differences(rendered, os.path.join(root, "k8s"))
    # The sync check must be able to fail: a changed render is reported.
    some = sorted(rendered)[0]
    changed = dict(rendered, **{some: rendered[some] + "# changed\n"})
    if not any(some in d for d in render_chart.differences(changed, os.path.join(root, "k8s"))):
        errors.append("self-test: a render that differs from k8s/ was not reported")

    def variant(sets):
        try:
            return {f: [d for d in yaml.safe_load_all(t) if d] for f, t in render_chart.render(chart, sets=sets).items()}, None
        except render_chart.TemplateError as e:
            return None, str(e)

    out, e = variant(["redis.enabled=false"])
    if out is not None or "redis.external.host" not in (e or ""):
        errors.append("chart: redis.enabled=false without redis.external.host must fail naming that value")
    out, e = variant(["redis.enabled=false", "redis.external.host=redis.example.internal", "redis.external.port=6380"])
    if e:
        errors.append(f"chart: external Redis: {e}")
    else:
        conf = next((d["data"]["drover.conf"] for d in out.get("config.yaml", []) if d.get("kind") == "ConfigMap"), "")
        if "redis.yaml" in out or "redis.host = redis.example.internal" not in conf or "redis.port = 6380" not in conf:
            errors.append("chart: with an external Redis, no Redis is rendered and drover.conf points at redis.external")
    out, e = variant(["serviceMonitor.enabled=true", "serviceMonitor.labels.release=prom"])
    if e:
        errors.append(f"chart: serviceMonitor.enabled: {e}")
    else:
        sm = [d for d in out.get("servicemonitor.yaml", []) if d.get("kind") == "ServiceMonitor"]
        disp = [d for d in out.get("dispatcher.yaml", []) if d.get("kind") == "StatefulSet"]
        c = containers(disp[0])[0] if disp else {}
        ports = {p.get("name"): p.get("containerPort") for p in c.get("ports", []) or []}
        if not sm or sm[0]["metadata"]["labels"].get("release") != "prom" or ports.get("metrics") != 9102:
            errors.append("chart: serviceMonitor.enabled must render a ServiceMonitor and the dispatcher's metrics port")
    if "servicemonitor.yaml" in rendered:
        errors.append("chart: the ServiceMonitor must be off by default (it needs the Prometheus Operator's CRDs)")
    errors += render_chart.self_test()
    return rendered, errors


# ---- main ---------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
    a = ap.parse_args()
    repo = Repo(a.root)
    bin_dir = os.environ.get("DROVER_BIN_DIR") or None
    checker = Checker(Model(repo), run_tools=True, bin_dir=bin_dir)
    errors = checker.run()
    rendered, chart_errors = check_chart(a.root)
    errors += chart_errors
    if rendered is not None:
        # The same checks on a fresh render (identical to k8s/ when in sync, so this catches a chart
        # change whose manifests were not regenerated as well as one that breaks an invariant).
        errors += [f"chart render: {e}" for e in Checker(Model(Repo(a.root, rendered)), run_tools=True, bin_dir=bin_dir).run()]
    for n in checker.notes:
        print(f"note: {n}")
    if errors:
        for e in errors:
            print(f"FAIL {e}")
        print(f"{len(errors)} problem(s) found")
        return 1
    failures = self_test(repo)
    for f in failures:
        print(f"FAIL {f}")
    if failures:
        return 1
    nobj = len(Model(repo).objects)
    print(f"ok: {nobj} objects in {len(repo.docs)} files of k8s/, the same as the chart's render; "
          f"all {len(MUTATIONS)} deliberate breaks were caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
