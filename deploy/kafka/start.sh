#!/bin/bash
# The compose broker's entrypoint (docker-compose.yaml, service kafka; apache/kafka image).
# Formats the storage once, with admin's SCRAM-SHA-512 credential from KAFKA_ADMIN_PASSWORD
# (a broker cannot log in to itself before that user exists), then runs the broker with
# deploy/kafka/server.properties. Later starts keep the storage, and the credential, as they are:
# to change admin's password see docs/OPERATIONS.md, "Kafka principals and ACLs".
#
# As one node of the three-node cluster (docker-compose.cluster.yaml), KAFKA_NODE_ID,
# KAFKA_INITIAL_CONTROLLERS (id@host:port:directory-id of every voter) and KAFKA_CLUSTER_ID (the
# same on every node) are set: the node gets its own id and advertised name, the three-voter
# dynamic quorum (KIP-853) formatted with --initial-controllers, three replicas of every topic
# with min.insync.replicas=2, and no unclean leader election: the same as `make up-cluster`'s
# nodes (gremio/stack/kafka_broker.py), which run on this machine and are drilled there.
set -euo pipefail
: "${KAFKA_ADMIN_PASSWORD:?KAFKA_ADMIN_PASSWORD is not set: run make secrets (gremio secrets)}"
config=/etc/gremio/kafka/server.properties
bin=/opt/kafka/bin
format=(--standalone --cluster-id="$("$bin/kafka-storage.sh" random-uuid)")
if [ -n "${KAFKA_NODE_ID:-}" ]; then
  : "${KAFKA_INITIAL_CONTROLLERS:?a cluster node needs KAFKA_INITIAL_CONTROLLERS}"
  : "${KAFKA_CLUSTER_ID:?a cluster node needs KAFKA_CLUSTER_ID, the same on every node}"
  host=${KAFKA_ADVERTISED_HOST:-$(hostname)}
  node=/tmp/server.properties
  # Every voter's controller listener, from id@host:port:directory-id,...
  quorum=$(tr ',' '\n' <<<"$KAFKA_INITIAL_CONTROLLERS" | sed -E 's/^[0-9]+@([^:]+:[0-9]+):.*$/\1/' | paste -sd,)
  # Java properties: a later line wins, so the node's own values are appended.
  cp "$config" "$node"
  cat >> "$node" <<PROPS
node.id=$KAFKA_NODE_ID
controller.quorum.bootstrap.servers=$quorum
listeners=SASL_PLAINTEXT://:19092,CONTROLLER://:9093
advertised.listeners=SASL_PLAINTEXT://$host:19092
default.replication.factor=3
min.insync.replicas=2
unclean.leader.election.enable=false
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
PROPS
  config=$node
  format=(--cluster-id="$KAFKA_CLUSTER_ID" --initial-controllers="$KAFKA_INITIAL_CONTROLLERS")
fi
# `--cluster-id=`: an id starting with "-" would read as an option otherwise.
"$bin/kafka-storage.sh" format --ignore-formatted "${format[@]}" -c "$config" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=\"$KAFKA_ADMIN_PASSWORD\"]" >/dev/null
exec "$bin/kafka-server-start.sh" "$config"
