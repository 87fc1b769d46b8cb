#!/bin/bash
# The compose broker's entrypoint (docker-compose.yaml, service kafka; apache/kafka image).
# Formats the storage once, with admin's SCRAM-SHA-512 credential from KAFKA_ADMIN_PASSWORD
# (a broker cannot log in to itself before that user exists), then runs the broker with
# deploy/kafka/server.properties. Later starts keep the storage, and the credential, as they are:
# to change admin's password see docs/OPERATIONS.md, "Kafka principals and ACLs".
set -euo pipefail
: "${KAFKA_ADMIN_PASSWORD:?KAFKA_ADMIN_PASSWORD is not set: run make secrets (gremio secrets)}"
config=/etc/gremio/kafka/server.properties
bin=/opt/kafka/bin
# `--cluster-id=`: an id starting with "-" would read as an option otherwise.
"$bin/kafka-storage.sh" format --standalone --ignore-formatted \
  --cluster-id="$("$bin/kafka-storage.sh" random-uuid)" -c "$config" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=\"$KAFKA_ADMIN_PASSWORD\"]" >/dev/null
exec "$bin/kafka-server-start.sh" "$config"
