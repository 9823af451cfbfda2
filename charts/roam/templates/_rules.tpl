{{- /*
Roam's alerts, as the `groups` of a Prometheus rules file (the PrometheusRule's
spec; the chart's test feeds the same text to `promtool check rules`).
Every expression uses only series Roam itself exports.
*/}}
{{- define "roam.prometheusRules" -}}
{{- $r := .Values.monitoring.prometheusRule -}}
groups:
  - name: roam.volumes
    rules:
      - alert: RoamMemberOutOfSync
        # The primary reports a secondary that is not InSync: it does not hold
        # every acknowledged write (a failover to it may lose them).
        expr: max by (volume, member) (roam_storage_member_in_sync == 0)
        for: {{ $r.outOfSyncFor }}
        labels: {severity: warning}
        annotations:
          summary: {{`"Volume {{ $labels.volume }}: member {{ $labels.member }} is out of sync"`}}
          description: {{ printf "%q" (printf "The primary has reported the replica in {{ $labels.member }} out of sync for %s; see kubectl roam status." $r.outOfSyncFor) }}
      - alert: RoamLagOverBound
        # An Async secondary is behind by more than the group allows (writes
        # wait for it: back-pressure).
        expr: >-
          (max by (volume, member) (roam_storage_member_lag_bytes
            > on (volume, data_center) group_left () (roam_storage_lag_bound_bytes > 0)))
          or
          (max by (volume, member) (roam_storage_member_lag_seconds
            > on (volume, data_center) group_left () (roam_storage_lag_bound_seconds > 0)))
        for: 1m
        labels: {severity: warning}
        annotations:
          summary: {{`"Volume {{ $labels.volume }}: {{ $labels.member }} lags beyond the group's bound"`}}
      - alert: RoamPrimaryUnreachable
        # Secondaries report the volume but no storage system reports its
        # primary: the primary's node plugin is down or cut off.
        expr: >-
          count by (volume) (roam_storage_volume_role{role="secondary"} == 1)
          unless on (volume)
          count by (volume) (roam_storage_volume_role{role="primary"} == 1)
        for: 1m
        labels: {severity: critical}
        annotations:
          summary: {{`"Volume {{ $labels.volume }} has no reachable primary"`}}
      - alert: RoamFailover
        # A forced promotion in the last 15 minutes that may have lost writes:
        # the possible loss the operator recorded in the group's lastFailover
        # (an Async member's last reported lag) is above 0. A failover that
        # lost nothing (Sync) does not page anyone.
        expr: >-
          (
            max by (namespace, group) (roam_operator_last_failover_possible_loss_bytes) > 0
            or
            max by (namespace, group) (roam_operator_last_failover_possible_loss_seconds) > 0
          )
          and on (namespace, group)
          (time() - max by (namespace, group) (roam_operator_last_failover_timestamp_seconds) < 900)
        labels: {severity: critical}
        annotations:
          summary: {{`"Volume {{ $labels.namespace }}/{{ $labels.group }} failed over and may have lost writes"`}}
          description: {{`"kubectl roam status {{ $labels.group }} -n {{ $labels.namespace }} shows the possible loss recorded in lastFailover."`}}
  - name: roam.datacenters
    rules:
      - alert: RoamDataCenterFreeSpaceLow
        expr: >-
          sum by (data_center) (roam_storage_free_bytes)
          / sum by (data_center) (roam_storage_capacity_bytes) < {{ $r.freeSpaceRatio }}
        for: 10m
        labels: {severity: warning}
        annotations:
          summary: {{`"Data center {{ $labels.data_center }} has {{ $value | humanizePercentage }} of its storage free"`}}
      - alert: RoamFrontendBroken
        # The node plugin failed to stage, publish or grow a volume for a pod
        # (FUSE export, loop device, file system).
        expr: >-
          sum by (kubernetes_node, rpc, code) (increase(roam_csi_rpc_errors_total{rpc=~"NodeStageVolume|NodePublishVolume|NodeExpandVolume"}[10m])) > 0
        labels: {severity: warning}
        annotations:
          summary: {{`"{{ $labels.rpc }} fails on {{ $labels.kubernetes_node }} ({{ $labels.code }})"`}}
      - alert: RoamVolumeFrontendBroken
        # A staged volume's frontend stopped carrying I/O (the FUSE export
        # does not answer, or the loop device lost its file): the node
        # plugin's own check, every 10s.
        expr: max by (volume, node) (roam_csi_node_frontend_healthy == 0)
        for: 1m
        labels: {severity: warning}
        annotations:
          summary: {{`"Volume {{ $labels.volume }}: the frontend on {{ $labels.node }} is broken"`}}
{{- end }}
