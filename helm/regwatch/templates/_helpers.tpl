{{/* Names, labels and the image. */}}
{{- define "regwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "regwatch.fullname" -}}
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

{{- define "regwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "regwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "regwatch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "regwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels kube-prometheus-stack selects monitoring objects on. */}}
{{- define "regwatch.monitoringLabels" -}}
{{- if .root.Values.releaseLabel }}
release: {{ .root.Values.releaseLabel | quote }}
{{- end }}
{{- with .extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "regwatch.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "regwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "regwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "regwatch.namespace" -}}
{{- default .root.Release.Namespace .namespace }}
{{- end }}

{{/*
Secrets. A config entry names an existing Secret by {name, key} in passwordSecret, tokenSecret or
apiKeySecret; the Secret is mounted read-only under /etc/regwatch/secrets/<name>/ and the entry
gets the matching password_file / token_file / api_key_file.
*/}}
{{- define "regwatch.secretsDir" -}}/etc/regwatch/secrets{{- end }}

{{- define "regwatch.secretKinds" -}}
passwordSecret: password_file
tokenSecret: token_file
apiKeySecret: api_key_file
{{- end }}

{{/* An entry with its secret references turned into *_file paths; toYaml of a dict. */}}
{{- define "regwatch.withSecretFiles" -}}
{{- $entry := deepCopy . }}
{{- range $ref, $fileKey := include "regwatch.secretKinds" . | fromYaml }}
{{- with get $entry $ref }}
{{- $_ := set $entry $fileKey (printf "%s/%s/%s" (include "regwatch.secretsDir" $) .name .key) }}
{{- end }}
{{- $_ := unset $entry $ref }}
{{- end }}
{{- toYaml $entry }}
{{- end }}

{{/* Sorted, comma-separated names of every Secret the given config references. */}}
{{- define "regwatch.secretNames" -}}
{{- $names := dict }}
{{- $entries := list }}
{{- range .targets }}{{ $entries = append $entries . }}{{ end }}
{{- range .auth_logs }}{{ with .elasticsearch }}{{ $entries = append $entries . }}{{ end }}{{ end }}
{{- range $entries }}
{{- $entry := . }}
{{- range $ref, $_ := include "regwatch.secretKinds" . | fromYaml }}
{{- with get $entry $ref }}{{ $_ := set $names .name true }}{{ end }}
{{- end }}
{{- end }}
{{- keys $names | sortAlpha | join "," }}
{{- end }}

{{- define "regwatch.secretVolumes" -}}
{{- range $name := splitList "," (include "regwatch.secretNames" .) | compact }}
- name: {{ printf "secret-%s" (sha256sum $name | trunc 12) }}
  secret:
    secretName: {{ $name }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{- define "regwatch.secretVolumeMounts" -}}
{{- range $name := splitList "," (include "regwatch.secretNames" .) | compact }}
- name: {{ printf "secret-%s" (sha256sum $name | trunc 12) }}
  mountPath: {{ include "regwatch.secretsDir" $ }}/{{ $name }}
  readOnly: true
{{- end }}
{{- end }}

{{/* The regwatch config file for `serve` and the drill, from .Values.config. */}}
{{- define "regwatch.config" -}}
{{- $c := .Values.config }}
{{- $targets := list }}
{{- range $c.targets }}
{{- $targets = append $targets (include "regwatch.withSecretFiles" . | fromYaml) }}
{{- end }}
{{- $storage := list }}
{{- range $c.storage }}
{{- $storage = append $storage (omit . "volume") }}
{{- end }}
{{- $authLogs := list }}
{{- range $c.auth_logs }}
{{- $source := deepCopy . }}
{{- with .elasticsearch }}
{{- $_ := set $source "elasticsearch" (include "regwatch.withSecretFiles" . | fromYaml) }}
{{- end }}
{{- $authLogs = append $authLogs $source }}
{{- end }}
{{- $config := dict "listen" (printf ":%d" (int .Values.containerPort)) "targets" $targets "storage" $storage "auth_logs" $authLogs }}
{{- with $c.drill }}{{ $_ := set $config "drill" . }}{{ end }}
{{- toYaml $config }}
{{- end }}

{{/* The config of the log-tailing DaemonSet: only its auth_logs sources. */}}
{{- define "regwatch.logsConfig" -}}
{{- $sources := list }}
{{- range .Values.logs.daemonset.sources }}
{{- $source := deepCopy . }}
{{- if not .positions_file }}
{{- $_ := set $source "positions_file" (printf "%s/%s.positions.json" $.Values.logs.daemonset.positionsHostPath .name) }}
{{- end }}
{{- $sources = append $sources $source }}
{{- end }}
{{- toYaml (dict "listen" (printf ":%d" (int .Values.containerPort)) "auth_logs" $sources) }}
{{- end }}

{{- define "regwatch.storageVolumes" -}}
{{- range .Values.config.storage }}
- name: {{ printf "storage-%s" (sha256sum .name | trunc 12) }}
{{ toYaml .volume | indent 2 }}
{{- end }}
{{- end }}

{{- define "regwatch.storageVolumeMounts" -}}
{{- range .Values.config.storage }}
- name: {{ printf "storage-%s" (sha256sum .name | trunc 12) }}
  mountPath: {{ .path }}
  readOnly: true
{{- end }}
{{- end }}

{{/* serve refuses a config with nothing to watch (exit 2); say so at install time instead of crash-looping. */}}
{{- define "regwatch.requireSomethingToWatch" -}}
{{- $c := .Values.config -}}
{{- if not (or $c.targets $c.storage $c.auth_logs (and $c.drill $c.drill.report_dir)) -}}
{{- fail "regwatch: config has nothing to watch; set config.targets (or config.storage, config.auth_logs, config.drill.report_dir) in your values, e.g. --set-json 'config.targets=[{\"name\":\"hub\",\"kind\":\"distribution\",\"url\":\"https://registry.example.com\"}]'" -}}
{{- end -}}
{{- end }}
