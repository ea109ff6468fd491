{{/* Names, labels and the values every template derives from. */}}

{{- define "bp-openmeter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-openmeter, or the release name alone when it already says openmeter. */}}
{{- define "bp-openmeter.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains "openmeter" .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-openmeter" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Usage: include "bp-openmeter.componentName" (list . "api") */}}
{{- define "bp-openmeter.componentName" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- printf "%s-%s" (include "bp-openmeter.fullname" $root | trunc (int (sub 62 (len $component))) | trimSuffix "-") $component -}}
{{- end -}}

{{- define "bp-openmeter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bp-openmeter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bp-openmeter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "bp-openmeter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: bp-openmeter
{{- end -}}

{{/* Usage: include "bp-openmeter.componentSelectorLabels" (list . "api") */}}
{{- define "bp-openmeter.componentSelectorLabels" -}}
{{ include "bp-openmeter.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "bp-openmeter.componentLabels" -}}
{{ include "bp-openmeter.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{/*
The release's name on the shared NATS and Valkey (engine config `instance`): the engine
derives its stream, subjects, durable consumer and Valkey key prefix from it. Readable
parts (release, namespace; dots, which NATS names refuse, as dashes), and a digest of
"<namespace>/<release>" that keeps it unique when the parts are cut or join alike.
*/}}
{{- define "bp-openmeter.instance" -}}
{{- if .Values.engine.instance -}}
{{- .Values.engine.instance -}}
{{- else -}}
{{- $digest := printf "%s/%s" .Release.Namespace .Release.Name | sha256sum | trunc 10 -}}
{{- $release := .Release.Name | replace "." "-" | trunc 16 | trimSuffix "-" -}}
{{- printf "%s_%s_%s" $release (.Release.Namespace | trunc 16 | trimSuffix "-") $digest -}}
{{- end -}}
{{- end -}}

{{- define "bp-openmeter.engineEnabled" -}}
{{- if eq .Values.catalystBlueprint.backend.kind "cnpg" -}}true{{- end -}}
{{- end -}}

{{- define "bp-openmeter.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "bp-openmeter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "bp-openmeter.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "bp-openmeter.configMapName" -}}
{{- include "bp-openmeter.componentName" (list . "config") -}}
{{- end -}}

{{- define "bp-openmeter.configPath" -}}/etc/bp-openmeter/config.yaml{{- end -}}

{{/* The CloudNativePG cluster: its name, the namespace of its pods, its app secret. */}}
{{- define "bp-openmeter.pgClusterName" -}}
{{- if .Values.postgres.cluster.name -}}
{{- .Values.postgres.cluster.name -}}
{{- else if .Values.postgres.cluster.create -}}
{{- /* 50 characters at most: the operator derives pod, service and secret names from it. */ -}}
{{- printf "%s-pg" (include "bp-openmeter.fullname" . | trunc 47 | trimSuffix "-") -}}
{{- else -}}
{{- fail "postgres.cluster.name: required when postgres.cluster.create is false (the existing CloudNativePG cluster to use)" -}}
{{- end -}}
{{- end -}}

{{- define "bp-openmeter.pgNamespace" -}}
{{- default .Release.Namespace .Values.postgres.cluster.namespace -}}
{{- end -}}

{{- define "bp-openmeter.pgSecretName" -}}
{{- default (printf "%s-app" (include "bp-openmeter.pgClusterName" .)) .Values.postgres.connectionSecret.name -}}
{{- end -}}

{{/*
Backups through CloudNativePG's Barman Cloud plugin: the plugin's name (what the
Cluster's spec.plugins and a ScheduledBackup's pluginConfiguration name) and the
ObjectStore the cluster archives to.
*/}}
{{- define "bp-openmeter.barmanPlugin" -}}barman-cloud.cloudnative-pg.io{{- end -}}

{{- define "bp-openmeter.backupStoreName" -}}
{{- default (printf "%s-backup" (include "bp-openmeter.pgClusterName" .)) .Values.postgres.cluster.backup.objectStore.name -}}
{{- end -}}

{{/*
A NetworkPolicyPeer from {namespace, namespaceSelector, podSelector}: the
namespace and pod selectors go into ONE peer, so only the selected pods of the
selected namespace match (two peers would allow either).
Usage: include "bp-openmeter.peer" (dict "peer" $peer "namespace" $defaultNamespace "podSelector" $defaultPodSelector)
*/}}
{{- define "bp-openmeter.peer" -}}
{{- $peer := .peer -}}
{{- $namespace := default .namespace $peer.namespace -}}
{{- $podSelector := default .podSelector $peer.podSelector -}}
- namespaceSelector:
{{- if $peer.namespaceSelector }}
    {{- toYaml $peer.namespaceSelector | nindent 4 }}
{{- else if $namespace }}
    matchLabels:
      kubernetes.io/metadata.name: {{ $namespace | quote }}
{{- else }}
{{- fail "networkPolicy: a peer needs a namespace or a namespaceSelector" }}
{{- end }}
{{- if $podSelector }}
  podSelector:
    {{- toYaml $podSelector | nindent 4 }}
{{- end }}
{{- end -}}

{{/* Usage: include "bp-openmeter.egressRule" (dict "target" .Values.networkPolicy.egress.nats "podSelector" $default "namespace" $default) */}}
{{- define "bp-openmeter.egressRule" -}}
- to:
    {{- include "bp-openmeter.peer" (dict "peer" .target "namespace" .namespace "podSelector" .podSelector) | nindent 4 }}
  ports:
    {{- toYaml .target.ports | nindent 4 }}
{{- end -}}

{{/*
The engine's history (its PostgreSQL, its sink, the migration step) stays while the
engine runs, and while an export runs after the switch to clickhouse: the sink stores
what JetStream still holds, the export Job sends it on (docs/switching-backend.md).
*/}}
{{- define "bp-openmeter.historyEnabled" -}}
{{- if or (include "bp-openmeter.engineEnabled" .) .Values.export.enabled -}}true{{- end -}}
{{- end -}}

{{/*
The upstream openmeter chart's full name (backend clickhouse), by the rule that chart
follows: its fullnameOverride, else the release name when it holds the chart's name
(nameOverride, default "openmeter"), else <release>-<name>.
*/}}
{{- define "bp-openmeter.upstreamFullname" -}}
{{- $upstream := .Values.openmeter | default dict -}}
{{- if $upstream.fullnameOverride -}}
{{- $upstream.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default "openmeter" $upstream.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The Service that serves the OpenMeter API in this release, whichever backend: name and port. */}}
{{- define "bp-openmeter.apiServiceName" -}}
{{- if include "bp-openmeter.engineEnabled" . -}}
{{- include "bp-openmeter.componentName" (list . "api") -}}
{{- else -}}
{{- printf "%s-api" (include "bp-openmeter.upstreamFullname" . | trunc 59 | trimSuffix "-") -}}
{{- end -}}
{{- end -}}

{{- define "bp-openmeter.apiServicePort" -}}
{{- if include "bp-openmeter.engineEnabled" . -}}
{{- .Values.api.service.port -}}
{{- else -}}
{{- ((.Values.openmeter | default dict).service | default dict).port | default 80 -}}
{{- end -}}
{{- end -}}

{{/* The Secret (kubernetes.io/tls) holding the API's certificate. */}}
{{- define "bp-openmeter.tlsSecretName" -}}
{{- default (include "bp-openmeter.componentName" (list . "api-tls")) .Values.tls.secretName -}}
{{- end -}}

{{/* The hostnames the API is published under: httpRoute's and ingress's, once each, in order. */}}
{{- define "bp-openmeter.hostnames" -}}
{{- $hosts := list -}}
{{- if .Values.httpRoute.enabled }}{{ $hosts = concat $hosts .Values.httpRoute.hostnames }}{{ end -}}
{{- if .Values.ingress.enabled }}{{ $hosts = concat $hosts .Values.ingress.hosts }}{{ end -}}
{{- toJson (uniq $hosts) -}}
{{- end -}}
