{{/* The engine's pods: one image, one container per command (docs/engine-runtime.md). */}}

{{/* Environment shared by every engine container: config path and secrets by reference. */}}
{{- define "bp-openmeter.env" -}}
- name: BPOM_CONFIG
  value: {{ include "bp-openmeter.configPath" . }}
- name: BPOM_POSTGRES_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "bp-openmeter.pgSecretName" . }}
      key: {{ .Values.postgres.connectionSecret.key }}
{{- with .Values.nats.urlSecret }}
{{- if .name }}
- name: BPOM_NATS_URL
  valueFrom:
    secretKeyRef: {name: {{ .name }}, key: {{ .key }}}
{{- end }}
{{- end }}
{{- with .Values.nats.auth }}
{{- range $variable, $key := dict "BPOM_NATS_USER" .userKey "BPOM_NATS_PASSWORD" .passwordKey "BPOM_NATS_TOKEN" .tokenKey }}
{{- if $key }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef: {name: {{ required "nats.auth.secretName: required when a nats.auth key is set" $.Values.nats.auth.secretName }}, key: {{ $key }}}
{{- end }}
{{- end }}
{{- end }}
{{- if .Values.valkey.enabled }}
{{- with .Values.valkey.urlSecret }}
{{- if .name }}
- name: BPOM_VALKEY_URL
  valueFrom:
    secretKeyRef: {name: {{ .name }}, key: {{ .key }}}
{{- end }}
{{- end }}
{{- with .Values.valkey.usernameSecret }}
{{- if .name }}
- name: BPOM_VALKEY_USERNAME
  valueFrom:
    secretKeyRef: {name: {{ .name }}, key: {{ .key }}}
{{- end }}
{{- end }}
{{- with .Values.valkey.passwordSecret }}
{{- if .name }}
- name: BPOM_VALKEY_PASSWORD
  valueFrom:
    secretKeyRef: {name: {{ .name }}, key: {{ .key }}}
{{- end }}
{{- end }}
{{- end }}
{{- if eq .Values.api.auth.mode "token" }}
{{- $tokens := .Values.api.auth.tokensSecret }}
{{- $name := required "api.auth.tokensSecret.name: required when api.auth.mode is token" $tokens.name }}
{{- range $variable, $key := dict "BPOM_API_TOKENS" $tokens.key "BPOM_API_INGEST_TOKENS" $tokens.ingestKey "BPOM_API_READ_TOKENS" $tokens.readKey }}
{{- if $key }}
- name: {{ $variable }}
  valueFrom:
    secretKeyRef: {name: {{ $name }}, key: {{ $key }}}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
One engine container.
Usage: include "bp-openmeter.container" (dict "root" . "name" "api" "command" "api" "serve" true "resources" .Values.api.resources)
serve: the container answers health probes on the telemetry port (api, sink).
args, env (optional): more arguments after the command's, more environment entries.
*/}}
{{- define "bp-openmeter.container" -}}
{{- $root := .root -}}
- name: {{ .name }}
  image: {{ include "bp-openmeter.image" $root }}
  imagePullPolicy: {{ $root.Values.image.pullPolicy }}
  args: {{ concat (list .command "--config" (include "bp-openmeter.configPath" $root)) (.args | default list) | toJson }}
  env:
    {{- include "bp-openmeter.env" $root | nindent 4 }}
    {{- with .env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if .serve }}
  ports:
    {{- if eq .command "api" }}
    - name: http
      containerPort: {{ $root.Values.api.port }}
      protocol: TCP
    {{- end }}
    - name: telemetry
      containerPort: {{ $root.Values.telemetry.port }}
      protocol: TCP
  startupProbe:
    httpGet: {path: /healthz/live, port: telemetry}
    {{- toYaml $root.Values.probes.startup | nindent 4 }}
  livenessProbe:
    httpGet: {path: /healthz/live, port: telemetry}
    {{- toYaml $root.Values.probes.liveness | nindent 4 }}
  readinessProbe:
    httpGet: {path: /healthz/ready, port: telemetry}
    {{- toYaml $root.Values.probes.readiness | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml .resources | nindent 4 }}
  securityContext:
    {{- toYaml $root.Values.securityContext | nindent 4 }}
  volumeMounts:
    - name: config
      mountPath: /etc/bp-openmeter
      readOnly: true
    - name: tmp
      mountPath: /tmp
{{- end -}}

{{/*
A pod template for one component.
Usage: include "bp-openmeter.podTemplate" (dict "root" . "component" "api" "serve" true "resources" ... "restartPolicy" "")
migrateFirst: a migrate init container whatever migrate.mode says (the export Job).
args, env: passed to the component's container.
*/}}
{{- define "bp-openmeter.podTemplate" -}}
{{- $root := .root -}}
metadata:
  labels:
    {{- include "bp-openmeter.componentLabels" (list $root .component) | nindent 4 }}
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "bp-openmeter.serviceAccountName" $root }}
  # The engine never calls the Kubernetes API.
  automountServiceAccountToken: false
  {{- with .restartPolicy }}
  restartPolicy: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if or .migrateFirst (and .serve (eq $root.Values.migrate.mode "initContainer")) }}
  initContainers:
    {{- include "bp-openmeter.container" (dict "root" $root "name" "migrate" "command" "migrate" "serve" false "resources" $root.Values.migrate.resources) | nindent 4 }}
  {{- end }}
  containers:
    {{- include "bp-openmeter.container" (dict "root" $root "name" .component "command" .component "serve" .serve "resources" .resources "args" .args "env" .env) | nindent 4 }}
  volumes:
    - name: config
      configMap:
        name: {{ include "bp-openmeter.configMapName" $root }}
    - name: tmp
      emptyDir:
        sizeLimit: {{ $root.Values.tmpSizeLimit }}
  {{- with $root.Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
