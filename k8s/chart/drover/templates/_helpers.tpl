{{/* Named templates shared by the manifests. Keep to the subset of tests/k8s/render_chart.py. */}}

{{/* The Drover image. */}}
{{- define "drover.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end }}

{{/* Labels of every object of a component; the argument is the component's full name. */}}
{{- define "drover.labels" -}}
app.kubernetes.io/name: {{ . }}
app.kubernetes.io/part-of: drover
{{- end }}

{{/* Spread a component's pods over nodes; the argument is the component's full name. */}}
{{- define "drover.antiAffinity" -}}
affinity:
  podAntiAffinity:
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              app.kubernetes.io/name: {{ . }}
{{- end }}

{{/* The container securityContext of every pod: no privilege, read-only root, no capabilities. */}}
{{- define "drover.containerSecurity" -}}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  capabilities:
    drop: [ALL]
{{- end }}

{{/* Where Drover finds Redis: this release's Redis or redis.external. */}}
{{- define "drover.redisHost" -}}
{{- if .Values.redis.enabled -}}
{{ .Release.Name }}-redis
{{- else if .Values.redis.external.host -}}
{{ .Values.redis.external.host }}
{{- else -}}
{{ fail "redis.enabled is false: set redis.external.host" }}
{{- end }}
{{- end }}

{{- define "drover.redisPort" -}}
{{- if .Values.redis.enabled -}}
6379
{{- else -}}
{{ .Values.redis.external.port }}
{{- end }}
{{- end }}

{{/* The environment of every Drover container: node.id from the pod name, passwords from the Secret. */}}
{{- define "drover.env" -}}
- name: DR_NODE_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: DR_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secretName }}
      key: redis-password
- name: DR_NATS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secretName }}
      key: nats-password
- name: DR_MQTT_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.secretName }}
      key: mqtt-drover-password
{{- end }}
