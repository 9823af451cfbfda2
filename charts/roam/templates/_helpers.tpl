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
