-- Every leaf table the stream engine copies, largest first: its columns without generated
-- ones, whether binary COPY is safe for all of them, its size in bytes and heap pages, and
-- the table the rows go to on the target (a selected partitioned root when there is one,
-- as with publish_via_partition_root, so the target may partition differently).
WITH sel AS (
    SELECT c.oid
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND c.relpersistence = 'p' AND (:selected)
      AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
), top AS (
    SELECT s.oid FROM sel s
    WHERE NOT EXISTS (SELECT 1 FROM sel r WHERE r.oid = pg_partition_root(s.oid) AND r.oid <> s.oid)
), leaves AS (
    SELECT c.oid, c.oid AS root FROM top JOIN pg_class c ON c.oid = top.oid WHERE c.relkind = 'r'
    UNION ALL
    SELECT t.relid, top.oid FROM top JOIN pg_class c ON c.oid = top.oid, pg_partition_tree(top.oid) t
    WHERE c.relkind = 'p' AND t.isleaf
)
SELECT format('%I.%I', n.nspname, c.relname) AS name,
       (SELECT format('%I.%I', rn.nspname, rc.relname) FROM pg_class rc JOIN pg_namespace rn ON rn.oid = rc.relnamespace
         WHERE rc.oid = l.root) AS target_name,
       (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
         WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = '') AS columns,
       NOT EXISTS (SELECT 1 FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
                   LEFT JOIN pg_type b ON b.oid = t.typbasetype
                   WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''
                     AND (t.typsend = 0 OR t.typreceive = 0
                          OR (t.typtype = 'c' AND t.oid >= 16384) OR t.typelem >= 16384
                          OR b.typelem >= 16384 OR (b.typtype = 'c' AND b.oid >= 16384))) AS binary_safe,
       pg_table_size(c.oid)::bigint AS bytes,
       (pg_relation_size(c.oid) / current_setting('block_size')::int)::bigint AS pages,
       EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND (i.indisprimary OR i.indisreplident)) AS has_key
FROM leaves l JOIN pg_class c ON c.oid = l.oid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
ORDER BY bytes DESC, name
