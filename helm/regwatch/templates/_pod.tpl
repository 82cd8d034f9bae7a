{{/* The pod template of `regwatch serve`, shared by the Deployment (one shard) and the StatefulSet (N shards). */}}
{{- define "regwatch.servePod" -}}
metadata:
  labels:
    {{- include "regwatch.selectorLabels" . | nindent 4 }}
    app.kubernetes.io/component: serve
    {{- with .Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "regwatch.config" . | sha256sum }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "regwatch.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.automountServiceAccountToken }}
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .Values.podSecurityContext | nindent 4 }}
  containers:
    - name: regwatch
      image: {{ include "regwatch.image" . | quote }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - serve
        - --config
        - /etc/regwatch/config.yaml
        {{- if gt (int .Values.sharding.shards) 1 }}
        - --shard-from-hostname
        - --shards
        - {{ .Values.sharding.shards | quote }}
        {{- end }}
        {{- range .Values.extraArgs }}
        - {{ . | quote }}
        {{- end }}
      {{- if or .Values.logLevel .Values.extraEnv }}
      env:
        {{- with .Values.logLevel }}
        - name: REGWATCH_LOG_LEVEL
          value: {{ . | quote }}
        {{- end }}
        {{- with .Values.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- end }}
      ports:
        - name: http
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
      livenessProbe:
        {{- toYaml .Values.livenessProbe | nindent 8 }}
      readinessProbe:
        {{- toYaml .Values.readinessProbe | nindent 8 }}
      resources:
        {{- toYaml .Values.resources | nindent 8 }}
      securityContext:
        {{- toYaml .Values.securityContext | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/regwatch/config.yaml
          subPath: config.yaml
          readOnly: true
        - name: tmp
          mountPath: /tmp
        - name: state
          mountPath: /var/lib/regwatch
        {{- include "regwatch.secretVolumeMounts" .Values.config | nindent 8 }}
        {{- include "regwatch.storageVolumeMounts" . | nindent 8 }}
        {{- with .Values.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "regwatch.fullname" . }}
    - name: tmp
      emptyDir:
        sizeLimit: 64Mi
    - name: state
      {{- with .Values.stateVolume }}
      {{- toYaml . | nindent 6 }}
      {{- else }}
      emptyDir:
        sizeLimit: 64Mi
      {{- end }}
    {{- include "regwatch.secretVolumes" .Values.config | nindent 4 }}
    {{- include "regwatch.storageVolumes" . | nindent 4 }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
