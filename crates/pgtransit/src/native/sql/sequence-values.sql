-- Every sequence this task moves, with its last value (NULL when never used) and direction:
-- sequences owned by a selected table (serial and identity columns) and free-standing
-- sequences in a selected schema. Read from pg_sequences, never currval().
SELECT format('%I.%I', s.schemaname, s.sequencename) AS name, s.last_value, s.increment_by > 0 AS ascending
FROM pg_sequences s
JOIN pg_namespace n ON n.nspname = s.schemaname
JOIN pg_class q ON q.relname = s.sequencename AND q.relnamespace = n.oid
LEFT JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = q.oid
                     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
LEFT JOIN pg_class c ON c.oid = d.refobjid
WHERE CASE WHEN c.oid IS NULL THEN (:selected_schema)
           ELSE (SELECT (:selected) FROM pg_namespace n WHERE n.oid = c.relnamespace) END
ORDER BY 1
