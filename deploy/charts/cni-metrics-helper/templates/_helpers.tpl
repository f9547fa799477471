{{/* The name every object carries: cni-metrics-helper unless overridden. */}}
{{- define "cni-metrics-helper.fullname" -}}
{{- default .Values.nameOverride .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "cni-metrics-helper.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "cni-metrics-helper.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "cni-metrics-helper.image" -}}
{{- default (printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag)) .Values.image.override -}}
{{- end -}}

{{- define "cni-metrics-helper.labels" -}}
k8s-app: cni-metrics-helper
app.kubernetes.io/name: {{ include "cni-metrics-helper.fullname" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
