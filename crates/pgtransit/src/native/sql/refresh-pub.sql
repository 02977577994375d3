-- Statements that add to the publication :'pub' the selected tables created on the source
-- since it was made (same rules as create-pub).
WITH sel AS (
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence, c.relispartition,
           EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                   AND d.objid = c.oid AND d.deptype = 'e') AS extension_member
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' AND (:selected)
), candidates AS (
    SELECT * FROM sel s
    WHERE s.relpersistence = 'p' AND NOT s.extension_member
      AND NOT (s.relispartition AND EXISTS (SELECT 1 FROM sel r WHERE r.oid = pg_partition_root(s.oid)))
      AND (s.relkind <> 'p' OR current_setting('server_version_num')::int >= 130000)
    UNION
    -- Before 13: the leaves of partitioned tables (see create-pub.sql).
    SELECT c.oid, n.nspname, c.relname, c.relkind, c.relpersistence, c.relispartition, false
    FROM sel r, pg_partition_tree(r.oid) t
    JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE current_setting('server_version_num')::int < 130000
      AND r.relkind = 'p' AND t.isleaf AND c.relpersistence = 'p'
), missing AS (
    SELECT * FROM candidates s
    WHERE NOT EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                      WHERE p.pubname = :'pub' AND pr.prrelid = s.oid)
)
SELECT format('ALTER PUBLICATION %I ADD TABLE %s;', :'pub',
              string_agg(format('%I.%I', nspname, relname), ', ' ORDER BY nspname, relname))
FROM missing HAVING count(*) > 0
