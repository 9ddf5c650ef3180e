{{/*
The exporter sidecar, as named templates for your own pod templates. Every one takes the same
context:

    (dict "root" $ "values" .Values.tailpage)          # from a chart that depends on tailpage
    (dict "root" $ "values" .Values)                   # inside this chart (the demo workload)

and optionally "name": the name of the exporter ConfigMap (default "<release>-tailpage-exporter"),
when one release has several workloads with different exporter configs.

In a pod template (see helm/examples/myapp/templates/deployment.yaml):

    metadata.labels:       include "tailpage.exporter.podLabels"
    spec.initContainers:   include "tailpage.exporter.initContainers"   (native sidecar only)
    spec.containers:       your app, its volumeMounts + include "tailpage.exporter.appVolumeMounts",
                           then include "tailpage.exporter.containers"  (classic sidecar only)
    spec.volumes:          include "tailpage.exporter.volumes"
    another document:      include "tailpage.exporter.configMap"        (only with exporter.config)
*/}}

{{- define "tailpage.exporter.settings" -}}
{{- $v := required "tailpage.exporter.* templates take (dict \"root\" $ \"values\" .Values.tailpage)" .values }}
{{- required "tailpage values without an exporter section: pass the tailpage values (.Values.tailpage in a parent chart)" $v.exporter | toYaml }}
{{- end }}

{{- define "tailpage.exporter.configMapName" -}}
{{- .name | default (printf "%s-tailpage-exporter" .root.Release.Name) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The globs to tail: given ones, or the default of the log source. */}}
{{- define "tailpage.exporter.paths" -}}
{{- $e := include "tailpage.exporter.settings" . | fromYaml }}
{{- $paths := $e.logs.paths }}
{{- if not $paths }}
{{- if eq $e.logs.source "hostPath" }}
{{- range $e.logs.containers }}
{{- /* $(VAR) is expanded by the kubelet from the downward-API env below. */}}
{{- $paths = append $paths (printf "/var/log/pods/$(POD_NAMESPACE)_$(POD_NAME)_$(POD_UID)/%s/*.log" .) }}
{{- end }}
{{- else }}
{{- $paths = list (printf "%s/*.log" (trimSuffix "/" $e.logs.mountPath)) }}
{{- end }}
{{- end }}
{{- toYaml $paths }}
{{- end }}

{{- define "tailpage.exporter.podLabels" -}}
tailpage/exporter: "true"
{{- end }}

