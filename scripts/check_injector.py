"""The `check_deploy.py injector` check: a rendered tokex-injector chart, for what its schemas
cannot see.

The API server reaches `tokex inject` only if the MutatingWebhookConfiguration, the Service, the
Deployment, its inject.yaml and the TLS material agree: the webhook calls the Service on /inject,
whose port leads to the port inject.yaml listens on; the certificate inject.yaml names is the
one the TLS Secret holds, mounted where inject.yaml looks, and the caBundle (generated at
install) or cert-manager's CA (cert-manager.io/inject-ca-from) verifies it for the Service's
name. The webhook's failurePolicy is inject.yaml's failure_policy; its selectors call the
webhook once for an opted-in pod and never for the injector's own namespace or kube-system.
"""

import base64
import re
import subprocess
import tempfile
from pathlib import Path

import yaml

INJECT_LABEL = "tokex.io/inject"
TLS_SECRET_KEYS = {"cert_file": "tls.crt", "key_file": "tls.key"}


def split_addr(addr):
    host, _, port = str(addr).rpartition(":")
    return host.strip("[]"), int(port)


# --------------------------------------------------------------------------------------------
# Label selectors, as the API server evaluates namespaceSelector and objectSelector
# --------------------------------------------------------------------------------------------


def selects(selector, labels):
    """Whether a LabelSelector matches `labels`; an absent selector matches everything."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def opt_in_cases(own_namespace):
    """(namespace, namespace labels, pod labels, webhook calls wanted): the documented opt-in."""
    on, off = {INJECT_LABEL: "enabled"}, {INJECT_LABEL: "disabled"}
    cases = [("apps", on, {}, 1), ("apps", on, on, 1), ("apps", on, off, 0),
             ("apps", {}, on, 1), ("apps", {}, {}, 0), ("apps", {}, off, 0),
             ("apps", off, on, 0), ("apps", off, {}, 0)]
    cases += [(ns, on, on, 0) for ns in (own_namespace, "kube-system")]
    return cases


# --------------------------------------------------------------------------------------------
# The check
# --------------------------------------------------------------------------------------------


def by_kind(docs, kind):
    return [d for d in docs if d.get("kind") == kind]


def named(docs, kind, name):
    return next((d for d in by_kind(docs, kind) if d["metadata"].get("name") == name), None)


def resolve_port(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def mount_of(container, volumes, path):
    """(volume, path inside it) providing `path` through a whole-directory mount, else None."""
    for m in container.get("volumeMounts") or []:
        mp = m.get("mountPath", "").rstrip("/")
        if path.startswith(mp + "/") and not m.get("subPath") and not m.get("subPathExpr"):
            return volumes.get(m.get("name")), path[len(mp) + 1:]
    return None


def key_at(source, rel):
    """The ConfigMap or Secret key a volume source shows at `rel` (items map keys to paths)."""
    items = source.get("items")
    if not items:
        return rel
    return next((i.get("key") for i in items if i.get("path") == rel), None)


def problems_of(docs, source, pem_dir):
    """Every disagreement in one rendered release; returns (problems, summary)."""
    deployments = by_kind(docs, "Deployment")
    webhooks = by_kind(docs, "MutatingWebhookConfiguration")
    if len(deployments) != 1 or len(webhooks) != 1:
        return [f"{source}: expected one Deployment and one MutatingWebhookConfiguration, "
                f"found {len(deployments)} and {len(webhooks)}"], ""
    release = Release(docs, source, deployments[0], webhooks[0])
    out = release.find_config()
    if out:
        return out, ""
    out += release.container_problems()
    tls_secret, p = release.tls_mount()
    out += p
    out += release.availability_problems()
    out += release.webhook_problems()
    mode, p = release.tls_problems(tls_secret, pem_dir)
    out += p
    summary = (f"{len(release.webhooks)} webhooks -> Service {release.service_dns}:443/inject -> "
               f":{release.listen_port}, failurePolicy {release.cfg.get('failure_policy')}, TLS "
               f"{mode} in Secret {tls_secret}, {release.replicas} replicas with a budget")
    return out, summary


class Release:
    """One rendering of the chart: the objects, and the injector's container and inject.yaml."""

    def __init__(self, docs, source, deployment, mwc):
        self.docs, self.source, self.mwc = docs, source, mwc
        self.webhooks = mwc.get("webhooks") or []
        self.ns = deployment["metadata"].get("namespace")
        self.name = f"{source} Deployment/{deployment['metadata']['name']}"
        self.replicas = deployment["spec"].get("replicas", 1)
        self.template = deployment["spec"]["template"]
        self.pod = self.template["spec"]
        self.pod_labels = self.template["metadata"].get("labels") or {}
        self.volumes = {v["name"]: v for v in self.pod.get("volumes") or []}
        service = (self.webhooks[0].get("clientConfig") or {}).get("service") if self.webhooks else {}
        self.service_dns = f"{(service or {}).get('name')}.{self.ns}.svc"
        self.container, self.cfg, self.listen_port = None, {}, None

    def find_config(self):
        """The container that runs `tokex inject`, and its inject.yaml from a mounted ConfigMap."""
        found = [c for c in self.pod.get("containers") or []
                 if (c.get("args") or [])[:1] == ["inject"]]
        if len(found) != 1:
            return [f"{self.name}: no single container runs `tokex inject`"]
        c = self.container = found[0]
        self.where = f"{self.name} containers[{c['name']}]"
        args = c["args"]
        path = args[args.index("--config") + 1] if "--config" in args[:-1] else ""
        got = mount_of(c, self.volumes, path)
        volume = (got or (None, ""))[0] or {}
        cm = named(self.docs, "ConfigMap", (volume.get("configMap") or {}).get("name"))
        if cm is None:
            return [f"{self.where}: --config {path} is not in a ConfigMap of the release "
                    "mounted as a directory"]
        text = (cm.get("data") or {}).get(key_at(volume["configMap"], got[1]))
        cfg = ((yaml.safe_load(text) if text else None) or {}).get("inject")
        if not isinstance(cfg, dict) or ":" not in str(cfg.get("listen", "")):
            return [f"{self.where}: {path} has no `inject` section with a listen address"]
        self.cfg = cfg
        self.listen_port = split_addr(cfg["listen"])[1]
        return []

    def container_problems(self):
        """inject.yaml's own values; the port, HTTPS probes and lockdown of the container."""
        out, c, cfg, where = [], self.container, self.cfg, self.where
        if cfg.get("image") != c.get("image"):
            out.append(f"{where}: runs {c.get('image')} but injects {cfg.get('image')}; one "
                       "release for both")
        if cfg.get("failure_policy") not in ("Fail", "Ignore"):
            out.append(f"{where}: inject.yaml failure_policy is {cfg.get('failure_policy')!r}")
        sidecar = cfg.get("sidecar") or {}
        res = sidecar.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        if not (all(isinstance(sidecar.get(k), int) for k in ("proxy_port", "admin_port"))
                and requests.get("cpu") and requests.get("memory") and limits.get("memory")):
            out.append(f"{where}: inject.yaml sidecar needs proxy_port, admin_port, requests and "
                       "a memory limit")
        if self.listen_port not in [p.get("containerPort") for p in c.get("ports") or []]:
            out.append(f"{where}: declares no containerPort {self.listen_port} (inject.yaml "
                       "listen)")
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            if (get.get("path"), get.get("scheme"), resolve_port(c, get.get("port"))) != (
                    path, "HTTPS", self.listen_port):
                out.append(f"{where}: {probe} must be GET {path} over HTTPS on "
                           f"{self.listen_port}, is {get.get('path')} "
                           f"{get.get('scheme', 'HTTP')} on {get.get('port')}")
        sc, psc = c.get("securityContext") or {}, self.pod.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            out.append(f"{where}: runAsNonRoot is not true")
        if (sc.get("allowPrivilegeEscalation") is not False
                or sc.get("readOnlyRootFilesystem") is not True):
            out.append(f"{where}: allowPrivilegeEscalation false and readOnlyRootFilesystem "
                       "true are required")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            out.append(f"{where}: capabilities.drop must contain ALL")
        seccomp = sc.get("seccompProfile") or psc.get("seccompProfile") or {}
        if seccomp.get("type") != "RuntimeDefault":
            out.append(f"{where}: seccompProfile must be RuntimeDefault")
        if c.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            out.append(f"{where}: terminationMessagePolicy must be FallbackToLogsOnError")
        checksum = (self.template["metadata"].get("annotations") or {}).get("checksum/config")
        if not re.fullmatch(r"[0-9a-f]{64}", str(checksum)):
            out.append(f"{self.name}: no checksum/config annotation: a changed inject.yaml "
                       "would not roll the replicas")
        if self.pod.get("automountServiceAccountToken") is not False:
            out.append(f"{self.name}: automountServiceAccountToken must be false (no API "
                       "access needed)")
        return out

    def tls_mount(self):
        """The one Secret mounted, as a directory, where inject.yaml reads certificate and key."""
        out, secrets = [], set()
        for key, want in TLS_SECRET_KEYS.items():
            got = mount_of(self.container, self.volumes, str(self.cfg.get(key, "")))
            secret = ((got or (None, ""))[0] or {}).get("secret")
            if not secret:
                out.append(f"{self.where}: inject.yaml {key} {self.cfg.get(key)} is not in a "
                           "Secret mounted as a directory")
                continue
            secrets.add(secret.get("secretName"))
            if key_at(secret, got[1]) != want:
                out.append(f"{self.where}: {self.cfg.get(key)} is not the Secret's key {want}")
        if len(secrets) != 1:
            out.append(f"{self.where}: certificate and key must come from one Secret, found "
                       f"{sorted(secrets)}")
        return next(iter(secrets), None) if len(secrets) == 1 else None, out

    def availability_problems(self):
        """Two replicas, one budget that leaves room for a drain, a NetworkPolicy that fits."""
        out = []
        if self.replicas < 2:
            out.append(f"{self.name}: replicas {self.replicas}; the webhook needs two to "
                       "survive a drain")
        pdbs = [p for p in by_kind(self.docs, "PodDisruptionBudget")
                if selects(p["spec"].get("selector"), self.pod_labels)]
        if len(pdbs) != 1 or not 1 <= pdbs[0]["spec"].get("minAvailable", 0) < self.replicas:
            out.append(f"{self.name}: needs one PodDisruptionBudget with 1 <= minAvailable < "
                       "replicas")
        for np in by_kind(self.docs, "NetworkPolicy"):
            where = f"{self.source} NetworkPolicy/{np['metadata']['name']}"
            spec = np["spec"]
            if not selects(spec.get("podSelector"), self.pod_labels):
                out.append(f"{where}: does not select the injector's pods")
            if sorted(spec.get("policyTypes") or []) != ["Egress", "Ingress"] or spec.get("egress"):
                out.append(f"{where}: must govern Ingress and Egress and allow no egress")
            ports = [resolve_port(self.container, p.get("port"))
                     for r in spec.get("ingress") or [] for p in r.get("ports") or []]
            if not ports or set(ports) != {self.listen_port}:
                out.append(f"{where}: ingress must be to port {self.listen_port} only, is {ports}")
        return out

    def webhook_problems(self):
        """Each webhook calls the Service on /inject with the agreed policy; the selectors call
        exactly once for each documented opt-in."""
        out = []
        services = {s["metadata"]["name"]: s for s in by_kind(self.docs, "Service")}
        cases = opt_in_cases(self.ns)
        calls = [0] * len(cases)
        for w in self.webhooks:
            wn = f"{self.source} webhook {w.get('name')}"
            ref = (w.get("clientConfig") or {}).get("service") or {}
            out += self.service_problems(wn, ref, services.get(ref.get("name")))
            if ref.get("path") != "/inject":
                out.append(f"{wn}: path is {ref.get('path')}, tokex inject answers /inject")
            if w.get("failurePolicy") != self.cfg.get("failure_policy"):
                out.append(f"{wn}: failurePolicy {w.get('failurePolicy')}, inject.yaml "
                           f"failure_policy {self.cfg.get('failure_policy')}: they must agree")
            for k, want in (("sideEffects", "None"), ("admissionReviewVersions", ["v1"]),
                            ("reinvocationPolicy", "IfNeeded"), ("matchPolicy", "Equivalent")):
                if w.get(k) != want:
                    out.append(f"{wn}: {k} is {w.get(k)!r}, expected {want!r}")
            if not 1 <= w.get("timeoutSeconds", 10) <= 30:
                out.append(f"{wn}: timeoutSeconds {w.get('timeoutSeconds')} outside 1..30")
            rules = [(r.get("operations"), r.get("apiGroups"), r.get("resources"))
                     for r in w.get("rules") or []]
            if rules != [(["CREATE"], [""], ["pods"])]:
                out.append(f"{wn}: rules {rules} are not pods CREATE alone")
            for i, (case_ns, ns_labels, labels, _) in enumerate(cases):
                ns_labels = dict(ns_labels, **{"kubernetes.io/metadata.name": case_ns})
                if selects(w.get("namespaceSelector"), ns_labels) and selects(
                        w.get("objectSelector"), labels):
                    calls[i] += 1
        for (case_ns, ns_labels, labels, want), got in zip(cases, calls):
            if got != want:
                out.append(f"{self.source}: a pod labelled {labels or 'nothing'} in namespace "
                           f"{case_ns} labelled {ns_labels or 'nothing'} gets {got} webhook "
                           f"call(s), expected {want}")
        return out

    def service_problems(self, wn, ref, svc):
        if svc is None or ref.get("namespace") != self.ns or svc["metadata"].get("namespace") != self.ns:
            return [f"{wn}: calls Service {ref.get('namespace')}/{ref.get('name')}, not the "
                    f"release's Service in {self.ns}"]
        out = []
        port = next((p for p in svc["spec"].get("ports") or []
                     if p.get("port") == ref.get("port", 443)), None)
        if port is None or resolve_port(self.container, port.get("targetPort", port.get("port"))) \
                != self.listen_port:
            out.append(f"{wn}: Service {svc['metadata']['name']} port {ref.get('port', 443)} "
                       f"does not lead to the listen port {self.listen_port}")
        selector = svc["spec"].get("selector")
        if not selector or not selects({"matchLabels": selector}, self.pod_labels):
            out.append(f"{wn}: Service {svc['metadata']['name']} does not select the pods")
        return out

    def tls_problems(self, tls_secret, pem_dir):
        """The caBundle verifies the Secret's certificate, or cert-manager injects the CA."""
        bundles = [(w.get("clientConfig") or {}).get("caBundle") for w in self.webhooks]
        annotation = (self.mwc["metadata"].get("annotations") or {}).get(
            "cert-manager.io/inject-ca-from")
        if annotation:
            if any(bundles):
                return "cert-manager", [f"{self.source}: both a caBundle and cert-manager.io/"
                                        "inject-ca-from; the cainjector overwrites the chart's"]
            cert = named(self.docs, "Certificate", annotation.split("/", 1)[-1])
            if annotation.split("/", 1)[0] != self.ns or cert is None:
                return "cert-manager", [f"{self.source}: cert-manager.io/inject-ca-from "
                                        f"{annotation} names no Certificate of the release in "
                                        f"{self.ns}"]
            return "cert-manager", certificate_problems(self.docs, cert, tls_secret,
                                                        self.service_dns, self.source)
        if not bundles or not all(bundles) or len(set(bundles)) != 1:
            return "none", [f"{self.source}: every webhook needs the same caBundle, or the "
                            "configuration the annotation cert-manager.io/inject-ca-from"]
        secret = named(self.docs, "Secret", tls_secret)
        if secret is None or secret.get("type") != "kubernetes.io/tls":
            return "generated", [f"{self.source}: the caBundle is set but no kubernetes.io/tls "
                                 f"Secret {tls_secret} is in the release"]
        return "generated", verify(secret.get("data") or {}, bundles[0], self.service_dns,
                                   self.source, pem_dir)


