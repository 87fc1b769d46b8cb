-- `gremio deadletter replay`: which of these source records were replayed already.
-- Parameters: topics text[], partitions int[], offsets bigint[] (one source record per index).
select r.source_topic, r.source_partition, r.source_offset, r.record_id, r.replays, r.replayed_at
from deadletter_replays as r
join unnest(%(topics)s::text[], %(partitions)s::integer[], %(offsets)s::bigint[])
    as wanted (source_topic, source_partition, source_offset)
    using (source_topic, source_partition, source_offset)
