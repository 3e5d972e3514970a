{{- define "vsxds.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
The release name alone when it already says vsxds, so `helm install vsxds` gives the same object
names as deploy/ (vsxds, vsxds-virtualservice-editor, ...).
*/}}
{{- define "vsxds.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "vsxds.selectorLabels" -}}
app.kubernetes.io/name: {{ include "vsxds.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "vsxds.labels" -}}
{{ include "vsxds.selectorLabels" . }}
app.kubernetes.io/part-of: vsxds
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "vsxds.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "vsxds.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Node authentication: as set, else client-cert with mutual TLS, else peer-ip. */}}
{{- define "vsxds.nodeAuth" -}}
{{- if .Values.nodeAuth -}}
{{- if and (eq .Values.nodeAuth "client-cert") (not (and .Values.xdsTls.secretName .Values.xdsTls.clientCa)) -}}
{{- fail "nodeAuth client-cert needs mutual TLS: set xdsTls.secretName to a Secret with tls.crt, tls.key and ca.crt" -}}
{{- end -}}
{{- .Values.nodeAuth -}}
{{- else if and .Values.xdsTls.secretName .Values.xdsTls.clientCa -}}
client-cert
{{- else -}}
peer-ip
{{- end -}}
{{- end -}}
