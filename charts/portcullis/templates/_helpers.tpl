{{/*
Naming, as `helm create` and the common charts (bitnami's common.names.fullname): every object
of a release is named after `portcullis.fullname`, the release's name when it contains
`portcullis` (`helm install portcullis ...`), else `<release>-portcullis`, so that as a
subchart the objects do not take the parent's names; fullnameOverride sets it outright
(`--set fullnameOverride=<release>` keeps a release's names from before chart 0.2.0).
Cluster-scoped objects (ClusterRole, ClusterRoleBinding, ValidatingWebhookConfiguration)
take `portcullis.clusterName`, which adds the release's namespace: two releases of one name
in two namespaces do not collide.
*/}}

{{/* The app's name, in the `app.kubernetes.io/name` label: `portcullis`, or nameOverride. */}}
{{- define "portcullis.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of the release's namespaced objects. */}}
{{- define "portcullis.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := include "portcullis.name" . }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The name of the release's cluster-scoped objects: `<fullname>-<namespace>` (as bitnami's
common.names.fullname.namespace), unique across the cluster. Those names may be 253
characters long: no cut at 63, which could make two names one. */}}
{{- define "portcullis.clusterName" -}}
{{- printf "%s-%s" (include "portcullis.fullname" .) .Release.Namespace | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/* The name of an object the release puts in namespace `ns` (Roles in kube.namespaces, the
Lease in kube.leaseNamespace, the dashboard in grafanaDashboard.namespace): fullname in the
release's own namespace, else clusterName, since releases of other namespaces may put theirs
there too. Called with (dict "ctx" $ "ns" NAMESPACE). */}}
{{- define "portcullis.nameIn" -}}
{{- if eq .ns .ctx.Release.Namespace }}
{{- include "portcullis.fullname" .ctx }}
{{- else }}
{{- include "portcullis.clusterName" .ctx }}
{{- end }}
{{- end }}

{{/* The namespace of the status Lease and its Role: kube.leaseNamespace, or the release's. */}}
{{- define "portcullis.leaseNamespace" -}}
{{- .Values.kube.leaseNamespace | default .Release.Namespace }}
{{- end }}

{{/* `helm.sh/chart`: the chart's name and version. */}}
{{- define "portcullis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The selector labels: the stable subset, the same in every version of the chart, since a
Deployment's selector cannot change on upgrade. */}}
{{- define "portcullis.selector" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The labels of every object (https://kubernetes.io/docs/concepts/overview/working-with-objects/common-labels/,
and Helm's): the selector labels and those that may change from one version to the next. */}}
{{- define "portcullis.labels" -}}
helm.sh/chart: {{ include "portcullis.chart" . }}
{{ include "portcullis.selector" . }}
app.kubernetes.io/version: {{ regexReplaceAll "[^-A-Za-z0-9_.]" (.Values.image.tag | default .Chart.AppVersion) "_" | trunc 63 | trimSuffix "-" | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The ServiceAccount the pods run as: the chart's (serviceAccount.create) or one named. */}}
{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- .Values.serviceAccount.name | default (include "portcullis.fullname" .) }}
{{- else }}
{{- required "serviceAccount.name: with serviceAccount.create=false, name the ServiceAccount the pods run as (kube mode binds its role to it)" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Image pull secrets: imagePullSecrets and global.imagePullSecrets, each a name or {name}. */}}
{{- define "portcullis.imagePullSecrets" -}}
{{- $names := list }}
{{- $global := (.Values.global | default dict).imagePullSecrets | default list }}
{{- range concat (.Values.imagePullSecrets | default list) $global }}
{{- $name := . }}
{{- if kindIs "map" . }}
{{- $name = .name }}
{{- end }}
{{- if and $name (not (has $name $names)) }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- range $names }}
- name: {{ . }}
{{- end }}
{{- end }}

{{/* Non-empty when the admission webhook is on: kube mode with webhook.enabled. */}}
{{- define "portcullis.webhook" -}}
{{- if and (eq .Values.mode "kube") .Values.webhook.enabled }}true{{ end }}
{{- end }}

{{/* The Secret holding the webhook's serving certificate: webhook.existingSecret, the user's,
or the chart's own (generated, or issued by cert-manager). */}}
{{- define "portcullis.webhookSecretName" -}}
{{- .Values.webhook.existingSecret | default (printf "%s-webhook-tls" (include "portcullis.fullname" .)) }}
{{- end }}

{{/* Non-empty when a CA bundle is mounted for --ca-file: caBundle names a ConfigMap or a
Secret. */}}
{{- define "portcullis.caBundle" -}}
{{- with .Values.caBundle }}
{{- if or .configMap.name .secret.name }}true{{ end }}
{{- end }}
{{- end }}

{{/* The status Lease, one per release (--lease-name): releases sharing a namespace do not
contend for one, and the Role grants get and update on this name alone. In a
kube.leaseNamespace other than the release's, the name carries the release's namespace. */}}
{{- define "portcullis.leaseName" -}}
{{- printf "%s-status-writer" (include "portcullis.nameIn" (dict "ctx" . "ns" (include "portcullis.leaseNamespace" .))) | trunc 253 | trimSuffix "-" }}
{{- end }}

{{/* The container image: by digest when image.digest is set, else by tag. */}}
{{- define "portcullis.image" -}}
{{- with .Values.image.digest }}
{{- printf "%s@%s" $.Values.image.repository . }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/* Checks across values that the schema cannot state, and the values that moved: each
refusal names where the value belongs now. Included by deployment.yaml, which every
rendering has, and by webhook.yaml, which Helm renders first. */}}
{{- define "portcullis.validateValues" -}}
{{- if hasKey .Values "podResources" }}
{{- fail "values: `podResources` is now `resources` (the container's requests and limits, as in every chart): rename it" }}
{{- end }}
{{- range $key, $value := .Values.resources }}
{{- if not (has $key (list "requests" "limits" "claims")) }}
{{- fail (printf "values: `resources` now holds the container's resources (requests, limits, claims), and `%s` is none of them; move the file-mode configuration to `config.files` (`--set-file 'config.files.%s=my.yaml'`)" $key ($key | replace "." "\\.")) }}
{{- end }}
{{- end }}
{{- range $key, $_ := include "portcullis.selector" . | fromYaml }}
{{- if hasKey ($.Values.podLabels | default dict) $key }}
{{- fail (printf "podLabels: `%s` is a selector label, set by the chart (nameOverride changes the name); give the pods other labels" $key) }}
{{- end }}
{{- end }}
{{- if and .Values.caBundle.configMap.name .Values.caBundle.secret.name }}
{{- fail "caBundle: name a ConfigMap or a Secret, not both" }}
{{- end }}
{{- with .Values.webhook }}
{{- if and .existingSecret .certManager.enabled }}
{{- fail "webhook: set existingSecret (your own certificate) or certManager.enabled (cert-manager's), not both" }}
{{- end }}
{{- if and .caBundle (not .existingSecret) }}
{{- fail "webhook.caBundle is the CA of webhook.existingSecret's certificate: set webhook.existingSecret too (the chart's own and cert-manager's certificates bring their CA)" }}
{{- end }}
{{- end }}
{{- end }}
