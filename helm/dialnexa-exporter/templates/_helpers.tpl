{{/*
Chart name, truncated to the 63 characters a label value may hold.
*/}}
{{- define "dialnexa-exporter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: the release name alone when it already contains the chart name.
*/}}
{{- define "dialnexa-exporter.fullname" -}}
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

{{/*
Namespace of every namespaced object.
*/}}
{{- define "dialnexa-exporter.namespace" -}}
{{- default .Release.Namespace .Values.namespaceOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Chart label value: name and version.
*/}}
{{- define "dialnexa-exporter.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels that select the exporter pods; never change them on upgrade (selectors are immutable).
*/}}
{{- define "dialnexa-exporter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dialnexa-exporter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "dialnexa-exporter.labels" -}}
helm.sh/chart: {{ include "dialnexa-exporter.chart" . }}
{{ include "dialnexa-exporter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dialnexa-exporter
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
ServiceAccount the pods run as.
*/}}
{{- define "dialnexa-exporter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dialnexa-exporter.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Secret holding the API key: the user's existing one, else the chart's own.
*/}}
{{- define "dialnexa-exporter.secretName" -}}
{{- default (include "dialnexa-exporter.fullname" .) .Values.existingSecret }}
{{- end }}

{{/*
True (non-empty) when the pod gets an API key file: from existingSecret or from apiKey.
*/}}
{{- define "dialnexa-exporter.hasApiKey" -}}
{{- if or .Values.existingSecret .Values.apiKey }}true{{- end }}
{{- end }}

{{/*
ConfigMap holding the configuration file: the user's existing one, else the chart's own.
*/}}
{{- define "dialnexa-exporter.configMapName" -}}
{{- default (include "dialnexa-exporter.fullname" .) .Values.existingConfigMap }}
{{- end }}

{{/*
Secret holding the web configuration, or nothing when there is none.
*/}}
{{- define "dialnexa-exporter.webConfigSecretName" -}}
{{- if .Values.existingWebConfigSecret }}
{{- .Values.existingWebConfigSecret }}
{{- else if .Values.webConfig }}
{{- printf "%s-web-config" (include "dialnexa-exporter.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
Headless Service that gives the StatefulSet's shards their stable network identity.
*/}}
{{- define "dialnexa-exporter.headlessServiceName" -}}
{{- printf "%s-headless" (include "dialnexa-exporter.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Image reference: registry/repository, then @digest if set, else :tag (default appVersion).
*/}}
{{- define "dialnexa-exporter.image" -}}
{{- $repository := .Values.image.repository }}
{{- if .Values.image.registry }}
{{- $repository = printf "%s/%s" .Values.image.registry .Values.image.repository }}
{{- end }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The configuration file: campaigns plus every non-null setting of .Values.config.
*/}}
{{- define "dialnexa-exporter.configFile" -}}
{{- $settings := dict }}
{{- range $key, $value := .Values.config }}
{{- if not (kindIs "invalid" $value) }}
{{- $_ := set $settings $key $value }}
{{- end }}
{{- end }}
{{- $_ := set $settings "campaigns" (.Values.campaigns | default list) }}
{{- toYaml $settings }}
{{- end }}

{{/*
The exporter's environment, shared by its container and the check-on-start init container.
*/}}
{{- define "dialnexa-exporter.env" -}}
env:
  - name: DIALNEXA_LISTEN_ADDRESS
    value: {{ printf ":%d" (int .Values.containerPort) | quote }}
  - name: DIALNEXA_CONFIG_FILE
    value: /etc/dialnexa-exporter/config/config.yaml
  {{- if include "dialnexa-exporter.hasApiKey" . }}
  - name: DIALNEXA_API_KEY_FILE
    value: /etc/dialnexa-exporter/secret/api-key
  {{- end }}
  {{- if include "dialnexa-exporter.webConfigSecretName" . }}
  - name: DIALNEXA_WEB_CONFIG_FILE
    value: /etc/dialnexa-exporter/web/web-config.yml
  {{- end }}
  {{- if .Values.sharding.enabled }}
  - name: DIALNEXA_SHARD_COUNT
    value: {{ .Values.sharding.shards | int | toString | quote }}
  - name: DIALNEXA_POD_NAME
    valueFrom:
      fieldRef:
        apiVersion: v1
        fieldPath: metadata.name
  {{- end }}
  {{- with .Values.proxy }}
  {{- if .existingSecret }}
  {{- $secret := .existingSecret }}
  {{- range $name, $key := dict "HTTPS_PROXY" .httpsProxyKey "HTTP_PROXY" .httpProxyKey }}
  - name: {{ $name }}
    valueFrom:
      secretKeyRef:
        name: {{ $secret | quote }}
        key: {{ $key | quote }}
        optional: true
  {{- end }}
  {{- else }}
  {{- with .httpsProxy }}
  - name: HTTPS_PROXY
    value: {{ . | quote }}
  {{- end }}
  {{- with .httpProxy }}
  - name: HTTP_PROXY
    value: {{ . | quote }}
  {{- end }}
  {{- end }}
  {{- with .noProxy }}
  - name: NO_PROXY
    value: {{ . | quote }}
  {{- end }}
  {{- end }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
The exporter's volume mounts, shared by its container and the check-on-start init container.
*/}}
{{- define "dialnexa-exporter.volumeMounts" -}}
volumeMounts:
  - name: tmp
    mountPath: /tmp
  - name: config
    mountPath: /etc/dialnexa-exporter/config
    readOnly: true
  {{- if include "dialnexa-exporter.hasApiKey" . }}
  - name: api-key
    mountPath: /etc/dialnexa-exporter/secret
    readOnly: true
  {{- end }}
  {{- if include "dialnexa-exporter.webConfigSecretName" . }}
  - name: web-config
    mountPath: /etc/dialnexa-exporter/web
    readOnly: true
  {{- end }}
  {{- with .Values.extraVolumeMounts }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end }}

{{/*
Pod template shared by the Deployment and the sharded StatefulSet.
*/}}
{{- define "dialnexa-exporter.podTemplate" -}}
metadata:
  labels:
    {{- $labels := include "dialnexa-exporter.labels" . | fromYaml }}
    {{- /* the selector labels win over podLabels: a pod outside its own selector is orphaned */}}
    {{- toYaml (merge (include "dialnexa-exporter.selectorLabels" . | fromYaml) (.Values.podLabels | default dict) $labels) | nindent 4 }}
  annotations:
    kubectl.kubernetes.io/default-container: exporter
    {{- if and .Values.rolloutOnConfigChange (not .Values.existingConfigMap) }}
    checksum/config: {{ include "dialnexa-exporter.configFile" . | sha256sum }}
    {{- end }}
    {{- if and .Values.apiKey (not .Values.existingSecret) }}
    checksum/secret: {{ include (print $.Template.BasePath "/secret.yaml") . | sha256sum }}
    {{- end }}
    {{- with .Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "dialnexa-exporter.serviceAccountName" . }}
  automountServiceAccountToken: {{ .Values.serviceAccount.automountServiceAccountToken }}
  enableServiceLinks: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  terminationGracePeriodSeconds: {{ .Values.terminationGracePeriodSeconds }}
  {{- with .Values.podSecurityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- if .Values.checkOnStart.enabled }}
  initContainers:
    # `dialnexa-exporter check` before the exporter starts: a pod with a configuration error
    # (or, online, a key the API refuses or a campaign it does not know) never goes live.
    - name: check
      image: {{ include "dialnexa-exporter.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      args:
        - check
        {{- if .Values.checkOnStart.online }}
        - --online
        {{- end }}
      {{- include "dialnexa-exporter.env" . | nindent 6 }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- include "dialnexa-exporter.volumeMounts" . | nindent 6 }}
  {{- end }}
  containers:
    - name: exporter
      image: {{ include "dialnexa-exporter.image" . }}
      imagePullPolicy: {{ .Values.image.pullPolicy }}
      {{- with .Values.extraArgs }}
      args:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- include "dialnexa-exporter.env" . | nindent 6 }}
      {{- with .Values.extraEnvFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      ports:
        - name: http-metrics
          containerPort: {{ .Values.containerPort }}
          protocol: TCP
      {{- with .Values.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.resources }}
      resources:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with .Values.securityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- include "dialnexa-exporter.volumeMounts" . | nindent 6 }}
  volumes:
    - name: tmp
      emptyDir:
        sizeLimit: {{ .Values.tmpSizeLimit }}
    # Mounted as a directory (no subPath) so that ConfigMap updates reach the running pod.
    - name: config
      configMap:
        name: {{ include "dialnexa-exporter.configMapName" . }}
        items:
          - key: config.yaml
            path: config.yaml
    {{- if include "dialnexa-exporter.hasApiKey" . }}
    - name: api-key
      secret:
        secretName: {{ include "dialnexa-exporter.secretName" . }}
        defaultMode: 0440
        items:
          - key: {{ .Values.secretKey }}
            path: api-key
    {{- end }}
    {{- with include "dialnexa-exporter.webConfigSecretName" . }}
    - name: web-config
      secret:
        secretName: {{ . }}
        defaultMode: 0440
        items:
          - key: web-config.yml
            path: web-config.yml
    {{- end }}
    {{- with .Values.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
