{{- /* Storage traffic security, shared by the node plugin and the operator. */}}

{{- define "roam.storageTls.enabled" -}}
{{- $tls := (.Values.csi | default dict).storageTls | default dict -}}
{{- if ne (toString $tls.enabled) "false" }}true{{ end -}}
{{- end }}

{{- define "roam.storageTls.secret" -}}
{{- $tls := (.Values.csi | default dict).storageTls | default dict -}}
{{- $tls.existingSecret | default "roam-storage-tls" -}}
{{- end }}

{{- define "roam.storageScheme" -}}
{{- if include "roam.storageTls.enabled" . }}https{{ else }}http{{ end -}}
{{- end }}

{{- /* Certificate flags of roam-csi node and roam-operator (nothing when disabled). */}}
{{- define "roam.storageTls.certArgs" -}}
{{- if include "roam.storageTls.enabled" . -}}
- --tls-cert=/etc/roam/storage-tls/tls.crt
- --tls-key=/etc/roam/storage-tls/tls.key
- --tls-ca=/etc/roam/storage-tls/ca.crt
- --tls-server-name=storage.roam.dev
{{- end -}}
{{- end }}

{{- /* roam-csi node: mutual TLS, or an explicit --insecure. */}}
{{- define "roam.storageTls.args" -}}
{{- if include "roam.storageTls.enabled" . -}}
{{ include "roam.storageTls.certArgs" . }}
{{- else -}}
- --insecure
{{- end -}}
{{- end }}

{{- define "roam.storageTls.volumeMount" -}}
{{- if include "roam.storageTls.enabled" . -}}
- name: storage-tls
  mountPath: /etc/roam/storage-tls
  readOnly: true
{{- end -}}
{{- end }}

{{- define "roam.storageTls.volume" -}}
{{- if include "roam.storageTls.enabled" . -}}
- name: storage-tls
  secret:
    secretName: {{ include "roam.storageTls.secret" . }}
{{- end -}}
{{- end }}

{{- /* The Roam image (operator and roam-csi): csi.images.roamCsi, else image.repository:tag. */}}
{{- define "roam.image" -}}
{{- $images := (.Values.csi | default dict).images | default dict -}}
{{- $images.roamCsi | default (printf "%s:%s" .Values.image.repository .Values.image.tag) -}}
{{- end }}

{{- define "roam.labels" -}}
app.kubernetes.io/part-of: roam
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- /* Pod security context of the unprivileged pods (Pod Security "restricted"). */}}
{{- define "roam.restrictedPod" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "roam.restrictedContainer" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}

{{- define "roam.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
{{- end }}

{{- /* Scheduling of one component: priority class, node selector, tolerations, affinity. */}}
{{- define "roam.scheduling" -}}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .nodeSelector }}
nodeSelector: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations: {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity: {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Preferred anti-affinity that spreads a Deployment's replicas over data
centers first, then nodes, so that losing one data center leaves one
running. The argument is the pods' matchLabels.
*/}}
{{- define "roam.spread" -}}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: topology.kubernetes.io/zone
          labelSelector:
            matchLabels: {{- toYaml . | nindent 14 }}
      - weight: 50
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels: {{- toYaml . | nindent 14 }}
{{- end }}
