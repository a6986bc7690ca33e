-- pgcast 001: schema, outbox, leader epoch, and pgcast.publish().
-- Plain, idempotent SQL: safe to re-run, and to paste into any migration tool.
-- Wake-ups: pg_notify('pgcast', '') with a constant payload, so every NOTIFY in
-- one transaction collapses into a single notification at commit.
-- Poll mode (no NOTIFY at all): ALTER DATABASE <db> SET pgcast.notify = 'off'
-- (new sessions pick it up), and run the listener with PGCAST_NOTIFY_MODE=poll.

CREATE SCHEMA IF NOT EXISTS pgcast;

CREATE TABLE IF NOT EXISTS pgcast.outbox (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel    text        NOT NULL,
    data       jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Rows are deleted once published: keep autovacuum eager on this hot, small table.
ALTER TABLE pgcast.outbox SET (
    autovacuum_vacuum_scale_factor = 0.0,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_cost_delay = 0
);

-- One row: the leader epoch, incremented by each listener that wins the advisory
-- lock. The Redis publish script refuses publishes from an older epoch (fencing).
CREATE TABLE IF NOT EXISTS pgcast.leader (
    singleton   boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    epoch       bigint      NOT NULL DEFAULT 0,
    holder      text,
    acquired_at timestamptz
);
INSERT INTO pgcast.leader (singleton, epoch) VALUES (true, 0) ON CONFLICT DO NOTHING;

-- Whether this session's writes send the NOTIFY wake-up ('off' = poll mode).
CREATE OR REPLACE FUNCTION pgcast.wake_listener() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF coalesce(current_setting('pgcast.notify', true), '') NOT IN ('off', 'false', '0') THEN
        PERFORM pg_notify('pgcast', '');
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgcast.publish(channel text, data jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO pgcast.outbox (channel, data)
    VALUES (channel, coalesce(data, 'null'::jsonb))
    RETURNING id INTO new_id;
    PERFORM pgcast.wake_listener();
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION pgcast.publish(text, jsonb) IS
    'Publish data to a pgcast channel once the current transaction commits; returns the outbox id.';
