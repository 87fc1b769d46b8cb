-- `gremio deadletter replay`: record replays the broker acknowledged; a replay `--again`
-- counts up and moves replayed_at. Parameters, one replay per index: topics text[],
-- partitions int[], offsets bigint[], record_ids text[], dl_partitions int[], dl_offsets bigint[],
-- to_partitions int[], to_offsets bigint[].
insert into deadletter_replays as r (
    source_topic, source_partition, source_offset, record_id, deadletter_partition, deadletter_offset,
    replayed_partition, replayed_offset
)
select *
from unnest(
    %(topics)s::text[], %(partitions)s::integer[], %(offsets)s::bigint[], %(record_ids)s::text[],
    %(dl_partitions)s::integer[], %(dl_offsets)s::bigint[], %(to_partitions)s::integer[],
    %(to_offsets)s::bigint[]
)
on conflict (source_topic, source_partition, source_offset) do update set
    record_id = excluded.record_id,
    deadletter_partition = excluded.deadletter_partition,
    deadletter_offset = excluded.deadletter_offset,
    replayed_partition = excluded.replayed_partition,
    replayed_offset = excluded.replayed_offset,
    replays = r.replays + 1,
    replayed_at = now()
