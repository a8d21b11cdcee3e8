-- The bus an outbox row is for: the writing process's DOCPIPE_BUS_PREFIX, which every service
-- connection carries as the setting docpipe.bus_prefix (shared/db.py create_pool). A relay
-- publishes only its own bus's rows, so deployments (or test stacks) that share a database
-- on different buses never publish each other's messages. Rows written before this column,
-- and by a connection without the setting, are NULL: any relay may publish them.
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS bus_prefix text
    DEFAULT current_setting('docpipe.bus_prefix', true);