def certificate_problems(docs, cert, tls_secret, service_dns, source):
    out = []
    where = f"{source} Certificate/{cert['metadata']['name']}"
    spec = cert.get("spec") or {}
    if spec.get("secretName") != tls_secret:
        out.append(f"{where}: writes Secret {spec.get('secretName')}, the Deployment mounts "
                   f"{tls_secret}")
    if service_dns not in (spec.get("dnsNames") or []):
        out.append(f"{where}: dnsNames lack {service_dns}, the name the API server verifies")
    issuer = spec.get("issuerRef") or {}
    own = named(docs, "Issuer", issuer.get("name")) if issuer.get("kind", "Issuer") == "Issuer" else None
    if own is not None and "ca" in (own.get("spec") or {}):
        ca_secret = own["spec"]["ca"].get("secretName")
        ca = next((d for d in by_kind(docs, "Certificate")
                   if (d.get("spec") or {}).get("secretName") == ca_secret), None)
        if ca is None or not ca["spec"].get("isCA"):
            out.append(f"{where}: its Issuer {issuer.get('name')} signs with Secret {ca_secret}, "
                       "which no isCA Certificate of the release writes")
        elif named(docs, "Issuer", (ca["spec"].get("issuerRef") or {}).get("name")) is None:
            out.append(f"{where}: the CA Certificate's issuer is not in the release")
    elif own is None and issuer.get("kind", "Issuer") == "Issuer" and not issuer.get("name"):
        out.append(f"{where}: issuerRef names no issuer")
    return out


