-- Per published table (run on the source): its size, leaves included.
SELECT format('%I.%I', schemaname, tablename) AS name,
       (SELECT coalesce(sum(pg_table_size(t.relid)), 0) FROM pg_partition_tree(format('%I.%I', schemaname, tablename)::regclass) t)::bigint AS source_bytes
FROM pg_publication_tables WHERE pubname = :'pub'
ORDER BY 1
