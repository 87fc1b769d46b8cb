#!/bin/bash
# The compose broker's health check: an authenticated ApiVersions round trip, as admin.
# The client login is written for this check only (mode 0600, inside the container).
set -euo pipefail
umask 077
login=/tmp/gremio-healthcheck.properties
printf '%s\n' \
  'security.protocol=SASL_PLAINTEXT' \
  'sasl.mechanism=SCRAM-SHA-512' \
  "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username=\"admin\" password=\"$KAFKA_ADMIN_PASSWORD\";" \
  >"$login"
exec /opt/kafka/bin/kafka-broker-api-versions.sh --bootstrap-server localhost:19092 --command-config "$login" >/dev/null