def verify(data, ca_bundle, service_dns, source, pem_dir):
    """openssl: the caBundle verifies tls.crt for the Service's name, and tls.key is its key."""
    d = Path(tempfile.mkdtemp(dir=pem_dir))
    files = {}
    for name, value in (("ca.pem", ca_bundle), ("tls.crt", data.get("tls.crt", "")),
                        ("tls.key", data.get("tls.key", ""))):
        files[name] = d / name
        files[name].write_bytes(base64.b64decode(value))
    if base64.b64decode(data.get("ca.crt", "")) != base64.b64decode(ca_bundle):
        return [f"{source}: the caBundle is not the Secret's ca.crt"]
    r = subprocess.run(["openssl", "verify", "-CAfile", str(files["ca.pem"]), "-verify_hostname",
                        service_dns, "-purpose", "sslserver", str(files["tls.crt"])],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        return [f"{source}: the caBundle does not verify tls.crt for {service_dns}: "
                + "; ".join(r.stdout.strip().splitlines())]
    pub = [subprocess.run(cmd, stdout=subprocess.PIPE, check=True).stdout for cmd in (
        ["openssl", "x509", "-in", str(files["tls.crt"]), "-noout", "-pubkey"],
        ["openssl", "pkey", "-in", str(files["tls.key"]), "-pubout"])]
    if pub[0] != pub[1]:
        return [f"{source}: tls.key is not the key of tls.crt"]
    return []
