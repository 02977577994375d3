-- The task's slot on the source, if any.
SELECT slot_name, active, plugin, database FROM pg_replication_slots WHERE slot_name = :'slot'
