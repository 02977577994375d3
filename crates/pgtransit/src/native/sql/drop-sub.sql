-- Statements that drop the subscription :'sub' on the target without reaching the source:
-- disable it, detach it from its slot, drop it. The slot is then dropped on the source by
-- drop-slot.sql (or named for the user when the source cannot be reached).
SELECT stmt FROM (
    SELECT 1 AS ord, format('ALTER SUBSCRIPTION %I DISABLE;', subname) AS stmt FROM pg_subscription s
    WHERE s.subname = :'sub' AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT 2, format('ALTER SUBSCRIPTION %I SET (slot_name = NONE);', subname) FROM pg_subscription s
    WHERE s.subname = :'sub' AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
    UNION ALL
    SELECT 3, format('DROP SUBSCRIPTION %I;', subname) FROM pg_subscription s
    WHERE s.subname = :'sub' AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
) s ORDER BY ord
