-- pgcast 003: pgcast.watch(table, channels, events), a trigger generated for one table.
--   SELECT pgcast.watch('"Article"', '{articles,user:{authorId}}');
--   SELECT pgcast.unwatch('"Article"');
-- The same events as notify_trigger with the same templates (the tests compare them row
-- for row), but the key columns, the template columns and their rendering are resolved
-- once, here, into a PL/pgSQL function pgcast.watch_<table oid>() with no to_jsonb(row),
-- no key cache and no loop: for an INSERT-only trigger with a constant channel its body
-- is one INSERT, the wake-up and RETURN NULL. Re-run watch() after changing the table's
-- primary key or a template column: until then the old code runs (a renamed or dropped
-- column fails the write with Postgres' own 'record "new" has no field' error).
-- watch() records its arguments in pgcast.watched (and, since its first version, in the
-- generated function's comment, from which sql/006 recovers them); in wal capture mode it
-- refuses a table the WAL cannot serve, disables the trigger and publishes the table.
-- Everything user-supplied enters the generated code through format('%I') / format('%L'),
-- and the body through format('%L'), so no dollar-quote tag can collide.

-- A column's value as the text notify_trigger puts in a channel: to_jsonb(row) ->> 'col'.
-- ::text renders these types identically (checked: integers, text, uuid, bool "true",
-- numeric incl. NaN/Infinity); not timestamps ("T"), dates (DateStyle), floats (1e+20),
-- char(n) (padding), json, arrays or domains: those go through to_jsonb.
CREATE OR REPLACE FUNCTION pgcast.watch_value_sql(rowvar text, col text, typ regtype)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT CASE
    WHEN typ IN ('int2', 'int4', 'int8', 'text', 'varchar', 'uuid', 'bool', 'numeric')
        THEN format('%s.%I::text', rowvar, col)
    ELSE format('(to_jsonb(%s.%I) #>> ''{}'')', rowvar, col)
END
$$;

-- A channel template as a SQL text expression over rowvar (NEW or OLD), parsed exactly as
-- pgcast.fill_template does; constant is true when it references no column (never NULL).
CREATE OR REPLACE FUNCTION pgcast.watch_channel_sql(
    rel regclass, template text, rowvar text, OUT expr text, OUT constant boolean)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rest     text := template;
    open_at  int;
    close_at int;
    col      text;
    typ      regtype;
    parts    text[] := '{}';
BEGIN
    IF template IS NULL THEN  -- no templates: the table's name, as notify_trigger
        expr := 'TG_TABLE_NAME::text';
        constant := true;
        RETURN;
    END IF;
    LOOP
        open_at := strpos(rest, '{');
        EXIT WHEN open_at = 0;
        close_at := strpos(substr(rest, open_at + 1), '}');
        EXIT WHEN close_at = 0;  -- an unmatched brace stays literal text
        col := substr(rest, open_at + 1, close_at - 1);
        SELECT a.atttypid INTO typ FROM pg_attribute AS a
        WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'pgcast.watch: table % has no column "%" (template %)',
                rel, col, quote_literal(template)
                USING ERRCODE = 'undefined_column';
        END IF;
        IF open_at > 1 THEN
            parts := parts || format('%L', substr(rest, 1, open_at - 1));
        END IF;
        parts := parts || pgcast.watch_value_sql(rowvar, col, typ);
        rest := substr(rest, open_at + close_at + 1);
    END LOOP;
    constant := cardinality(parts) = 0;
    IF rest <> '' OR constant THEN
        parts := parts || format('%L', rest);
    END IF;
    expr := CASE WHEN cardinality(parts) = 1 AND constant THEN parts[1] || '::text'
                 WHEN cardinality(parts) = 1 THEN parts[1]
                 ELSE '(' || array_to_string(parts, ' || ') || ')' END;
END
$$;

-- The event's data for one operation: {"table", "op", "id"} (+ "changed" on UPDATE),
-- the key columns resolved now: to_jsonb(row) -> col equals jsonb_build_object's value.
CREATE OR REPLACE FUNCTION pgcast.watch_data_sql(rel regclass, op text) RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rowvar text := CASE WHEN op = 'DELETE' THEN 'OLD' ELSE 'NEW' END;
    cols   text[] := (
        SELECT coalesce(array_agg(a.attname::text ORDER BY k.ord), '{}')
        FROM pg_index AS i
        CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = rel AND i.indisprimary);
    id_sql text;
BEGIN
    IF cardinality(cols) = 0 THEN
        id_sql := '''null''::jsonb';
    ELSIF cardinality(cols) = 1 THEN
        id_sql := format('%s.%I', rowvar, cols[1]);
    ELSE
        id_sql := 'jsonb_build_object(' || (
            SELECT string_agg(format('%L, %s.%I', c, rowvar, c), ', ' ORDER BY o)
            FROM unnest(cols) WITH ORDINALITY AS u(c, o)) || ')';
    END IF;
    IF op <> 'UPDATE' THEN
        RETURN format('jsonb_build_object(''table'', TG_TABLE_NAME, ''op'', TG_OP, ''id'', %s)',
                      id_sql);
    END IF;
    -- "changed" over the row as it is at write time, exactly notify_trigger's expression
    -- (to_jsonb(OLD) in an uncorrelated subquery: evaluated once, not once per column).
    RETURN format('jsonb_build_object(''table'', TG_TABLE_NAME, ''op'', TG_OP, ''id'', %s, '
        '''changed'', (SELECT coalesce(jsonb_agg(n.key ORDER BY n.key), ''[]''::jsonb) '
        'FROM jsonb_each(to_jsonb(NEW)) AS n '
        'WHERE n.value IS DISTINCT FROM (SELECT to_jsonb(OLD)) -> n.key))', id_sql);
END
$$;

-- The statements for one operation: the outbox rows in template order, then one wake-up
-- when anything was published.
CREATE OR REPLACE FUNCTION pgcast.watch_op_sql(rel regclass, op text, channels text[])
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    rowvar    text := CASE WHEN op = 'DELETE' THEN 'OLD' ELSE 'NEW' END;
    data_sql  text := pgcast.watch_data_sql(rel, op);
    tmpl      text;
    ch        record;
    prev      record;
    chans     text[] := '{}';
    always    boolean := false;  -- some row is published whatever the values
    body      text;
    -- the wake-up as an IF condition: a simple expression (sql/001_outbox.sql)
    wake      text := E'IF pgcast.wake_needed() THEN\n    PERFORM pg_notify(''pgcast'', '''');\nEND IF;';
BEGIN
    FOREACH tmpl IN ARRAY channels LOOP
        ch := pgcast.watch_channel_sql(rel, tmpl, rowvar);
        chans := chans || ch.expr;
        always := always OR ch.constant;
        IF op = 'UPDATE' AND NOT ch.constant THEN  -- the old channel, when it differs
            prev := pgcast.watch_channel_sql(rel, tmpl, 'OLD');
            chans := chans || format('CASE WHEN %1$s IS DISTINCT FROM %2$s THEN %1$s END',
                                     prev.expr, ch.expr);
        END IF;
    END LOOP;
    IF cardinality(chans) = 1 AND always THEN  -- the hot path: one row, no condition
        body := format(E'INSERT INTO pgcast.outbox (channel, data)\nVALUES (%s, %s);',
                       chans[1], data_sql);
    ELSIF cardinality(chans) = 1 THEN
        body := format(E'INSERT INTO pgcast.outbox (channel, data)\nSELECT v.channel, %s\n'
                       || E'FROM (VALUES (%s)) AS v (channel)\nWHERE v.channel IS NOT NULL;',
                       data_sql, chans[1]);
    ELSE  -- the data once (OFFSET 0 keeps it from being inlined per row), rows in order
        body := format(E'INSERT INTO pgcast.outbox (channel, data)\nSELECT v.channel, d.data\n'
                       || E'FROM (SELECT %s AS data OFFSET 0) AS d,\n     (VALUES %s\n'
                       || E'     ) AS v (ord, channel)\nWHERE v.channel IS NOT NULL ORDER BY v.ord;',
                       data_sql,
                       (SELECT string_agg(format('(%s, %s)', o, c), E',\n             '
                                          ORDER BY o)
                        FROM unnest(chans) WITH ORDINALITY AS u(c, o)));
    END IF;
    RETURN body || E'\n' || CASE WHEN always THEN wake
        ELSE E'IF FOUND THEN\n    ' || replace(wake, E'\n', E'\n    ') || E'\nEND IF;' END;
END
$$;

-- Argument checks: every mistake fails here, not on a write.
CREATE OR REPLACE FUNCTION pgcast.watch_check(tbl regclass, channels text[], events text[])
RETURNS void
LANGUAGE plpgsql STABLE AS $$
DECLARE
    kind "char";
BEGIN
    IF tbl IS NULL OR channels IS NULL OR events IS NULL THEN
        RAISE EXCEPTION 'pgcast.watch: table, channels and events must not be NULL'
            USING ERRCODE = 'null_value_not_allowed';
    END IF;
    SELECT c.relkind INTO kind FROM pg_class AS c WHERE c.oid = tbl;
    IF kind IS NULL OR kind NOT IN ('r', 'p') THEN
        RAISE EXCEPTION 'pgcast.watch: % is not a table (ordinary or partitioned)', tbl
            USING ERRCODE = 'wrong_object_type';
    ELSIF kind = 'p'
          AND NOT EXISTS (SELECT FROM pg_index AS i WHERE i.indrelid = tbl AND i.indisprimary)
          AND EXISTS (SELECT FROM pg_partition_tree(tbl) AS pt
                      JOIN pg_index AS i ON i.indrelid = pt.relid AND i.indisprimary
                      WHERE pt.relid <> tbl) THEN
        -- the generated code has one key, the parent's; notify_trigger reads each
        -- partition's own key on every row
        RAISE EXCEPTION 'pgcast.watch: partitioned table % has no primary key but a partition '
            'has one: its events would carry "id": null; add the key to % or use '
            'pgcast.notify_trigger', tbl, tbl
            USING ERRCODE = 'feature_not_supported';
    ELSIF tbl = 'pgcast.outbox'::regclass THEN
        RAISE EXCEPTION 'pgcast.watch: cannot watch pgcast.outbox itself'
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF array_position(channels, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'pgcast.watch: a channel template is NULL (channels %)', channels
            USING ERRCODE = 'null_value_not_allowed';
    ELSIF '' = ANY (channels) THEN
        RAISE EXCEPTION 'pgcast.watch: a channel template is empty (channels %)', channels
            USING ERRCODE = 'invalid_parameter_value';
    ELSIF cardinality(events) = 0 OR array_position(events, NULL) IS NOT NULL
          OR NOT ARRAY(SELECT upper(e) FROM unnest(events) AS e) <@ '{INSERT,UPDATE,DELETE}' THEN
        RAISE EXCEPTION 'pgcast.watch: events must be some of INSERT, UPDATE, DELETE, not %',
            events USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The generated function's name for a table.
CREATE OR REPLACE FUNCTION pgcast.watch_function_name(tbl regclass) RETURNS text
LANGUAGE sql IMMUTABLE AS $$ SELECT format('pgcast.%I', 'watch_' || tbl::oid) $$;

-- Superseded by watch_drop_orphans, which also finds these functions.
DROP FUNCTION IF EXISTS pgcast.watch_current_function(regclass);

-- Generated functions that no trigger calls any more, dropped by every watch() and unwatch():
-- the one a re-watch or an unwatch left, the one named after an older oid (a dump and restore
-- gives the table a new oid; its trigger still calls the old name), and those of dropped
-- tables (DROP TABLE drops the trigger, not the function). Only pgcast.watch_<digits>()
-- trigger functions qualify, never one a trigger still names.
CREATE OR REPLACE FUNCTION pgcast.watch_drop_orphans() RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    orphan  regprocedure;
    dropped integer := 0;
BEGIN
    FOR orphan IN
        SELECT p.oid::regprocedure FROM pg_proc AS p
        WHERE p.pronamespace = 'pgcast'::regnamespace AND p.proname ~ '^watch_[0-9]+$'
          AND p.pronargs = 0 AND p.prorettype = 'trigger'::regtype
          AND NOT EXISTS (SELECT FROM pg_trigger AS t WHERE t.tgfoid = p.oid)
    LOOP
        EXECUTE format('DROP FUNCTION IF EXISTS %s', orphan);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

CREATE OR REPLACE FUNCTION pgcast.watch(
    tbl regclass,
    channels text[] DEFAULT '{}',
    events text[] DEFAULT '{INSERT,UPDATE,DELETE}'
) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    fname    text := pgcast.watch_function_name(tbl);
    templates text[] := channels;
    ops      text[];
    op       text;
    body     text := '';
    wal      boolean;
    problem  text;
BEGIN
    PERFORM pgcast.watch_check(tbl, channels, events);
    wal := pgcast.capture_lock_wal();  -- the capture mode, held until commit (sql/006)
    EXECUTE format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', tbl);  -- one watch() at a time
    problem := CASE WHEN wal THEN pgcast.capture_problem(tbl, channels, events) END;
    IF problem IS NOT NULL THEN
        RAISE EXCEPTION 'pgcast.watch: capture is wal, and %', problem
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    IF cardinality(channels) = 0 THEN
        templates := ARRAY[NULL];  -- the table's name: TG_TABLE_NAME, as notify_trigger
    END IF;
    ops := ARRAY(SELECT o FROM unnest('{INSERT,UPDATE,DELETE}'::text[]) WITH ORDINALITY AS u(o, n)
                 WHERE o IN (SELECT upper(e) FROM unnest(events) AS e) ORDER BY n);
    FOREACH op IN ARRAY ops LOOP  -- a branch on TG_OP only when there is a choice
        IF cardinality(ops) = 1 THEN
            body := E'    ' || replace(pgcast.watch_op_sql(tbl, op, templates), E'\n', E'\n    ');
        ELSE
            body := body || CASE WHEN op = ops[1] THEN format(E'    IF TG_OP = %L THEN\n', op)
                                 WHEN op = ops[cardinality(ops)] THEN E'    ELSE\n'
                                 ELSE format(E'    ELSIF TG_OP = %L THEN\n', op) END
                || E'        ' || replace(pgcast.watch_op_sql(tbl, op, templates),
                                           E'\n', E'\n        ') || E'\n';
        END IF;
    END LOOP;
    IF cardinality(ops) > 1 THEN
        body := body || E'    END IF;';
    END IF;
    body := E'BEGIN\n' || body || E'\n    RETURN NULL;\nEND\n';
    EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS %L',
                   fname, body);
    EXECUTE format('COMMENT ON FUNCTION %s() IS %L', fname,
                   format('pgcast.watch(%L, %L, %L): generated; re-run after changing the key '
                          'or a template column', tbl::text, channels, ops));
    IF EXISTS (SELECT FROM pg_trigger WHERE tgrelid = tbl AND tgname = 'pgcast_watch') THEN
        EXECUTE format('DROP TRIGGER pgcast_watch ON %s', tbl);
    END IF;
    EXECUTE format('CREATE TRIGGER pgcast_watch AFTER %s ON %s FOR EACH ROW EXECUTE FUNCTION %s()',
                   array_to_string(ops, ' OR '), tbl, fname);
    -- the declaration a wal leader reads; in wal mode the trigger is disabled at once and
    -- the table published (sql/006)
    INSERT INTO pgcast.watched AS w (rel, channels, events) VALUES (tbl, channels, ops)
    ON CONFLICT (rel) DO UPDATE SET channels = excluded.channels, events = excluded.events;
    IF wal THEN
        PERFORM pgcast.capture_apply(tbl, true);
    END IF;
    PERFORM pgcast.watched_sync();
    PERFORM pgcast.watch_drop_orphans();  -- the function the trigger called before, among others
    RETURN to_regprocedure(fname || '()')::text;
END
$$;

COMMENT ON FUNCTION pgcast.watch(regclass, text[], text[]) IS
    'Generate the trigger pgcast_watch on a table: notify_trigger''s events, resolved once.';

CREATE OR REPLACE FUNCTION pgcast.unwatch(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pgcast.capture_lock_wal();  -- no mode switch in between (sql/006)
    EXECUTE format('DROP TRIGGER IF EXISTS pgcast_watch ON %s', tbl);
    DELETE FROM pgcast.watched WHERE rel = tbl;
    IF pgcast.capture_published(tbl) THEN
        EXECUTE format('ALTER PUBLICATION pgcast DROP TABLE %s', tbl);
    END IF;
    PERFORM pgcast.watched_sync();
    PERFORM pgcast.watch_drop_orphans();  -- the function it called, among others
END
$$;

COMMENT ON FUNCTION pgcast.unwatch(regclass) IS
    'Drop the trigger pgcast.watch made on a table, its generated function and its declaration.';
