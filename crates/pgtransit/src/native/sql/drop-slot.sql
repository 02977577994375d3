-- Drop, on the source, the task's slot and the table-sync slots of its subscription
-- (pg_<suboid>_sync_<relid>_<sysid>, left behind when a copy was still running), waiting
-- for their walsenders to exit.
SELECT set_config('pgtransit.slot', :'slot', false), set_config('pgtransit.suboid', :'suboid', false);
DO $$
DECLARE
    s record;
BEGIN
    FOR i IN 1..100 LOOP
        PERFORM pg_terminate_backend(active_pid) FROM pg_replication_slots
         WHERE active_pid IS NOT NULL
           AND (slot_name = current_setting('pgtransit.slot')
                OR slot_name LIKE 'pg\_' || current_setting('pgtransit.suboid') || '\_sync\_%');
        EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE active
           AND (slot_name = current_setting('pgtransit.slot')
                OR slot_name LIKE 'pg\_' || current_setting('pgtransit.suboid') || '\_sync\_%'));
        PERFORM pg_sleep(0.1);
    END LOOP;
    FOR s IN SELECT slot_name FROM pg_replication_slots
              WHERE slot_name = current_setting('pgtransit.slot')
                 OR slot_name LIKE 'pg\_' || current_setting('pgtransit.suboid') || '\_sync\_%' LOOP
        PERFORM pg_drop_replication_slot(s.slot_name);
        RAISE NOTICE 'dropped replication slot %', s.slot_name;
    END LOOP;
END
$$;
