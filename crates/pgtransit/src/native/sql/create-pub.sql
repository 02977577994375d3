-- Statements that create the publication :'pub' on the source for the selected tables.
-- Unlogged tables cannot be published and tables an extension fills itself (spatial_ref_sys)
-- must not be: both are left out, each named in a comment. Partitioned tables are published
-- leaf by leaf when the target partitions them the same way (variable target_partitions: the
-- target's `parent>child` pairs from target-partitions.sql): then a TRUNCATE of one
-- partition is replicated, and REPLICA IDENTITY FULL rows are found in their partition.
-- Only when the target partitions differently are they published through their root
-- (publish_via_partition_root), where a partition's TRUNCATE is not replicated (`check`
-- warns). With no table selected the publication is created empty (still valid SQL;
-- `refresh` adds tables later).
WITH sel AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence, c.relispartition,
           EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                   AND d.objid = c.oid AND d.deptype = 'e') AS extension_member
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' AND (:selected)
), pub AS (
    SELECT * FROM sel s
    WHERE s.relpersistence = 'p' AND NOT s.extension_member
      AND NOT (s.relispartition AND EXISTS (SELECT 1 FROM sel r WHERE r.oid = pg_partition_root(s.oid)))
      AND (s.relkind <> 'p' OR current_setting('server_version_num')::int >= 130000)
    UNION
    -- Before 13 a partitioned table cannot be in a publication: its leaves are published
    -- instead (the same changes, under the leaves' names, as a target partitioned the same
    -- way applies them).
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence, c.relispartition, false
    FROM sel r, pg_partition_tree(r.oid) t
    JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE current_setting('server_version_num')::int < 130000
      AND r.relkind = 'p' AND t.isleaf AND c.relpersistence = 'p'
), differs AS (
    -- A partition of a published partitioned table that the target does not have under
    -- the same parent.
    SELECT 1 FROM pub s, pg_partition_tree(s.oid) t
    JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace cn ON cn.oid = c.relnamespace
    JOIN pg_class p ON p.oid = t.parentrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
    WHERE s.relkind = 'p' AND t.parentrelid IS NOT NULL
      AND NOT format('%I.%I>%I.%I', pn.nspname, p.relname, cn.nspname, c.relname)
              = ANY (string_to_array(:'target_partitions', E'\n'))
)
SELECT stmt FROM (
    SELECT 1 AS ord, format('-- left out: %I.%I is unlogged (its changes are not in the WAL); copy it by hand if needed', nspname, relname) AS stmt
    FROM sel WHERE relpersistence = 'u'
    UNION ALL
    SELECT 2, format('-- left out: %I.%I belongs to an extension, which fills it on the target', nspname, relname)
    FROM sel WHERE extension_member AND relpersistence = 'p'
    UNION ALL
    -- TRUNCATE is published from 11 on (check warns for a 10 source).
    SELECT 3, format('CREATE PUBLICATION %I%s WITH (publish = %L%s);',
                     :'pub',
                     CASE WHEN count(*) > 0
                          THEN E'\n    FOR TABLE ' || string_agg(format('%I.%I', nspname, relname), E',\n              ' ORDER BY nspname, relname)
                          ELSE '' END,
                     CASE WHEN current_setting('server_version_num')::int >= 110000
                          THEN 'insert, update, delete, truncate' ELSE 'insert, update, delete' END,
                     CASE WHEN bool_or(relkind = 'p') AND EXISTS (SELECT 1 FROM differs)
                          THEN ', publish_via_partition_root = true' ELSE '' END)
    FROM pub
    UNION ALL
    SELECT 4, format('COMMENT ON PUBLICATION %I IS %L;', :'pub', :'owner_note')
) s
ORDER BY ord, stmt
