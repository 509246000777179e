{{- define "runner-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "runner-operator.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "runner-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "runner-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}{{ default (include "runner-operator.fullname" .) .Values.serviceAccount.name }}{{- else -}}{{ default "default" .Values.serviceAccount.name }}{{- end -}}
{{- end -}}

{{/* Rules for namespaced objects, shared by the ClusterRole and the per-namespace Roles. */}}
{{- define "runner-operator.namespacedRules" -}}
# Runners and namespaced connections: watched, and their status reported.
- apiGroups: [gitlab.runner-operator.dev]
  resources: [runners, gitlabconnections]
  verbs: [get, list, watch]
# The finalizer is added and removed with patches.
- apiGroups: [gitlab.runner-operator.dev]
  resources: [runners]
  verbs: [patch, update]
- apiGroups: [gitlab.runner-operator.dev]
  resources: [runners/status, gitlabconnections/status]
  verbs: [get, patch, update]
# Owner references with blockOwnerDeletion on the token Secrets need this.
- apiGroups: [gitlab.runner-operator.dev]
  resources: [runners/finalizers]
  verbs: [update]
# Token Secrets are written (server-side apply) and watched; access-token and CA Secrets read.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch]
# CA bundles may come from ConfigMaps.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
# Consumers are rolled onto new tokens by patching their pod template.
- apiGroups: [apps]
  resources: [deployments, statefulsets, daemonsets]
  verbs: [get, patch]
# Events for every change and failure; repeats are patched into a series.
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
