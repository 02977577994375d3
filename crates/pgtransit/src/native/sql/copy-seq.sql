-- Statements that set every moved sequence on the target to the source's value moved :shift
-- further in the sequence's own direction (down for descending ones), within its bounds.
-- A sequence never used on the source is reset to unused on the target.
SELECT stmt FROM (
    SELECT 0 AS ord, '' AS k, 'BEGIN;' AS stmt
    UNION ALL
    SELECT 1, name, CASE WHEN last_value IS NULL
               THEN format('SELECT setval(%L, %s, false);  -- never used', name, start_value)
               ELSE format('SELECT setval(%L, %s, true);  -- source %s', name,
                           greatest(min_value::numeric, least(max_value::numeric,
                               last_value::numeric + (:shift)::numeric * sign(increment_by))), last_value)
          END
    FROM (
        SELECT format('%I.%I', s.schemaname, s.sequencename) AS name, s.*
        FROM pg_sequences s
        JOIN pg_namespace n ON n.nspname = s.schemaname
        JOIN pg_class q ON q.relname = s.sequencename AND q.relnamespace = n.oid
        LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = q.oid
                             AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
        LEFT JOIN pg_class c ON c.oid = d.refobjid
        WHERE CASE WHEN c.oid IS NULL THEN (:selected_schema)
                   ELSE (SELECT (:selected) FROM pg_namespace n WHERE n.oid = c.relnamespace) END
    ) seqs
    UNION ALL
    SELECT 2, '', 'COMMIT;'
) s
ORDER BY ord, k