{{/* The container itself; "native" in the context adds restartPolicy: Always. */}}
{{- define "tailpage.exporter.container" -}}
{{- $e := include "tailpage.exporter.settings" . | fromYaml }}
{{- $hasConfig := or $e.config $e.existingConfigMap -}}
- name: tailpage-exporter
  image: {{ include "tailpage.image" .values | quote }}
  imagePullPolicy: {{ .values.image.pullPolicy }}
  {{- if $e.nativeSidecar }}
  # Native sidecar: started before the app, stopped after it, so its last lines are read too.
  restartPolicy: Always
  {{- end }}
  command: [tailpage-exporter]
  args:
    - run
    - --listen
    - {{ printf "0.0.0.0:%d" (int $e.port) | quote }}
    - --checkpoint
    - {{ printf "%s/exporter-checkpoints.json" (trimSuffix "/" $e.checkpoint.mountPath) | quote }}
    {{- if $hasConfig }}
    - --config
    - /etc/tailpage-exporter/config.yaml
    {{- end }}
    {{- /* --path replaces the config's `inputs`: given unless the config names its own inputs
    (without either the program would tail its built-in /var/log/app/*.log, whatever
    logs.mountPath says). An existingConfigMap is trusted to have inputs. */}}
    {{- if or (not $hasConfig) $e.logs.paths (and $e.config (not $e.config.inputs)) }}
    {{- range (include "tailpage.exporter.paths" . | fromYamlArray) }}
    - --path
    - {{ . | quote }}
    {{- end }}
    {{- end }}
    {{- range $e.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_NAMESPACE
      valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
    - name: POD_UID
      valueFrom: {fieldRef: {fieldPath: metadata.uid}}
    {{- with $e.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: tailpage
      containerPort: {{ $e.port }}
      protocol: TCP
  livenessProbe:
    httpGet: {path: /-/healthy, port: tailpage}
    {{- toYaml $e.livenessProbe | nindent 4 }}
  {{- if $e.readinessProbe.enabled }}
  readinessProbe:
    httpGet: {path: /-/ready, port: tailpage}
    {{- toYaml (omit $e.readinessProbe "enabled") | nindent 4 }}
  {{- end }}
  resources:
    {{- toYaml $e.resources | nindent 4 }}
  securityContext:
    {{- toYaml $e.securityContext | nindent 4 }}
  volumeMounts:
    {{- if eq $e.logs.source "hostPath" }}
    - name: tailpage-pod-logs
      mountPath: /var/log/pods
      readOnly: true
    {{- else }}
    - name: tailpage-logs
      mountPath: {{ $e.logs.mountPath }}
      readOnly: true
    {{- end }}
    - name: tailpage-checkpoints
      mountPath: {{ $e.checkpoint.mountPath }}
    {{- if $hasConfig }}
    - name: tailpage-exporter-config
      mountPath: /etc/tailpage-exporter
      readOnly: true
    {{- end }}
{{- end }}

{{/* Items for spec.containers: the sidecar unless it runs as a native sidecar. */}}
{{- define "tailpage.exporter.containers" -}}
{{- $e := include "tailpage.exporter.settings" . | fromYaml }}
{{- if not $e.nativeSidecar }}
{{- include "tailpage.exporter.container" . }}
{{- end }}
{{- end }}

{{/* Items for spec.initContainers: the sidecar when it runs as a native sidecar, else nothing. */}}
{{- define "tailpage.exporter.initContainers" -}}
{{- $e := include "tailpage.exporter.settings" . | fromYaml }}
{{- if $e.nativeSidecar }}
{{- include "tailpage.exporter.container" . }}
{{- end }}
{{- end }}

{{/* Items for your app container's volumeMounts: where it writes its log files. */}}
{{- define "tailpage.exporter.appVolumeMounts" -}}
{{- $e := include "tailpage.exporter.settings" . | fromYaml }}
{{- if ne $e.logs.source "hostPath" -}}
- name: tailpage-logs
  mountPath: {{ $e.logs.mountPath }}
{{- end }}
{{- end }}

{{/* Items for spec.volumes: the shared log volume, the checkpoint volume, the config. */}}
{{- define "tailpage.exporter.volumes" -}}
{{- $e := include "tailpage.exporter.settings" . | fromYaml }}
{{- if eq $e.logs.source "hostPath" -}}
- name: tailpage-pod-logs
  hostPath:
    path: /var/log/pods
    type: Directory
{{- else -}}
- name: tailpage-logs
  emptyDir:
    {{- if $e.logs.sizeLimit }}
    sizeLimit: {{ $e.logs.sizeLimit | quote }}
    {{- else }} {}
    {{- end }}
{{- end }}
- name: tailpage-checkpoints
  {{- toYaml $e.checkpoint.volume | nindent 2 }}
{{- if or $e.config $e.existingConfigMap }}
- name: tailpage-exporter-config
  configMap:
    name: {{ $e.existingConfigMap | default (include "tailpage.exporter.configMapName" .) }}
{{- end }}
{{- end }}

{{/* A ConfigMap document holding exporter.config; renders nothing without it. */}}
{{- define "tailpage.exporter.configMap" -}}
{{- $e := include "tailpage.exporter.settings" . | fromYaml }}
{{- if and $e.config (not $e.existingConfigMap) -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "tailpage.exporter.configMapName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    app.kubernetes.io/part-of: tailpage
    app.kubernetes.io/component: exporter
    app.kubernetes.io/managed-by: {{ .root.Release.Service }}
data:
  config.yaml: |
    {{- toYaml $e.config | nindent 4 }}
{{- end }}
{{- end }}
