-- Whether the subscription exists on the target, its oid (the source names its table-sync
-- slots after it) and which task created it.
SELECT s.oid, s.subenabled, coalesce(obj_description(s.oid, 'pg_subscription'), '') AS owner_note
FROM pg_subscription s
WHERE s.subname = :'sub' AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
