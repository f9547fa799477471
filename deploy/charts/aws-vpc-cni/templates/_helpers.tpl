{{/* The name every object carries: aws-node unless overridden. */}}
{{- define "aws-vpc-cni.fullname" -}}
{{- default .Values.nameOverride .Values.fullnameOverride -}}
{{- end -}}

{{- define "aws-vpc-cni.serviceAccountName" -}}
{{- default (include "aws-vpc-cni.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "aws-vpc-cni.image" -}}
{{- default (printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag)) .Values.image.override -}}
{{- end -}}

{{- define "aws-vpc-cni.initImage" -}}
{{- default (printf "%s:%s" .Values.init.image.repository (default .Chart.AppVersion .Values.init.image.tag)) .Values.init.image.override -}}
{{- end -}}

{{- define "aws-vpc-cni.nodeAgentImage" -}}
{{- default (printf "%s:%s" .Values.nodeAgent.image.repository (default .Chart.AppVersion .Values.nodeAgent.image.tag)) .Values.nodeAgent.image.override -}}
{{- end -}}

{{- define "aws-vpc-cni.controllerImage" -}}
{{- default (printf "%s:%s" .Values.networkPolicyController.image.repository (default .Chart.AppVersion .Values.networkPolicyController.image.tag)) .Values.networkPolicyController.image.override -}}
{{- end -}}

{{- define "aws-vpc-cni.selectorLabels" -}}
{{- if .Values.originalMatchLabels -}}
k8s-app: aws-node
{{- else -}}
app.kubernetes.io/name: {{ include "aws-vpc-cni.fullname" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
{{- end -}}

{{- define "aws-vpc-cni.labels" -}}
app.kubernetes.io/name: {{ include "aws-vpc-cni.fullname" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
k8s-app: aws-node
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
