{{/*
Named templates of the tokex chart.

Public, for your own workload templates (docs/kubernetes.md, "Helm"). Add this chart as a
dependency named `tokex` (no alias), put its values under `tokex:` in your values, and call
each template with your chart's root context `.`:

  tokex.init            with transparent.enabled, the tokex-init container that installs the
                        redirect: the item right before tokex.sidecar (else empty)
  tokex.sidecar         the native sidecar container: one item for `initContainers`
  tokex.volumes         the volumes they mount: items for `volumes`
  tokex.podLabels       the label that marks a pod running tokex, which the PodMonitor selects:
                        items for the pod template's `metadata.labels`
  tokex.podAnnotations  `checksum/config` when checksumConfig is true (else empty)
  tokex.appEnv          HTTP_PROXY / NO_PROXY env items for the app container (empty in
                        transparent mode)
  tokex.hostAliases     `hostAliases` items mapping every route's host to 127.0.0.1 (empty in
                        transparent mode)
  tokex.config          the tokex YAML the ConfigMap carries

The chart itself renders the ConfigMap those templates refer to.
*/}}

{{/* This chart's values: `.Values` here, `.Values.tokex` when called from a parent chart. */}}
{{- define "tokex.v" -}}
{{- if hasKey .Values "tokex" -}}
{{- toJson .Values.tokex -}}
{{- else -}}
{{- toJson .Values -}}
{{- end -}}
{{- end -}}

{{/* The tokex release: this chart's appVersion, also when called from a parent chart. */}}
{{- define "tokex.appVersion" -}}
{{- if and (hasKey .Values "tokex") .Subcharts (hasKey .Subcharts "tokex") -}}
{{- .Subcharts.tokex.Chart.AppVersion -}}
{{- else -}}
{{- .Chart.AppVersion -}}
{{- end -}}
{{- end -}}

{{- define "tokex.fullname" -}}
{{- $v := include "tokex.v" . | fromJson -}}
{{- if $v.fullnameOverride -}}
{{- $v.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name ($v.nameOverride | default "tokex") | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "tokex.configMapName" -}}
{{- $v := include "tokex.v" . | fromJson -}}
{{- $v.configMap.name | default (include "tokex.fullname" .) -}}
{{- end -}}

