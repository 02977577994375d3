-- Per table of the subscription :'sub' (run on the target): the sync state, the target
-- size, the bytes a running initial copy has read so far, and the subscription's errors.
SELECT format('%I.%I', n.nspname, c.relname) AS name,
       CASE sr.srsubstate WHEN 'i' THEN 'init' WHEN 'd' THEN 'copying' WHEN 'f' THEN 'copied'
                          WHEN 's' THEN 'catching-up' WHEN 'r' THEN 'streaming' ELSE sr.srsubstate::text END AS state,
       (SELECT coalesce(sum(pg_table_size(t.relid)), 0) FROM pg_partition_tree(c.oid) t)::bigint AS target_bytes,
       coalesce((SELECT sum(p.bytes_processed) FROM pg_stat_progress_copy p WHERE p.relid = c.oid), 0)::bigint AS copy_bytes
FROM pg_subscription s
JOIN pg_subscription_rel sr ON sr.srsubid = s.oid
JOIN pg_class c ON c.oid = sr.srrelid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE s.subname = :'sub' AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY 1
