-- pgcast 001: schema, outbox, leader epoch, the wake-up protocol, and pgcast.publish().
-- Plain, idempotent SQL: safe to re-run, and to paste into any migration tool.
-- Wake-ups: pg_notify('pgcast', '') with a constant payload, so every NOTIFY in
-- one transaction collapses into a single notification at commit. A NOTIFYing
-- commit holds a database-wide lock through its WAL flush, so writers skip the
-- NOTIFY whenever no listener sleeps (see pgcast.wake_listener below).
-- Per session / role / database: SET pgcast.notify = 'auto' (default) | 'on'
-- (always NOTIFY) | 'off' (never; only with a poll-mode listener).

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

-- The wake-up protocol ('auto'), race-free with ONE advisory lock, W = (1885824887, 1)
-- ('pgcw' in ASCII; a two-int key, so no bigint lock such as PGCAST_LOCK_KEY collides):
-- * the leader listener holds W exclusively (a session lock) while it sleeps, that
--   is while it waits for a NOTIFY; awake (draining, polling every few ms) it does not;
-- * a writer try-locks W shared until the end of its transaction: granted means no
--   listener sleeps, and none can fall asleep before this transaction ends, so the
--   NOTIFY (and its commit-time global lock) is skipped; refused means the listener
--   sleeps: NOTIFY. Writers never wait, and never block each other (shared mode);
-- * the listener falls asleep with pg_try_advisory_lock(W), which only succeeds once
--   no skipping writer is in flight, and then drains once more; it wakes with
--   pg_advisory_unlock(W). A dead listener's lock dies with its session: writers skip
--   the NOTIFY, and the next leader starts awake and catches up.
-- wake_needed() decides, wake_listener() acts on it. PL/pgSQL callers write
--   IF pgcast.wake_needed() THEN PERFORM pg_notify('pgcast', ''); END IF;
-- as an IF condition it is a "simple expression", evaluated in place, where PERFORM runs a
-- whole query through the executor. SQL, not PL/pgSQL, so that callers inline it. PL/pgSQL
-- prepares every expression again in each transaction, about 1.5k instructions per function
-- it names, so the common case (pgcast.notify never SET) names two; a session, role or
-- database that sets it pays one PL/pgSQL call. Measured with callgrind, per one-row INSERT
-- transaction under pgcast.watch's trigger: 186k instructions with PERFORM, 175k with the
-- one-CASE form, 167k without any wake-up.
CREATE OR REPLACE FUNCTION pgcast.wake_needed_by_setting() RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    mode text := coalesce(current_setting('pgcast.notify', true), '');
BEGIN
    IF mode IN ('', 'auto') THEN
        RETURN NOT pg_try_advisory_xact_lock_shared(1885824887, 1);
    END IF;
    -- 'on', and any other value: NOTIFY rather than risk a missed wake-up
    RETURN mode NOT IN ('off', 'false', '0');
END
$$;

CREATE OR REPLACE FUNCTION pgcast.wake_needed() RETURNS boolean
LANGUAGE sql VOLATILE AS $$
SELECT CASE WHEN current_setting('pgcast.notify', true) IS NULL  -- never SET: auto
    THEN NOT pg_try_advisory_xact_lock_shared(1885824887, 1)
    ELSE pgcast.wake_needed_by_setting()
END
$$;

CREATE OR REPLACE FUNCTION pgcast.wake_listener() RETURNS void
LANGUAGE sql VOLATILE AS $$
SELECT CASE WHEN pgcast.wake_needed() THEN pg_notify('pgcast', '') END
$$;

-- The listener's side of the protocol (its own connection, autocommit, never blocking).
CREATE OR REPLACE FUNCTION pgcast.listener_sleep() RETURNS boolean
LANGUAGE sql VOLATILE AS $$ SELECT pg_try_advisory_lock(1885824887, 1) $$;

CREATE OR REPLACE FUNCTION pgcast.listener_wake() RETURNS boolean
LANGUAGE sql VOLATILE AS $$ SELECT pg_advisory_unlock(1885824887, 1) $$;

-- PGCAST_CAPTURE=wal (pgcast.capture, sql/006): a transactional logical message, prefix
-- 'pgcast', content channel || E'\n' || data, that the leader decodes at commit (never
-- after a rollback, any size); no outbox row, no wake-up, and NULL for the id. '\n'
-- separates the two, so no channel may hold one, in either mode (no channel with a control
-- character is ever delivered: the listener drops them). The mode is one primary-key read.
CREATE OR REPLACE FUNCTION pgcast.publish(channel text, data jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    IF (SELECT c.mode FROM pgcast.capture AS c WHERE c.singleton) = 'wal' THEN
        -- '<channel>\n<data>': the listener splits at the last newline (jsonb text has
        -- none), so a channel with one arrives whole and is refused as invalid, as an
        -- outbox row's would be.
        IF channel IS NULL THEN
            RAISE EXCEPTION 'pgcast.publish: channel must not be NULL'
                USING ERRCODE = 'not_null_violation';
        END IF;
        PERFORM pg_logical_emit_message(true, 'pgcast',
                                        channel || E'\n' || coalesce(data, 'null'::jsonb)::text);
        RETURN NULL;
    END IF;
    INSERT INTO pgcast.outbox (channel, data)
    VALUES (channel, coalesce(data, 'null'::jsonb))
    RETURNING id INTO new_id;
    IF pgcast.wake_needed() THEN
        PERFORM pg_notify('pgcast', '');
    END IF;
    RETURN new_id;
END
$$;

COMMENT ON FUNCTION pgcast.publish(text, jsonb) IS
    'Publish data to a pgcast channel once the current transaction commits; returns the outbox id (NULL in wal capture mode, where it writes a logical message instead).';
