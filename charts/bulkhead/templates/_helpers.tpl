{{/* Chart name, trimmed for labels. */}}
{{- define "bulkhead.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: the release name, with the chart name unless the release already contains it. */}}
{{- define "bulkhead.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "bulkhead.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "bulkhead.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "bulkhead.selectorLabels" -}}
app.kubernetes.io/name: {{ include "bulkhead.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "bulkhead.serviceAccountName" -}}
{{- default (include "bulkhead.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/*
The proxy's ServiceAccount: in split mode one of its own, so that only proxy pods hold the right to
impersonate users and groups; in combined mode the one ServiceAccount.
*/}}
{{- define "bulkhead.proxyServiceAccountName" -}}
{{- if eq .Values.mode "split" -}}
{{- printf "%s-proxy" (include "bulkhead.serviceAccountName" .) -}}
{{- else -}}
{{- include "bulkhead.serviceAccountName" . -}}
{{- end -}}
{{- end -}}

{{- define "bulkhead.image" -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}

{{/*
The Deployments to render: a list of {name, component, roles, replicas, resources}.
combined: one, running every role; split: one per role.
*/}}
{{- define "bulkhead.deployments" -}}
{{- $all := list "controller" "webhook" "proxy" -}}
{{- $out := list -}}
{{- if eq .Values.mode "combined" -}}
{{- $out = append $out (dict "name" (include "bulkhead.fullname" .) "component" "combined" "roles" $all "replicas" .Values.replicas "resources" .Values.resources "serviceAccount" (include "bulkhead.serviceAccountName" .)) -}}
{{- else if eq .Values.mode "split" -}}
{{- range $role := $all -}}
{{- $cfg := index $.Values.roles $role -}}
{{- $sa := ternary (include "bulkhead.proxyServiceAccountName" $) (include "bulkhead.serviceAccountName" $) (eq $role "proxy") -}}
{{- $out = append $out (dict "name" (printf "%s-%s" (include "bulkhead.fullname" $) $role) "component" $role "roles" (list $role) "replicas" $cfg.replicas "resources" (default $.Values.resources $cfg.resources) "serviceAccount" $sa) -}}
{{- end -}}
{{- else -}}
{{- fail (printf "mode must be combined or split, not %q" .Values.mode) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
