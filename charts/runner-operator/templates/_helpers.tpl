{{- define "runner-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "runner-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}
{{- end -}}

{{/* registry/repository:tag@digest; global.imageRegistry wins over image.registry. */}}
{{- define "runner-operator.image" -}}
{{- $registry := ((.Values.global).imageRegistry) | default .Values.image.registry -}}
{{- $ref := .Values.image.repository -}}
{{- if $registry }}{{ $ref = printf "%s/%s" $registry $ref }}{{ end -}}
{{- $ref = printf "%s:%s" $ref (default .Chart.AppVersion .Values.image.tag) -}}
{{- if .Values.image.digest }}{{ $ref = printf "%s@%s" $ref .Values.image.digest }}{{ end -}}
{{- $ref -}}
{{- end -}}

{{- define "runner-operator.labels" -}}
app.kubernetes.io/name: {{ include "runner-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "runner-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runner-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "runner-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "runner-operator.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* Rules for namespaced objects, shared by the ClusterRole and the per-namespace Roles. */}}
{{- define "runner-operator.namespacedRules" -}}
# Each rule names a scenario of tests/it/operator.rs (operator::chart::…) that needs it; the
# tests run the operator as this ServiceAccount against a real API server and fail on any 403.
# Runners and namespaced connections: read from watches (every scenario).
- apiGroups: [gitlab.runner-operator.dev]
  resources: [runners, gitlabconnections]
  verbs: [get, list, watch]
# The finalizer is added and removed with JSON patches (create_update_assign_and_delete).
- apiGroups: [gitlab.runner-operator.dev]
  resources: [runners]
  verbs: [patch]
# Status, conditions and the write-ahead records (every scenario).
- apiGroups: [gitlab.runner-operator.dev]
  resources: [runners/status, gitlabconnections/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion on the token Secrets: needed where the
# OwnerReferencesPermissionEnforcement admission plugin is on (OpenShift; not on by default).
- apiGroups: [gitlab.runner-operator.dev]
  resources: [runners/finalizers]
  verbs: [update]
# Token Secrets: written by server-side apply and watched; access-token and CA Secrets read
# (tokens_are_recovered_…, create_update_assign_and_delete). An apply that creates the Secret
# is also authorized as `create` (without it: 403 "cannot create resource secrets").
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
# CA bundles may come from a ConfigMap (caBundleConfigMapRef; no scenario: needs a TLS GitLab).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
# Events for every change and failure (every scenario); repeats are patched into a series.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}


{{/* Namespaces where consumers are restarted: "*" alone means every namespace the release
manages. Output: "*" or a comma-separated list (empty: none). */}}
{{- define "runner-operator.consumerRestarts" -}}
{{- $ns := .Values.consumerRestarts.namespaces -}}
{{- if has "*" $ns -}}*{{- else -}}{{ join "," $ns }}{{- end -}}
{{- end -}}
