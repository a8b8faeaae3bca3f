{{/* ---------------------------------------------------------------- names */}}

{{- define "sluice.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-wide prefix of every object: the release name when it already says sluice. */}}
{{- define "sluice.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* The services the chart runs, in pipeline order. */}}
{{- define "sluice.services" -}}
importer fetcher saver
{{- end }}

{{/* Name of one component's objects: <fullname>-<component>. Takes (list $ component). */}}
{{- define "sluice.componentName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "sluice.fullname" $root | trunc 50 | trimSuffix "-") (index . 1) }}
{{- end }}

{{- define "sluice.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels. Takes (list $ component). */}}
{{- define "sluice.labels" -}}
{{- $root := index . 0 -}}
helm.sh/chart: {{ include "sluice.chart" $root }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ $root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ $root.Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end }}

{{- define "sluice.selectorLabels" -}}
{{- $root := index . 0 -}}
app.kubernetes.io/name: {{ include "sluice.name" $root }}
app.kubernetes.io/instance: {{ $root.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "sluice.image" -}}
{{- $img := .Values.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (toString (default .Chart.AppVersion $img.tag)) }}
{{- end }}
{{- end }}

{{/* ---------------------------------------------------------- secret names */}}

{{- define "sluice.databaseSecretName" -}}
{{- if .Values.database.existingSecret }}
{{- .Values.database.existingSecret }}
{{- else }}
{{- printf "%s-database" (include "sluice.fullname" .) }}
{{- end }}
{{- end }}

{{- define "sluice.databaseSecretKey" -}}
{{- if .Values.database.existingSecret }}
{{- required "database.existingSecretKey: name the key of database.existingSecret that holds the URL" .Values.database.existingSecretKey }}
{{- else }}
{{- print "DATABASE_URL" }}
{{- end }}
{{- end }}

{{- define "sluice.natsAuthSecretName" -}}
{{- if .Values.nats.auth.existingSecret }}
{{- .Values.nats.auth.existingSecret }}
{{- else }}
{{- printf "%s-nats-auth" (include "sluice.fullname" .) }}
{{- end }}
{{- end }}

{{- define "sluice.natsTlsSecretName" -}}
{{- if .Values.nats.tls.existingSecret }}
{{- .Values.nats.tls.existingSecret }}
{{- else }}
{{- printf "%s-nats-tls" (include "sluice.fullname" .) }}
{{- end }}
{{- end }}

{{- define "sluice.consoleSecretName" -}}
{{- if .Values.console.token.existingSecret }}
{{- .Values.console.token.existingSecret }}
{{- else }}
{{- printf "%s-console" (include "sluice.fullname" .) }}
{{- end }}
{{- end }}

{{/*
The console's SLUICE_CONSOLE_TOKEN, as a dict with the Secret's `key` (and
`create` when the chart makes the Secret from console.token.value); empty
when the console has no token. The message about a short value does not
repeat it.
*/}}
{{- define "sluice.consoleToken" -}}
{{- $token := .Values.console.token | default dict }}
{{- if $token.existingSecret }}
{{- dict "key" (required "console.token.existingSecretKey: name the key of console.token.existingSecret that holds the token" $token.existingSecretKey) | toYaml }}
{{- else if $token.value }}
{{- /* Characters, as the console counts them, not bytes. */}}
{{- if lt (len (splitList "" (toString $token.value))) 16 }}
{{- fail "console.token.value is too short: at least 16 characters (SLUICE_CONSOLE_TOKEN)" }}
{{- end }}
{{- dict "key" "SLUICE_CONSOLE_TOKEN" "create" true | toYaml }}
{{- end }}
{{- end }}

{{/*
The NATS auth items in use, as a dict item -> key in the Secret: from
existingSecretKeys when an existing Secret is named, else from the values
given (the chart's Secret uses fixed keys).
*/}}
{{- define "sluice.natsAuthKeys" -}}
{{- $auth := .Values.nats.auth }}
{{- $fixed := dict "user" "user" "password" "password" "token" "token" "creds" "nats.creds" "nkey" "nkey.seed" }}
{{- $out := dict }}
{{- range $item := list "user" "password" "token" "creds" "nkey" }}
{{- if $auth.existingSecret }}
{{- $key := index ($auth.existingSecretKeys | default dict) $item }}
{{- if $key }}{{- $_ := set $out $item $key }}{{- end }}
{{- else if index $auth $item }}
{{- $_ := set $out $item (index $fixed $item) }}
{{- end }}
{{- end }}
{{- if and (hasKey $out "user") (not (hasKey $out "password")) }}
{{- fail "nats.auth: a user needs a password" }}
{{- end }}
{{- if and (hasKey $out "password") (not (hasKey $out "user")) }}
{{- fail "nats.auth: a password needs a user" }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* The TLS items in use, item -> key in the Secret. */}}
{{- define "sluice.natsTlsKeys" -}}
{{- $tls := .Values.nats.tls }}
{{- $out := dict }}
{{- if $tls.enabled }}
{{- $fixed := dict "ca" "ca.crt" "cert" "tls.crt" "key" "tls.key" }}
{{- range $item := list "ca" "cert" "key" }}
{{- if $tls.existingSecret }}
{{- $key := index ($tls.existingSecretKeys | default dict) $item }}
{{- if $key }}{{- $_ := set $out $item $key }}{{- end }}
{{- else if index $tls $item }}
{{- $_ := set $out $item (index $fixed $item) }}
{{- end }}
{{- end }}
{{- if not (or (hasKey $out "ca") (hasKey $out "cert")) }}
{{- fail "nats.tls.enabled: give nats.tls.existingSecret (with its keys) or the PEM contents nats.tls.ca / cert / key" }}
{{- end }}
{{- if ne (hasKey $out "cert") (hasKey $out "key") }}
{{- fail "nats.tls: a client certificate needs its key, and a key its certificate" }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* ------------------------------------------------------------ durations */}}

{{/*
Seconds (rounded up) in a duration written the way sluice reads it
(humantime: 500ms, 20s, 1m30s, 2h, 7d). Takes (list value name).
*/}}
{{- define "sluice.durationSeconds" -}}
{{- $text := toString (index . 0) | replace " " "" }}
{{- $name := index . 1 }}
{{- $units := dict "ns" 0 "us" 0 "ms" 1 "msec" 1 "s" 1000 "sec" 1000 "secs" 1000 "second" 1000 "seconds" 1000 "m" 60000 "min" 60000 "mins" 60000 "minute" 60000 "minutes" 60000 "h" 3600000 "hr" 3600000 "hrs" 3600000 "hour" 3600000 "hours" 3600000 "d" 86400000 "day" 86400000 "days" 86400000 }}
{{- if not (regexMatch "^([0-9]+[a-z]+)+$" $text) }}
{{- fail (printf "%s: %q is not a duration like 20s, 1m30s or 500ms" $name $text) }}
{{- end }}
{{- $ms := 0 }}
{{- range $part := regexFindAll "[0-9]+[a-z]+" $text -1 }}
{{- $unit := regexReplaceAll "^[0-9]+" $part "" }}
{{- if not (hasKey $units $unit) }}
{{- fail (printf "%s: unknown unit %q in %q" $name $unit $text) }}
{{- end }}
{{- $ms = add $ms (mul (atoi (regexFind "^[0-9]+" $part)) (index $units $unit)) }}
{{- end }}
{{- div (add $ms 999) 1000 }}
{{- end }}

{{/* -------------------------------------------------------------- config */}}

{{/*
The settings map of one component: `config`, then `downloadConfig` for the
importer and fetcher (for the saver, its network guard alone:
SLUICE_DENY_NETWORKS and SLUICE_ALLOW_NETWORKS, which guard the webhook
POSTs), then `<component>.config` (a service or "console").
Takes (list $ component);
the setup Job passes "setup" and gets `config` alone. Rejects keys that are
not sluice settings and those that carry secrets or that the chart sets.
*/}}
{{- define "sluice.settings" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $layers := list ($root.Values.config | default dict) }}
{{- if has $component (list "importer" "fetcher") }}
{{- $layers = append $layers ($root.Values.downloadConfig | default dict) }}
{{- else if eq $component "saver" }}
{{- $layers = append $layers (pick ($root.Values.downloadConfig | default dict) "SLUICE_DENY_NETWORKS" "SLUICE_ALLOW_NETWORKS") }}
{{- end }}
{{- if ne $component "setup" }}
{{- $layers = append $layers ((index $root.Values $component).config | default dict) }}
{{- end }}
{{- $merged := dict }}
{{- range $layer := $layers }}
{{- range $key, $value := $layer }}
{{- $_ := set $merged $key $value }}
{{- end }}
{{- end }}
{{- $reserved := list "SLUICE_METRICS_ADDR" "SLUICE_NATS_USER" "SLUICE_NATS_PASSWORD" "SLUICE_NATS_TOKEN" "SLUICE_NATS_CREDS" "SLUICE_NATS_NKEY" "SLUICE_NATS_TLS_CA" "SLUICE_NATS_TLS_CERT" "SLUICE_NATS_TLS_KEY" "SLUICE_CONSOLE_ADDR" "SLUICE_CONSOLE_TOKEN" "SLUICE_CONSOLE_AUTH_HEADER" "SLUICE_WEBHOOKS" }}
{{- range $key, $value := $merged }}
{{- if not (regexMatch "^(SLUICE_[A-Z0-9_]+|RUST_LOG)$" $key) }}
{{- fail (printf "config key %q: settings are SLUICE_* variables or RUST_LOG (NATS_URL is nats.url, DATABASE_URL is database.*, OTEL_* is otel.*)" $key) }}
{{- end }}
{{- if has $key $reserved }}
{{- fail (printf "config key %q is set by the chart: use metrics.port, nats.auth, nats.tls, console.* or webhooks.*" $key) }}
{{- end }}
{{- end }}
{{- toYaml $merged }}
{{- end }}

{{/* terminationGracePeriodSeconds of a component, checked against its shutdown timeout. */}}
{{- define "sluice.gracePeriod" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $settings := include "sluice.settings" . | fromYaml }}
{{- $timeout := index $settings "SLUICE_SHUTDOWN_TIMEOUT" | default "20s" }}
{{- $seconds := include "sluice.durationSeconds" (list $timeout (printf "SLUICE_SHUTDOWN_TIMEOUT of %s" $component)) | atoi }}
{{- $explicit := (index $root.Values $component).terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $explicit }}
{{- add $seconds (int $root.Values.shutdownGraceMarginSeconds) }}
{{- else if le (int $explicit) $seconds }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must exceed its SLUICE_SHUTDOWN_TIMEOUT (%s = %ds), or Kubernetes kills pods while they drain" $component (int $explicit) $timeout $seconds) }}
{{- else }}
{{- int $explicit }}
{{- end }}
{{- end }}

{{/* ------------------------------------------------------------ env, volumes */}}

{{/* A setting as env text: whole numbers without exponent (1000000, not 1e+06). */}}
{{- define "sluice.scalar" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- printf "%d" (int64 .) }}
{{- else }}
{{- toString . }}
{{- end }}
{{- end }}

{{/*
NATS_URL: nats.url, refused when any of its comma-separated URLs carries
userinfo (user:password@ or token@): env values are plain text in the pod
spec, so credentials belong in nats.auth (a Secret). The message does not
repeat the URL, which would print the secret.
*/}}
{{- define "sluice.natsUrl" -}}
{{- $url := required "nats.url is required" .Values.nats.url }}
{{- range $part := splitList "," $url }}
{{- $authority := regexReplaceAll "^[A-Za-z][A-Za-z0-9+.-]*://" (trim $part) "" | regexFind "^[^/?#]*" }}
{{- if contains "@" $authority }}
{{- fail "nats.url: no user, password or token in the URL (user:password@host, token@host): give credentials in nats.auth, which the chart keeps in a Secret" }}
{{- end }}
{{- end }}
{{- $url }}
{{- end }}

{{/*
"true" when an env variable of that name holds a secret, so extraEnv must
take it from a Secret (valueFrom), never as `value`. SLUICE_NATS_CREDS and
SLUICE_NATS_NKEY name files, not secrets, and are not listed; SLUICE_WEBHOOKS
is, since it may be the JSON itself, secrets and all (the chart sets it to
the file of the `webhooks` Secret).
*/}}
{{- define "sluice.secretEnvName" -}}
{{- $names := list "DATABASE_URL" "NATS_URL" "OTEL_EXPORTER_OTLP_HEADERS" "SLUICE_NATS_USER" "SLUICE_NATS_PASSWORD" "SLUICE_NATS_TOKEN" "SLUICE_WEBHOOKS" }}
{{- if or (has . $names) (regexMatch "_(PASSWORD|TOKEN|SECRET)$" .) (regexMatch "^OTEL_EXPORTER_OTLP_[A-Z]+_HEADERS$" .) }}
{{- print "true" }}
{{- end }}
{{- end }}

{{/*
Environment of a container. Takes (list $ component); component "setup" is
the hook Job (no metrics endpoint; the database unless setup.database is false),
"console" the operator console (NATS only, never the database).
*/}}
{{- define "sluice.env" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $values := $root.Values -}}
- name: NATS_URL
  value: {{ include "sluice.natsUrl" $root | quote }}
{{- range $key, $value := include "sluice.settings" . | fromYaml }}
{{- if not (or (kindIs "invalid" $value) (eq (toString $value) "")) }}
- name: {{ $key }}
  value: {{ include "sluice.scalar" $value | quote }}
{{- end }}
{{- end }}
{{- if ne $component "setup" }}
- name: SLUICE_METRICS_ADDR
  value: {{ printf "0.0.0.0:%d" (int $values.metrics.port) | quote }}
{{- end }}
{{- if eq $component "console" }}
- name: SLUICE_CONSOLE_ADDR
  value: {{ printf "0.0.0.0:%d" (int $values.console.service.port) | quote }}
{{- with include "sluice.consoleToken" $root | fromYaml }}
- name: SLUICE_CONSOLE_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "sluice.consoleSecretName" $root }}
      key: {{ .key }}
{{- end }}
{{- with $values.console.authHeader }}
- name: SLUICE_CONSOLE_AUTH_HEADER
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- if or (eq $component "saver") (and (eq $component "setup") $values.setup.database) }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "sluice.databaseSecretName" $root }}
      key: {{ include "sluice.databaseSecretKey" $root }}
{{- end }}
{{- $auth := include "sluice.natsAuthKeys" $root | fromYaml }}
{{- range $item, $env := dict "user" "SLUICE_NATS_USER" "password" "SLUICE_NATS_PASSWORD" "token" "SLUICE_NATS_TOKEN" }}
{{- if hasKey $auth $item }}
- name: {{ $env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "sluice.natsAuthSecretName" $root }}
      key: {{ index $auth $item }}
{{- end }}
{{- end }}
{{- if hasKey $auth "creds" }}
- name: SLUICE_NATS_CREDS
  value: /etc/sluice/nats-auth/nats.creds
{{- end }}
{{- if and $values.downloadCredentials.existingSecret (has $component (list "importer" "fetcher")) }}
- name: SLUICE_DOWNLOAD_CREDENTIALS
  value: /etc/sluice/download-credentials/credentials.json
{{- end }}
{{- if and ($values.webhooks | default dict).existingSecret (has $component (list "importer" "saver")) }}
- name: SLUICE_WEBHOOKS
  value: /etc/sluice/webhooks/webhooks.json
{{- end }}
{{- if hasKey $auth "nkey" }}
- name: SLUICE_NATS_NKEY
  value: /etc/sluice/nats-auth/nkey.seed
{{- end }}
{{- $tls := include "sluice.natsTlsKeys" $root | fromYaml }}
{{- range $item, $env := dict "ca" "SLUICE_NATS_TLS_CA" "cert" "SLUICE_NATS_TLS_CERT" "key" "SLUICE_NATS_TLS_KEY" }}
{{- if hasKey $tls $item }}
- name: {{ $env }}
  value: {{ printf "/etc/sluice/nats-tls/%s" (index (dict "ca" "ca.crt" "cert" "tls.crt" "key" "tls.key") $item) }}
{{- end }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- with $values.otel.endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- with ($values.otel.headers | default dict) }}
{{- if .existingSecret }}
{{- if not $values.otel.endpoint }}
{{- fail "otel.headers.existingSecret: set otel.endpoint too (the headers go with the traces sent there)" }}
{{- end }}
- name: OTEL_EXPORTER_OTLP_HEADERS
  valueFrom:
    secretKeyRef:
      name: {{ .existingSecret }}
      key: {{ .existingSecretKey | default "OTEL_EXPORTER_OTLP_HEADERS" }}
{{- end }}
{{- end }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "%s-%s" ($values.otel.serviceNamePrefix | default "sluice") $component | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: {{ list "service.namespace=sluice" (printf "service.version=%s" $root.Chart.AppVersion) "k8s.namespace.name=$(POD_NAMESPACE)" "k8s.pod.name=$(POD_NAME)" (printf "k8s.%s.name=%s" (eq $component "setup" | ternary "job" "deployment") (include "sluice.componentName" (list $root $component))) $values.otel.resourceAttributes | compact | join "," | quote }}
{{- $extra := concat ($values.extraEnv | default list) (ne $component "setup" | ternary ((index $values $component).extraEnv | default list) list) }}
{{- range $extra }}
{{- if and (hasKey . "value") (include "sluice.secretEnvName" .name) }}
{{- fail (printf "extraEnv %s: secrets come from Secrets (valueFrom.secretKeyRef, database.*, nats.auth.*, otel.headers.*), never as a plain value" .name) }}
{{- end }}
{{- end }}
{{- with $extra }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Secret volumes (NATS creds/nkey files, TLS material, download credentials, webhooks). Takes (list $ component). */}}
{{- define "sluice.volumes" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- with $root }}
{{- $auth := include "sluice.natsAuthKeys" . | fromYaml }}
{{- if or (hasKey $auth "creds") (hasKey $auth "nkey") }}
- name: nats-auth
  secret:
    secretName: {{ include "sluice.natsAuthSecretName" . }}
    defaultMode: 0440
    items:
      {{- if hasKey $auth "creds" }}
      - key: {{ $auth.creds }}
        path: nats.creds
      {{- end }}
      {{- if hasKey $auth "nkey" }}
      - key: {{ $auth.nkey }}
        path: nkey.seed
      {{- end }}
{{- end }}
{{- $tls := include "sluice.natsTlsKeys" . | fromYaml }}
{{- if $tls }}
- name: nats-tls
  secret:
    secretName: {{ include "sluice.natsTlsSecretName" . }}
    defaultMode: 0440
    items:
      {{- range $item, $path := dict "ca" "ca.crt" "cert" "tls.crt" "key" "tls.key" }}
      {{- if hasKey $tls $item }}
      - key: {{ index $tls $item }}
        path: {{ $path }}
      {{- end }}
      {{- end }}
{{- end }}
{{- if and .Values.downloadCredentials.existingSecret (has $component (list "importer" "fetcher")) }}
- name: download-credentials
  secret:
    secretName: {{ .Values.downloadCredentials.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.downloadCredentials.existingSecretKey }}
        path: credentials.json
{{- end }}
{{- if and (.Values.webhooks | default dict).existingSecret (has $component (list "importer" "saver")) }}
- name: webhooks
  secret:
    secretName: {{ .Values.webhooks.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.webhooks.existingSecretKey }}
        path: webhooks.json
{{- end }}
{{- end }}
{{- end }}

