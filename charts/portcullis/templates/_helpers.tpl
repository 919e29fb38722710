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
