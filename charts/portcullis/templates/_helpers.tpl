{{- define "portcullis.labels" -}}
app.kubernetes.io/name: portcullis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}
{{- define "portcullis.selector" -}}
app.kubernetes.io/name: portcullis
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Non-empty when the admission webhook is on: kube mode with webhook.enabled. */}}
{{- define "portcullis.webhook" -}}
{{- if and (eq .Values.mode "kube") .Values.webhook.enabled }}true{{ end }}
{{- end }}

{{/* Non-empty when a CA bundle is mounted for --ca-file: caBundle names a ConfigMap or a
Secret (not both). */}}
{{- define "portcullis.caBundle" -}}
{{- with .Values.caBundle }}
{{- if and .configMap.name .secret.name }}
{{- fail "caBundle: name a ConfigMap or a Secret, not both" }}
{{- end }}
{{- if or .configMap.name .secret.name }}true{{ end }}
{{- end }}
{{- end }}

{{/* The status Lease, one per release (--lease-name): releases sharing a namespace do not
contend for one, and the Role grants get and update on this name alone. */}}
{{- define "portcullis.leaseName" -}}
{{- printf "%s-status-writer" .Release.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The container image: by digest when image.digest is set, else by tag. */}}
{{- define "portcullis.image" -}}
{{- with .Values.image.digest }}
{{- printf "%s@%s" $.Values.image.repository . }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}
