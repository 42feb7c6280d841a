{{/* Names and labels. */}}
{{- define "pvecri.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pvecri.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "pvecri.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "pvecri.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pvecri.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pvecri.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "pvecri.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "pvecri.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "pvecri.image" -}}
{{- $repo := required "image.repository is required: push the installer image (scripts/build-image) to a registry your nodes can pull from" .Values.image.repository -}}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding the Proxmox API token, if any. */}}
{{- define "pvecri.tokenSecret" -}}
{{- if .Values.pve.existingSecret -}}
{{- .Values.pve.existingSecret -}}
{{- else if .Values.pve.token -}}
{{- printf "%s-pve-token" (include "pvecri.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "pvecri.tokenSecretKey" -}}
{{- if .Values.pve.existingSecret -}}{{ .Values.pve.existingSecretKey }}{{- else -}}token{{- end -}}
{{- end -}}

{{/* The config the chart installs: .Values.config plus what other values imply. */}}
{{- define "pvecri.config" -}}
{{- $config := deepCopy .Values.config -}}
{{- if .Values.metrics.enabled -}}
{{- $metrics := default dict (get $config "metrics") -}}
{{- if not (get $metrics "address") -}}
{{- $_ := set $metrics "address" (printf "0.0.0.0:%v" .Values.metrics.port) -}}
{{- end -}}
{{- $_ := set $config "metrics" $metrics -}}
{{- end -}}
{{- $podHost := default dict (get $config "pod_host") -}}
{{- if and (eq (toString (get $podHost "driver")) "pve") (not (include "pvecri.tokenSecret" .)) -}}
{{- fail "config.pod_host.driver is pve: give the Proxmox API token in pve.token or pve.existingSecret" -}}
{{- end -}}
{{- toYaml $config -}}
{{- end -}}

{{- define "pvecri.socket" -}}
{{- default "/run/pvecri/pvecri.sock" (get .Values.config "socket") -}}
{{- end -}}

{{/*
TOML from a YAML map. Helm's toToml writes every number as a float (4 -> 4.0), which
pvecri's integer keys refuse; this writes whole numbers as integers. Keys with a null value
are left out (the key's default applies).
*/}}
{{- define "pvecri.tomlKey" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . -}}{{ . }}{{- else -}}{{ toJson . }}{{- end -}}
{{- end -}}

{{- define "pvecri.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- if eq (float64 $v) (float64 (int64 $v)) -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else if kindIs "slice" $v -}}
[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "pvecri.tomlValue" $e }}{{ end }}]
{{- else if kindIs "map" $v -}}
{ {{- $first := true -}}{{ range $k := keys $v | sortAlpha }}{{ $e := get $v $k }}{{ if not (kindIs "invalid" $e) }}{{ if not $first }},{{ end }} {{ include "pvecri.tomlKey" $k }} = {{ include "pvecri.tomlValue" $e }}{{ $first = false }}{{ end }}{{ end }} }
{{- else -}}
{{- fail (printf "config: cannot write %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* A table: its plain keys, then its sub-tables. Argument: dict "path" "table". */}}
{{- define "pvecri.tomlTable" -}}
{{- $path := .path -}}
{{- $table := .table -}}
{{- $plain := list -}}
{{- $tables := list -}}
{{- range $k := keys $table | sortAlpha -}}
{{- $v := get $table $k -}}
{{- if kindIs "map" $v -}}{{- $tables = append $tables $k -}}
{{- else if not (kindIs "invalid" $v) -}}{{- $plain = append $plain $k -}}
{{- end -}}
{{- end -}}
{{- if and $path $plain }}

[{{ join "." $path }}]
{{- end }}
{{- range $k := $plain }}
{{ include "pvecri.tomlKey" $k }} = {{ include "pvecri.tomlValue" (get $table $k) }}
{{- end }}
{{- range $k := $tables }}
{{- include "pvecri.tomlTable" (dict "path" (append $path (include "pvecri.tomlKey" $k)) "table" (get $table $k)) }}
{{- end }}
{{- end -}}
