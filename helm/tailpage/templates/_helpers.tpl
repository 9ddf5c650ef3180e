{{/* Names, labels and the image reference shared by every template. */}}

{{- define "tailpage.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "tailpage.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* A name for one component: "<fullname>-<suffix>", still within 63 characters. */}}
{{- define "tailpage.componentName" -}}
{{- printf "%s-%s" (include "tailpage.fullname" .root | trunc (int (sub 62 (len .suffix))) | trimSuffix "-") .suffix }}
{{- end }}

{{- define "tailpage.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tailpage.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "tailpage.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "tailpage.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tailpage
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Receiver objects: the common labels plus the component. */}}
{{- define "tailpage.receiver.labels" -}}
{{ include "tailpage.labels" . }}
app.kubernetes.io/component: receiver
{{- end }}

{{- define "tailpage.receiver.selectorLabels" -}}
{{ include "tailpage.selectorLabels" . }}
app.kubernetes.io/component: receiver
{{- end }}

{{- define "tailpage.receiver.fullname" -}}
{{- include "tailpage.componentName" (dict "root" . "suffix" "receiver") }}
{{- end }}

{{- define "tailpage.receiver.secretName" -}}
{{- default (include "tailpage.receiver.fullname" .) .Values.receiver.existingSecret }}
{{- end }}

{{- define "tailpage.receiver.serviceAccountName" -}}
{{- if .Values.receiver.serviceAccount.create }}
{{- default (include "tailpage.receiver.fullname" .) .Values.receiver.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.receiver.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The image reference from a tailpage values map (.Values here, .Values.tailpage in a parent chart):
repository@digest when a digest is given, repository:tag otherwise.
*/}}
{{- define "tailpage.image" -}}
{{- if .image.digest }}
{{- printf "%s@%s" .image.repository .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository (required "image.tag or image.digest is required" .image.tag) }}
{{- end }}
{{- end }}

{{/*
Refuse combinations that would deploy and then fail at 3 a.m. instead of at install time.
*/}}
{{- define "tailpage.validate" -}}
{{- $r := .Values.receiver }}
{{- if $r.enabled }}
{{- if and (gt (int $r.replicaCount) 1) (ne $r.store.type "postgresql") }}
{{- fail (printf "receiver.replicaCount=%d needs receiver.store.type=postgresql: SQLite is one writer on one volume, so replicas would each keep their own queue and notify twice. Set receiver.store.type=postgresql and receiver.store.postgresql.host (or .urlSecret), or keep replicaCount at 1." (int $r.replicaCount)) }}
{{- end }}
{{- if eq $r.store.type "postgresql" }}
{{- if not (or $r.store.postgresql.host $r.store.postgresql.urlSecret.name) }}
{{- fail "receiver.store.type=postgresql needs receiver.store.postgresql.host (with passwordSecret) or receiver.store.postgresql.urlSecret.name" }}
{{- end }}
{{- end }}
{{- if and $r.existingSecret (eq $r.auth.mode "bearer") $r.auth.bearerToken }}
{{- fail "receiver.auth.bearerToken and receiver.existingSecret are both set: put the token in the existing Secret (key webhook-token) and leave bearerToken empty" }}
{{- end }}
{{- if not $r.existingSecret }}
{{- range $name, $ch := $r.channels }}
{{- if not (and $ch $ch.url) }}
{{- fail (printf "receiver.channels.%s.url is empty: give the apprise URL, or put it in receiver.existingSecret under key channel-%s" $name $name) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- if and .Values.alertmanagerConfig.enabled (not $r.enabled) }}
{{- fail "alertmanagerConfig.enabled needs receiver.enabled: it routes to the receiver this chart deploys" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not $r.enabled) }}
{{- fail "serviceMonitor.enabled needs receiver.enabled: it scrapes the receiver this chart deploys" }}
{{- end }}
{{- end }}

{{/*
One Alertmanager webhook_config (AlertmanagerConfig form) posting to the receiver with its
credentials. Call with (dict "root" $ "sendResolved" BOOL).
*/}}
{{- define "tailpage.am.webhookConfig" -}}
{{- $root := .root }}
{{- $r := $root.Values.receiver }}
{{- $secret := include "tailpage.receiver.secretName" $root -}}
- url: {{ printf "http://%s.%s.svc:%d/alerts" (include "tailpage.receiver.fullname" $root) $root.Release.Namespace (int $r.port) | quote }}
  sendResolved: {{ .sendResolved }}
  {{- if eq $r.auth.mode "bearer" }}
  httpConfig:
    authorization:
      type: Bearer
      credentials: {name: {{ $secret | quote }}, key: webhook-token}
  {{- else if eq $r.auth.mode "basic" }}
  httpConfig:
    basicAuth:
      username: {name: {{ include "tailpage.componentName" (dict "root" $root "suffix" "am-user") | quote }}, key: username}
      password: {name: {{ $secret | quote }}, key: basic-password}
  {{- end }}
{{- end }}