{{- define "sluice.volumeMounts" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- with $root }}
{{- $auth := include "sluice.natsAuthKeys" . | fromYaml }}
{{- if or (hasKey $auth "creds") (hasKey $auth "nkey") }}
- name: nats-auth
  mountPath: /etc/sluice/nats-auth
  readOnly: true
{{- end }}
{{- if include "sluice.natsTlsKeys" . | fromYaml }}
- name: nats-tls
  mountPath: /etc/sluice/nats-tls
  readOnly: true
{{- end }}
{{- if and .Values.downloadCredentials.existingSecret (has $component (list "importer" "fetcher")) }}
- name: download-credentials
  mountPath: /etc/sluice/download-credentials
  readOnly: true
{{- end }}
{{- if and (.Values.webhooks | default dict).existingSecret (has $component (list "importer" "saver")) }}
- name: webhooks
  mountPath: /etc/sluice/webhooks
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/*
A checksum of the Secrets this chart creates, on the pod template: changing a
password or URL in values rolls the pods.
*/}}
{{- define "sluice.secretsChecksum" -}}
{{- $parts := list }}
{{- if not .Values.database.existingSecret }}{{- $parts = append $parts .Values.database.url }}{{- end }}
{{- if not .Values.nats.auth.existingSecret }}{{- $parts = append $parts (toJson (omit .Values.nats.auth "existingSecret" "existingSecretKeys")) }}{{- end }}
{{- if not .Values.nats.tls.existingSecret }}{{- $parts = append $parts (toJson (pick .Values.nats.tls "ca" "cert" "key")) }}{{- end }}
{{- join "\n" $parts | sha256sum }}
{{- end }}

