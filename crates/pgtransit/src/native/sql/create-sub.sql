-- Statements that create the subscription :'sub' on the target. Options are chosen from the
-- versions of both sides (:src_version is the source's server_version_num):
--  * binary (14+ on both): skipped when a column's type has no binary form, or is an array
--    or composite of a user type (their binary form carries type oids that differ between
--    the clusters);
--  * streaming (14+ on both): large transactions are applied as they arrive;
--  * copy_data false (:copy_data) for a switchover's reverse replication, which starts in the
--    fenced window where both sides are equal;
--  * never disable_on_error: a lost connection (a source restart) counts as an error too and
--    would disable the subscription for good; pgtransit watches the error counters instead
--    and fails the task when errors keep coming.
WITH cols AS (
    SELECT t.typsend, t.typreceive, t.typtype, t.oid AS typoid, t.typelem
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_type t ON t.oid = a.atttypid
    WHERE c.relkind IN ('r', 'p') AND (:selected) AND a.attnum > 0 AND NOT a.attisdropped
), v AS (
    SELECT current_setting('server_version_num')::int AS dst, (:src_version)::int AS src,
           NOT EXISTS (SELECT 1 FROM cols
                       WHERE typsend = 0 OR typreceive = 0
                          OR (typtype = 'c' AND typoid >= 16384)
                          OR (typelem >= 16384)) AS binary_safe
)
SELECT format(E'CREATE SUBSCRIPTION %I\n    CONNECTION %L\n    PUBLICATION %I\n    WITH (slot_name = %L%s%s%s);',
              :'sub', :'sub_conn', :'pub', :'slot',
              CASE WHEN NOT (:copy_data) THEN ', copy_data = false' ELSE '' END,
              CASE WHEN dst >= 140000 AND src >= 140000 AND binary_safe THEN ', binary = true' ELSE '' END,
              CASE WHEN dst >= 140000 AND src >= 140000 THEN ', streaming = on' ELSE '' END)
FROM v
UNION ALL
SELECT format('COMMENT ON SUBSCRIPTION %I IS %L;', :'sub', :'owner_note')
