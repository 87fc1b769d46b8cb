#!/usr/bin/env bash
# docker-compose only: Airflow's metadata database beside gremio's, on first start.
# The password comes from the container's environment (AIRFLOW_DB_PASSWORD, which compose
# requires) as a psql variable, quoted by psql (:'...'): it is never part of this file or of
# the SQL text the shell builds.
set -euo pipefail
: "${AIRFLOW_DB_PASSWORD:?run make secrets}"
psql -v ON_ERROR_STOP=1 -v airflow_password="$AIRFLOW_DB_PASSWORD" \
  --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" <<'SQL'
create role airflow login password :'airflow_password';
create database airflow owner airflow;
SQL
