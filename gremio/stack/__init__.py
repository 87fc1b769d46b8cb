"""The local stack: Kafka, PostgreSQL, Airflow and gremio's services on one machine."""
