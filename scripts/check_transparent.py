"""The transparent-mode part of `check_deploy.py manifests`: a pod whose tokex config has a
`transparent` section.

`tokex init` installs the redirect and proves it; the manifests decide whether it can. It must
run from the tokex-init image (the sidecar's distroless image has no nft or iptables), as the
init container just before the sidecar (it binds transparent.listen for its check, and an init
container between the two would have its connections redirected before tokex listens), read the
sidecar's own ConfigMap (one transparent section for both), and run as root with NET_ADMIN and
NET_RAW (the rules), SETUID and SETGID (the check's connection as proxy_uid), nothing else, and
a writable /run (iptables-legacy's lock) under a read-only root filesystem. The redirect exempts
exactly one uid, so the sidecar must run as transparent.proxy_uid and no other container may.
"""

import posixpath
import re

DEFAULT_PROXY_UID = 65532  # src/config/transparent.rs
NEEDED_CAPS = ("NET_ADMIN", "NET_RAW", "SETUID", "SETGID")


def is_tokex_init(container):
    image = str(container.get("image", ""))
    return (container.get("name") == "tokex-init"
            or re.search(r"(^|/)tokex-init(:|@|$)", image) is not None)


def tokex_argv(container):
    """The arguments after the binary; empty means the image's CMD."""
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if argv and posixpath.basename(str(argv[0])) == "tokex":
        argv = argv[1:]
    return [str(a) for a in argv]


def run_as(container, pod):
    """The uid a container runs as when the manifest says; None: the image decides."""
    for sc in (container.get("securityContext") or {}, pod.get("securityContext") or {}):
        if sc.get("runAsUser") is not None:
            return sc["runAsUser"]
    return None


def problems(pod, sidecar, cfg, config_of, name):
    """What keeps the redirect of `cfg["transparent"]` from working in `pod`.

    `config_of(container)` is the (ConfigMap, key) a container reads its config from.
    """
    out = []
    section = cfg.get("transparent") or {}
    uid = section.get("proxy_uid", DEFAULT_PROXY_UID)
    inits = pod.get("initContainers") or []
    index = next(i for i, c in enumerate(inits) if c is sidecar)
    found = [(i, c) for i, c in enumerate(inits) if is_tokex_init(c)]
    for c in inits:
        if c is not sidecar and not is_tokex_init(c) and tokex_argv(c)[:1] == ["init"]:
            out.append(f"{name} initContainers[{c.get('name')}]: runs `tokex init` from "
                       f"{c.get('image')}; the sidecar image has no nft or iptables, use "
                       "the tokex-init image")
    if len(found) != 1:
        out.append(f"{name}: the config has a transparent section, so exactly one tokex-init "
                   f"init container must install the redirect; found {len(found)}")
        return out
    at, init = found[0]
    where = f"{name} initContainers[{init.get('name')}]"
    if at != index - 1:
        out.append(f"{where}: must come right before the sidecar {sidecar.get('name')} "
                   f"(it is at {at}, the sidecar at {index})")
    if init.get("restartPolicy") == "Always":
        out.append(f"{where}: restartPolicy Always would make it a sidecar; it must run once")
    argv = tokex_argv(init)
    if argv and (argv[0] != "init" or "--remove" in argv or "--check" in argv):
        out.append(f"{where}: runs `tokex {' '.join(argv)}`; it must install the rules "
                   "(`tokex init --config FILE`)")
    if config_of(init) != config_of(sidecar):
        out.append(f"{where}: reads its config from {config_of(init)}, the sidecar from "
                   f"{config_of(sidecar)}; both must read the same transparent section")
    out += security(init, pod, where)
    res = init.get("resources") or {}
    for need in ("requests.cpu", "requests.memory", "limits.memory"):
        a, b = need.split(".")
        if not (res.get(a) or {}).get(b):
            out.append(f"{where}: resources.{need} is not set")
    # The uid rule.
    if run_as(sidecar, pod) != uid:
        out.append(f"{name} initContainers[{sidecar.get('name')}]: runAsUser is "
                   f"{run_as(sidecar, pod)}, transparent.proxy_uid is {uid}; tokex's own "
                   "connections would be redirected back into it")
    for c in inits + (pod.get("containers") or []):
        if c is sidecar or c is init:
            continue
        got = run_as(c, pod)
        if got == uid:
            out.append(f"{name} container {c.get('name')}: runs as proxy_uid {uid}, so its "
                       "connections bypass tokex")
        elif got is None and c in (pod.get("containers") or []):
            out.append(f"{name} container {c.get('name')}: no runAsUser; if its image's user "
                       f"is {uid} (distroless' nonroot), its connections bypass tokex")
    return out


def security(init, pod, where):
    out = []
    sc, psc = init.get("securityContext") or {}, pod.get("securityContext") or {}
    if sc.get("runAsUser") != 0:
        out.append(f"{where}: runAsUser must be 0 (the kernel takes rules from root only)")
    if sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True:
        out.append(f"{where}: runAsNonRoot is true (here or from the pod); set it to false on "
                   "this container, the kubelet refuses to start it as root otherwise")
    if sc.get("allowPrivilegeEscalation") is not False:
        out.append(f"{where}: allowPrivilegeEscalation must be false")
    if sc.get("privileged"):
        out.append(f"{where}: must not be privileged; it needs only {', '.join(NEEDED_CAPS)}")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        out.append(f"{where}: capabilities.drop must contain ALL")
    added = set(caps.get("add") or [])
    if added != set(NEEDED_CAPS):
        out.append(f"{where}: capabilities.add is {sorted(added)}; it needs exactly "
                   f"{list(NEEDED_CAPS)}")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp != "RuntimeDefault":
        out.append(f"{where}: seccompProfile must be RuntimeDefault")
    if sc.get("readOnlyRootFilesystem") is not True:
        out.append(f"{where}: readOnlyRootFilesystem must be true")
    run = [m for m in init.get("volumeMounts") or [] if m.get("mountPath", "").rstrip("/") == "/run"]
    if not run or run[0].get("readOnly"):
        out.append(f"{where}: needs a writable volume at /run (iptables-legacy's lock file) "
                   "under the read-only root filesystem")
    return out
