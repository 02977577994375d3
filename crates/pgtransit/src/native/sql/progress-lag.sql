-- The slot :'slot' (run on the source): apply lag in bytes (the source's WAL insert
-- position, which covers every committed transaction even with synchronous_commit off,
-- against what the subscriber confirmed) and in time (the walsender's replay lag).
SELECT s.active, pg_current_wal_insert_lsn()::text AS current_lsn, s.confirmed_flush_lsn::text AS confirmed_lsn,
       pg_wal_lsn_diff(pg_current_wal_insert_lsn(), s.confirmed_flush_lsn)::bigint AS lag_bytes,
       extract(epoch FROM r.replay_lag)::float8 AS lag_seconds
FROM pg_replication_slots s LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
WHERE s.slot_name = :'slot'