{{/* Pod-level fields shared by the Deployments and the setup Job. Takes (list $ component). */}}
{{- define "sluice.podCommon" -}}
{{- $root := index . 0 }}
{{- $component := index . 1 }}
{{- $values := $root.Values }}
{{- $own := ne $component "setup" | ternary (index $values $component) dict -}}
automountServiceAccountToken: false
{{- with $values.serviceAccountName }}
serviceAccountName: {{ . }}
{{- end }}
{{- with $values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
securityContext:
  {{- toYaml $values.podSecurityContext | nindent 2 }}
{{- with ($own.nodeSelector | default $values.nodeSelector) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($own.tolerations | default $values.tolerations) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with ($own.affinity | default $values.affinity) }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The TCP port of otel.endpoint, for the NetworkPolicy: the URL's own, else
443 for https and 80 for http.
*/}}
{{- define "sluice.otelPort" -}}
{{- $url := .Values.otel.endpoint }}
{{- $authority := regexReplaceAll "^[A-Za-z][A-Za-z0-9+.-]*://" $url "" | regexFind "^[^/?#]*" }}
{{- $hostport := regexReplaceAll "^.*@" $authority "" }}
{{- $port := regexFind ":[0-9]+$" $hostport | trimPrefix ":" }}
{{- if $port }}
{{- $port }}
{{- else if hasPrefix "https://" (lower $url) }}
{{- print "443" }}
{{- else }}
{{- print "80" }}
{{- end }}
{{- end }}