{{/* Labels for the chart's own objects. */}}
{{- define "tokex.labels" -}}
app.kubernetes.io/name: tokex
app.kubernetes.io/instance: {{ .Release.Name | quote }}
app.kubernetes.io/version: {{ include "tokex.appVersion" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
{{- end -}}

{{/*
The tokex config: values.config plus `listen` (always 127.0.0.1) and `admin` from `ports`.
Everything else passes through unchanged, so a misspelt key is still an error for tokex
(and for `tokex check`) instead of being dropped here.
*/}}
{{- define "tokex.config" -}}
{{- $v := include "tokex.v" . | fromJson -}}
{{- $cfg := deepCopy ($v.config | default dict) -}}
{{- if or (hasKey $cfg "listen") (hasKey $cfg "admin") -}}
{{- fail "tokex: set ports.egress, ports.admin and adminBindAddress instead of config.listen / config.admin" -}}
{{- end -}}
{{- if hasKey $cfg "transparent" -}}
{{- fail "tokex: set transparent.* instead of config.transparent (the chart wires the init container to it)" -}}
{{- end -}}
{{- if not (hasKey $cfg "routes") -}}
{{- $_ := set $cfg "routes" list -}}
{{- end -}}
{{- $_ := set $cfg "listen" (printf "127.0.0.1:%d" (int $v.ports.egress)) -}}
{{- $_ := set $cfg "admin" (printf "%s:%d" $v.adminBindAddress (int $v.ports.admin)) -}}
{{- with $v.transparent -}}
{{- if .enabled -}}
{{- if ne (int .proxyUid) (int ($v.securityContext.runAsUser | default 0)) -}}
{{- fail (printf "tokex: transparent.proxyUid (%d) must equal securityContext.runAsUser (%v): the redirect exempts only that uid, so tokex's own connections would loop back into it" (int .proxyUid) $v.securityContext.runAsUser) -}}
{{- end -}}
{{- $_ := set $cfg "transparent" (dict
      "listen" (printf "127.0.0.1:%d" (int .port))
      "ports" .ports
      "exclude_ports" .excludePorts
      "exclude_cidrs" .excludeCidrs
      "proxy_uid" (int .proxyUid)
      "unmatched" .unmatched) -}}
{{- end -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/*
The tokex-init container, when transparent.enabled (else nothing): an item of the pod's
initContainers, right before tokex.sidecar. It binds transparent.listen for its check, so it
must run before the sidecar takes that port; its output is the check result
(kubectl logs POD -c tokex-init).
*/}}
{{- define "tokex.init" -}}
{{- $v := include "tokex.v" . | fromJson -}}
{{- if $v.transparent.enabled -}}
{{- $t := $v.transparent -}}
- name: tokex-init
  image: {{ printf "%s:%s" ($t.initImage.repository | default (printf "%s-init" $v.image.repository)) ($t.initImage.tag | default $v.image.tag | default (include "tokex.appVersion" .)) | quote }}
  imagePullPolicy: {{ $t.initImage.pullPolicy | default $v.image.pullPolicy }}
  args: ["init", "--config", "/etc/tokex/tokex.yaml"]
  # The check's last lines become the termination message `kubectl describe pod` shows.
  terminationMessagePolicy: FallbackToLogsOnError
  {{- with $t.initResources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $t.initSecurityContext | nindent 4 }}
  volumeMounts:
    # The sidecar's own config: both read one transparent section.
    - name: tokex-config
      mountPath: /etc/tokex
      readOnly: true
    # iptables-legacy takes its lock in /run; the root filesystem is read-only.
    - name: tokex-init-run
      mountPath: /run
{{- end -}}
{{- end -}}

{{/* The native sidecar container: an item of the pod's initContainers. */}}
{{- define "tokex.sidecar" -}}
{{- $v := include "tokex.v" . | fromJson -}}
- name: tokex
  image: {{ printf "%s:%s" $v.image.repository ($v.image.tag | default (include "tokex.appVersion" .)) | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  # Native sidecar (Kubernetes 1.29+): started before the app containers, stopped after them.
  restartPolicy: Always
  args: ["run", "--config", "/etc/tokex/tokex.yaml", "--log-format", {{ $v.logFormat | quote }}]
  # A config that does not load exits 1 with the error as the last log lines: they become
  # the termination message `kubectl describe pod` shows.
  terminationMessagePolicy: FallbackToLogsOnError
  env:
    - name: RUST_LOG
      value: {{ $v.logLevel | quote }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    # Admin only; the egress listener is bound to 127.0.0.1 and not declared.
    - name: tokex-admin
      containerPort: {{ int $v.ports.admin }}
      protocol: TCP
  startupProbe:
    {{- toYaml $v.probes.startup | nindent 4 }}
  readinessProbe:
    {{- toYaml $v.probes.readiness | nindent 4 }}
  livenessProbe:
    {{- toYaml $v.probes.liveness | nindent 4 }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $v.securityContext | nindent 4 }}
  # Directories, never subPath: the kubelet's atomic ..data swap must reach tokex.
  volumeMounts:
    - name: tokex-config
      mountPath: /etc/tokex
      readOnly: true
    {{- if $v.credentials.secretName }}
    - name: tokex-credentials
      mountPath: {{ $v.credentials.mountPath }}
      readOnly: true
    {{- end }}
    {{- if $v.serviceAccountToken.enabled }}
    - name: tokex-token
      mountPath: {{ $v.serviceAccountToken.mountPath }}
      readOnly: true
    {{- end }}
    {{- with $v.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}

{{/* The sidecar's volumes: items of the pod's volumes. */}}
{{- define "tokex.volumes" -}}
{{- $v := include "tokex.v" . | fromJson -}}
- name: tokex-config
  configMap:
    name: {{ include "tokex.configMapName" . }}
{{- if $v.credentials.secretName }}
- name: tokex-credentials
  secret:
    secretName: {{ $v.credentials.secretName }}
    defaultMode: {{ int $v.credentials.defaultMode }}
{{- end }}
{{- if $v.serviceAccountToken.enabled }}
{{- if not $v.serviceAccountToken.audience }}
{{- fail "tokex: serviceAccountToken.audience is required when serviceAccountToken.enabled is true" }}
{{- end }}
- name: tokex-token
  projected:
    defaultMode: {{ int $v.credentials.defaultMode }}
    sources:
      - serviceAccountToken:
          path: {{ $v.serviceAccountToken.path }}
          audience: {{ $v.serviceAccountToken.audience | quote }}
          expirationSeconds: {{ int $v.serviceAccountToken.expirationSeconds }}
{{- end }}
{{- if $v.transparent.enabled }}
- name: tokex-init-run
  emptyDir:
    medium: Memory
    sizeLimit: 1Mi
{{- end }}
{{- with $v.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
The label of every pod that runs tokex, whoever adds the sidecar (these templates, the
kustomize base, by hand): the PodMonitor and the dashboard find tokex's pods by it.
*/}}
{{- define "tokex.podLabels" -}}
tokex.io/sidecar: "true"
{{- end -}}

{{/* Pod annotations: checksum/config when checksumConfig is true, else nothing. */}}
{{- define "tokex.podAnnotations" -}}
{{- $v := include "tokex.v" . | fromJson -}}
{{- if $v.checksumConfig -}}
checksum/config: {{ include "tokex.config" . | sha256sum | quote }}
{{- end -}}
{{- end -}}

{{/* The app container's env items: its plain-http egress goes through tokex. */}}
{{- define "tokex.appEnv" -}}
{{- $v := include "tokex.v" . | fromJson -}}
{{- if not $v.transparent.enabled -}}
{{- $proxy := printf "http://127.0.0.1:%d" (int $v.ports.egress) -}}
- name: HTTP_PROXY
  value: {{ $proxy | quote }}
- name: http_proxy
  value: {{ $proxy | quote }}
- name: NO_PROXY
  value: {{ $v.app.noProxy | quote }}
- name: no_proxy
  value: {{ $v.app.noProxy | quote }}
{{- end -}}
{{- end -}}

{{/*
hostAliases items: every route's match.host (port dropped) resolves to 127.0.0.1. None in
transparent mode, where route hosts are the upstreams' real names: sent to loopback, which the
redirect leaves alone, they would reach nothing.
*/}}
{{- define "tokex.hostAliases" -}}
{{- $v := include "tokex.v" . | fromJson -}}
{{- $hosts := list -}}
{{- if and $v.app.hostAliases (not $v.transparent.enabled) -}}
{{- range (($v.config | default dict).routes | default list) -}}
{{- with .match -}}
{{- with .host -}}
{{- $hosts = append $hosts (regexReplaceAll ":[0-9]+$" . "") -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- if $hosts -}}
- ip: 127.0.0.1
  hostnames:
    {{- toYaml ($hosts | uniq) | nindent 4 }}
{{- end -}}
{{- end -}}
