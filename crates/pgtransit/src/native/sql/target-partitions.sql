-- On the target: every partition of a partitioned table, one `parent>child` line each
-- (both schema-qualified and quoted), for create-pub.sql's variable target_partitions.
SELECT coalesce(string_agg(format('%I.%I>%I.%I', pn.nspname, p.relname, cn.nspname, c.relname), E'\n'), '')
FROM pg_inherits i
JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
WHERE p.relkind = 'p'
