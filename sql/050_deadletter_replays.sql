-- Dead-letter replays (`gremio deadletter replay`, docs/OPERATIONS.md). Safe to run twice.

-- One row per source record sent back to its topic. The key is where the record came from:
-- a record that several consumers dead-lettered (sales is read by two) is one replay, and
-- a second replay needs `--again`. Rows are written after the broker acknowledged the
-- replay; a crash in between means a second replay of the same record id, which the
-- consumers skip (they are idempotent by id).
create table if not exists deadletter_replays (
    source_topic text not null,
    source_partition integer not null,
    source_offset bigint not null,
    record_id text,
    deadletter_partition integer not null,
    deadletter_offset bigint not null,
    replayed_partition integer not null,
    replayed_offset bigint not null,
    replays integer not null default 1,
    replayed_at timestamptz not null default now(),
    primary key (source_topic, source_partition, source_offset)
);

create index if not exists deadletter_replays_record_id on deadletter_replays (record_id);
