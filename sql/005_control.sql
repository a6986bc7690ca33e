-- pgcast 005: server-side control from SQL, delivered after commit like an event.
--   SELECT pgcast.disconnect('42', 'account suspended');   -- close every connection of user 42
--   SELECT pgcast.unsubscribe('42', 'orders:*');           -- end user 42's matching subscriptions
-- Each call writes one outbox row whose channel is '[control]' (pgcast.keys.CONTROL_MARKER:
-- never a channel name, '[' is forbidden in those) and whose data is the control,
-- {"op":"disconnect","sub":..,"reason":..} or {"op":"unsubscribe","sub":..,"pattern":..}.
-- The leader appends it to the Redis stream pgcast:control (an entry id Redis assigns, so
-- the stream is in publish order) and publishes it to the gateways, after the events its
-- transaction published before it and before those published after it; controls of
-- concurrent transactions go in commit order. No lock: a call never waits for another
-- transaction. A rolled-back call sends nothing.
-- Same conventions as pgcast.publish: no SECURITY DEFINER, so the caller needs INSERT on
-- pgcast.outbox. Plain, idempotent SQL.

-- Arguments are checked here, so a mistake fails the caller's transaction; the listener
-- checks again (a row INSERTed by hand) and drops what is invalid.
CREATE OR REPLACE FUNCTION pgcast.control_check_sub(fn text, sub text) RETURNS void
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF sub IS NULL OR sub = '' THEN
        RAISE EXCEPTION '%: sub must be a non-empty user id (the token''s "sub" claim)', fn
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF char_length(sub) > 250 THEN
        RAISE EXCEPTION '%: sub is % characters long, at most 250 are allowed',
            fn, char_length(sub)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The control row and its wake-up.
CREATE OR REPLACE FUNCTION pgcast.enqueue_control(control jsonb) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO pgcast.outbox (channel, data)
    VALUES ('[control]', control)
    RETURNING id INTO new_id;
    IF pgcast.wake_needed() THEN
        PERFORM pg_notify('pgcast', '');
    END IF;
    RETURN new_id;
END
$$;

-- reason: the WebSocket close reason the clients see with close code 4003; at most 120
-- bytes of UTF-8 (a close frame holds 123). NULL is taken as '' (no reason).
CREATE OR REPLACE FUNCTION pgcast.disconnect(sub text, reason text DEFAULT '') RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgcast.control_check_sub('pgcast.disconnect', sub);
    reason := coalesce(reason, '');
    IF octet_length(reason) > 120 THEN
        RAISE EXCEPTION 'pgcast.disconnect: reason is % bytes long, at most 120 are allowed',
            octet_length(reason)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'A WebSocket close reason must fit 123 bytes of UTF-8.';
    END IF;
    RETURN pgcast.enqueue_control(
        jsonb_build_object('op', 'disconnect', 'sub', sub, 'reason', reason));
END
$$;

-- pattern: the token's "channels" glob syntax (pgcast/channels.py): '*' any run of
-- characters, '?' exactly one; 1..255 characters, no control character, no '[' or ']'.
CREATE OR REPLACE FUNCTION pgcast.unsubscribe(sub text, pattern text) RETURNS bigint
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgcast.control_check_sub('pgcast.unsubscribe', sub);
    IF pattern IS NULL OR pattern = '' THEN
        RAISE EXCEPTION 'pgcast.unsubscribe: pattern must be a non-empty channel name or glob'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF char_length(pattern) > 255 THEN
        RAISE EXCEPTION 'pgcast.unsubscribe: pattern is % characters long, at most 255 are allowed',
            char_length(pattern)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- C0 controls, DEL, C1 controls, and the brackets that no pattern may hold
    IF pattern ~ '[\x01-\x1f\x7f-\x9f\[\]]' THEN
        RAISE EXCEPTION 'pgcast.unsubscribe: pattern % contains a control character or [ ]',
            quote_literal(pattern)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Patterns use * (any run of characters) and ? (one character).';
    END IF;
    RETURN pgcast.enqueue_control(
        jsonb_build_object('op', 'unsubscribe', 'sub', sub, 'pattern', pattern));
END
$$;

COMMENT ON FUNCTION pgcast.disconnect(text, text) IS
    'Close every connection of user sub on every gateway (close code 4003, this reason) once the current transaction commits; returns the outbox id.';
COMMENT ON FUNCTION pgcast.unsubscribe(text, text) IS
    'End user sub''s subscriptions to channels matching pattern on every gateway once the current transaction commits; returns the outbox id.';
