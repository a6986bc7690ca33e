-- pgcast 006: capture modes (PGCAST_CAPTURE=outbox | wal), the declarations pgcast.watch()
-- records for the WAL leader, and the publications it decodes.
--   SELECT pgcast.set_capture('wal');     -- called by the leader listener at each leadership
-- 'outbox' (default): pgcast_watch triggers and pgcast.publish() write pgcast.outbox.
-- 'wal': the leader decodes the watched tables' changes (publication pgcast) and the
-- outbox's inserts (publication pgcast_outbox: control rows, notify_trigger triggers, and
-- transactions that began before a switch); every pgcast_watch trigger is disabled, and
-- pgcast.publish() writes a transactional logical message instead of an outbox row.
-- Plain, idempotent SQL.

-- What pgcast.watch(rel, channels, events) was last called with: channels as given ('{}'
-- is the table's name), events upper-case in INSERT, UPDATE, DELETE order. The WAL leader
-- reads it; a row whose table was dropped is harmless (the leader ignores unknown oids)
-- and is removed by the next watch(), unwatch() or set_capture().
CREATE TABLE IF NOT EXISTS pgcast.watched (
    rel      oid    PRIMARY KEY,
    channels text[] NOT NULL,
    events   text[] NOT NULL
);

CREATE TABLE IF NOT EXISTS pgcast.capture (
    singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    mode       text        NOT NULL DEFAULT 'outbox' CHECK (mode IN ('outbox', 'wal')),
    changed_at timestamptz
);
INSERT INTO pgcast.capture (singleton) VALUES (true) ON CONFLICT DO NOTHING;

-- pgcast.publish() reads the mode as its caller, who needed no privilege here before.
GRANT SELECT ON pgcast.capture TO PUBLIC;

COMMENT ON TABLE pgcast.watched IS
    'pgcast: the arguments of each table''s last pgcast.watch() (read by a wal-mode leader)';
COMMENT ON TABLE pgcast.capture IS
    'pgcast: the capture mode, outbox or wal (set by the leader with pgcast.set_capture)';

-- Watched tables join pgcast only while a wal leader leads: a table published for UPDATE
-- and DELETE without a replica identity refuses both. Creating a publication needs CREATE
-- on the database; a role without it still gets outbox mode (set_capture('wal') explains).
DO $$
BEGIN
    IF NOT has_database_privilege(current_database(), 'CREATE') THEN
        RAISE NOTICE 'pgcast: no CREATE privilege on this database: publications pgcast and '
            'pgcast_outbox not created (only PGCAST_CAPTURE=wal needs them)';
        RETURN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'pgcast') THEN
        CREATE PUBLICATION pgcast WITH (publish = 'insert, update, delete');
    END IF;
    IF NOT EXISTS (SELECT FROM pg_publication WHERE pubname = 'pgcast_outbox') THEN
        CREATE PUBLICATION pgcast_outbox FOR TABLE pgcast.outbox WITH (publish = 'insert');
    END IF;
END
$$;

-- The column names a channel template reads, parsed exactly as pgcast.fill_template does.
CREATE OR REPLACE FUNCTION pgcast.template_columns(template text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    rest     text := template;
    open_at  int;
    close_at int;
    cols     text[] := '{}';
BEGIN
    LOOP
        open_at := strpos(rest, '{');
        EXIT WHEN open_at = 0;
        close_at := strpos(substr(rest, open_at + 1), '}');
        EXIT WHEN close_at = 0;  -- an unmatched brace stays literal text
        cols := cols || substr(rest, open_at + 1, close_at - 1);
        rest := substr(rest, open_at + close_at + 1);
    END LOOP;
    RETURN cols;
END
$$;

-- A table and its partitions, leaves marked (pg_partition_tree lists nothing for a table
-- that is not partitioned).
CREATE OR REPLACE FUNCTION pgcast.capture_tree(
    rel regclass, OUT relid regclass, OUT isleaf boolean, OUT level integer)
RETURNS SETOF record
LANGUAGE sql STABLE AS $$
SELECT pt.relid, pt.isleaf, pt.level FROM pg_partition_tree(rel) AS pt
UNION ALL
SELECT rel, true, 0 WHERE NOT EXISTS (SELECT FROM pg_partition_tree(rel))
$$;

-- Why a declaration cannot be served from the WAL (pgoutput v1), or NULL when it can.
-- INSERT sends the whole new row. UPDATE events need the old row ("changed", the old
-- channel): REPLICA IDENTITY FULL. DELETE sends only the identity columns, which must hold
-- the primary key and every template column. A published table without any identity
-- refuses UPDATE and DELETE whatever is watched. Generated columns are never sent.
-- Checked on each leaf partition: replica identity is a partition's own.
CREATE OR REPLACE FUNCTION pgcast.capture_problem(rel regclass, channels text[], events text[])
RETURNS text
LANGUAGE plpgsql STABLE AS $$
DECLARE
    ops    text[] := ARRAY(SELECT upper(e) FROM unnest(events) AS e);
    tcols  text[] := ARRAY(SELECT DISTINCT c FROM unnest(channels) AS t,
                           unnest(pgcast.template_columns(t)) AS c ORDER BY c);
    pk     text[] := ARRAY(SELECT a.attname::text FROM pg_index AS i
                           JOIN pg_attribute AS a ON a.attrelid = i.indrelid
                                AND a.attnum = ANY (i.indkey)
                           WHERE i.indrelid = rel AND i.indisprimary);
    -- "changed" compares every column, so an UPDATE event needs them all in the WAL.
    gen    text[] := ARRAY(SELECT a.attname::text FROM pg_attribute AS a
                           WHERE a.attrelid = rel AND a.attgenerated <> ''
                             AND NOT a.attisdropped AND a.attnum > 0
                             AND (a.attname::text = ANY (pk || tcols)
                                  OR 'UPDATE' = ANY (ops))
                           ORDER BY a.attnum);
    leaf   record;
    idcols text[];
    fix    text;
BEGIN
    IF cardinality(gen) > 0 THEN
        RETURN format('%s: generated column(s) %s (in the primary key, a channel template, '
            'or compared for an UPDATE''s "changed") are not sent by logical replication; '
            'watch without UPDATE or plain columns, or keep PGCAST_CAPTURE=outbox',
            rel, array_to_string(gen, ', '));
    END IF;
    FOR leaf IN
        SELECT c.oid::regclass AS rel, c.relreplident AS ident
        FROM pgcast.capture_tree(rel) AS pt JOIN pg_class AS c ON c.oid = pt.relid
        WHERE pt.isleaf ORDER BY pt.level, c.oid
    LOOP
        fix := format('run ALTER TABLE %s REPLICA IDENTITY FULL', leaf.rel);
        CONTINUE WHEN leaf.ident = 'f';
        idcols := ARRAY(SELECT a.attname::text FROM pg_index AS i
                        JOIN pg_attribute AS a ON a.attrelid = i.indrelid
                             AND a.attnum = ANY (i.indkey)
                        WHERE i.indrelid = leaf.rel
                          AND CASE leaf.ident WHEN 'd' THEN i.indisprimary
                                              WHEN 'i' THEN i.indisreplident END);
        IF cardinality(idcols) = 0 THEN
            RETURN format('%s has no replica identity (no primary key): published, it would '
                'refuse UPDATE and DELETE; %s', leaf.rel, fix);
        ELSIF 'UPDATE' = ANY (ops) THEN
            RETURN format('%s: UPDATE events need the old row (changed columns, the old '
                'channel); %s', leaf.rel, fix);
        ELSIF 'DELETE' = ANY (ops) AND NOT (pk || tcols) <@ idcols THEN
            RETURN format('%s: DELETE events need the old %s, outside its replica identity; %s',
                leaf.rel, array_to_string(ARRAY(SELECT unnest(pk || tcols)
                                                EXCEPT SELECT unnest(idcols)), ', '), fix);
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

COMMENT ON FUNCTION pgcast.capture_problem(regclass, text[], text[]) IS
    'Why pgcast.watch(rel, channels, events) cannot be served from the WAL, with the fix; NULL when it can.';

-- The (channels, events) that watch() wrote into its generated function's comment
--   pgcast.watch(<table>, <channels>, <events>): generated; ...
-- (every pgcast version has), each a quote_literal: only '' and, in an E'' literal, \\ are
-- escaped. NULLs when the comment is not that.
CREATE OR REPLACE FUNCTION pgcast.watch_arguments(fn oid, OUT channels text[], OUT events text[])
LANGUAGE plpgsql STABLE AS $$
DECLARE
    lit   text := '(E?''(?:[^''\\]|''''|\\.)*'')';
    parts text[] := regexp_match(obj_description(fn, 'pg_proc'),
        '^pgcast\.watch\(' || lit || ', ' || lit || ', ' || lit || '\): generated');
BEGIN
    IF parts IS NOT NULL THEN
        channels := pgcast.watch_unquote(parts[2])::text[];
        events := pgcast.watch_unquote(parts[3])::text[];
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION pgcast.watch_unquote(literal text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
SELECT CASE WHEN left(literal, 1) = 'E'
    THEN replace(replace(substr(literal, 3, length(literal) - 3), '''''', ''''), '\\', '\')
    ELSE replace(substr(literal, 2, length(literal) - 2), '''''', '''')
END
$$;

-- pgcast.watched made true to the triggers: a row whose table has no pgcast_watch trigger
-- any more goes (a dropped table, an unwatch); a trigger's row is (re)written from its
-- function's comment, so tables watched before this migration, and a restored dump (new
-- oids, the comments come along), are declared. Partitions' clones of a trigger are not
-- declarations. Returns the tables with a trigger whose arguments cannot be recovered.
CREATE OR REPLACE FUNCTION pgcast.watched_sync() RETURNS regclass[]
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM pgcast.watched AS w
    WHERE NOT EXISTS (SELECT FROM pg_trigger AS t
                      WHERE t.tgrelid = w.rel AND t.tgname = 'pgcast_watch' AND t.tgparentid = 0);
    INSERT INTO pgcast.watched AS w (rel, channels, events)
    SELECT t.tgrelid, a.channels, a.events
    FROM pg_trigger AS t CROSS JOIN LATERAL pgcast.watch_arguments(t.tgfoid) AS a
    WHERE t.tgname = 'pgcast_watch' AND t.tgparentid = 0 AND a.channels IS NOT NULL
    ON CONFLICT (rel) DO UPDATE SET channels = excluded.channels, events = excluded.events
    WHERE (w.channels, w.events) IS DISTINCT FROM (excluded.channels, excluded.events);
    RETURN ARRAY(SELECT t.tgrelid::regclass FROM pg_trigger AS t
                 WHERE t.tgname = 'pgcast_watch' AND t.tgparentid = 0
                   AND NOT EXISTS (SELECT FROM pgcast.watched AS w WHERE w.rel = t.tgrelid)
                 ORDER BY t.tgrelid);
END
$$;

-- Mode switches and watch()/unwatch() take the advisory lock (1885824887, 2) ('pgcw' as in
-- sql/001, second key): set_capture exclusively, watch()/unwatch() shared, each before any
-- table lock (no deadlock), so a watch() never declares a table in the mode being left.
-- An advisory lock needs no privilege and never waits for the tables' writers.
CREATE OR REPLACE FUNCTION pgcast.capture_lock_wal() RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(1885824887, 2);
    RETURN (SELECT c.mode FROM pgcast.capture AS c WHERE c.singleton) = 'wal';
END
$$;

CREATE OR REPLACE FUNCTION pgcast.capture_published(rel regclass) RETURNS boolean
LANGUAGE sql STABLE AS $$
SELECT EXISTS (SELECT FROM pg_publication_rel AS pr
               JOIN pg_publication AS p ON p.oid = pr.prpubid
               WHERE p.pubname = 'pgcast' AND pr.prrelid = rel)
$$;

-- One watched table into a mode's state: its pgcast_watch trigger (and the partitions'
-- clones) disabled and the table in publication pgcast for wal; the reverse for outbox.
-- Nothing is altered, so no lock is taken, where the state is already right.
CREATE OR REPLACE FUNCTION pgcast.capture_apply(rel regclass, wal boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM pgcast.capture_tree(rel) AS pt
               JOIN pg_trigger AS t ON t.tgrelid = pt.relid AND t.tgname = 'pgcast_watch'
               WHERE (t.tgenabled = 'D') <> wal) THEN
        EXECUTE format('ALTER TABLE %s %s TRIGGER pgcast_watch', rel,
                       CASE WHEN wal THEN 'DISABLE' ELSE 'ENABLE' END);
    END IF;
    IF pgcast.capture_published(rel) <> wal THEN
        EXECUTE format('ALTER PUBLICATION pgcast %s TABLE %s',
                       CASE WHEN wal THEN 'ADD' ELSE 'DROP' END, rel);
    END IF;
END
$$;

-- SECURITY DEFINER: the listener's role need not own the watched tables (ALTER TABLE and
-- ALTER PUBLICATION need their owner); EXECUTE is granted to no one but the owner: GRANT it
-- to the listener's role when that is another. Everything is checked before anything is
-- changed, so an error leaves the mode and every table as they were.
CREATE OR REPLACE FUNCTION pgcast.set_capture(mode text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pgcast AS $$
DECLARE
    wal      boolean := mode = 'wal';
    unknown  regclass[];
    problems text[];
    rel      regclass;
BEGIN
    IF mode IS NULL OR mode NOT IN ('outbox', 'wal') THEN
        RAISE EXCEPTION 'pgcast.set_capture: mode must be outbox or wal, not %', quote_nullable(mode)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(1885824887, 2);
    unknown := pgcast.watched_sync();
    IF wal AND cardinality(unknown) > 0 THEN  -- in outbox mode a trigger needs no declaration
        RAISE EXCEPTION 'pgcast.set_capture: the pgcast_watch trigger of % has no declaration',
            array_to_string(unknown, ', ')
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'Run pgcast.watch() on each of them again, with its channels and events.';
    END IF;
    IF wal THEN
        IF (SELECT count(*) FROM pg_publication
            WHERE pubname IN ('pgcast', 'pgcast_outbox')) < 2 THEN
            RAISE EXCEPTION 'pgcast.set_capture: publication pgcast or pgcast_outbox is missing'
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Run pgcast-migrate as a role with CREATE on the database.';
        END IF;
        problems := ARRAY(SELECT p FROM pgcast.watched AS w,
                          pgcast.capture_problem(w.rel, w.channels, w.events) AS p
                          WHERE p IS NOT NULL ORDER BY w.rel);
        IF cardinality(problems) > 0 THEN
            RAISE EXCEPTION 'pgcast.set_capture(''wal''): % watched table(s) cannot be served '
                'from the WAL: %', cardinality(problems), array_to_string(problems, '; ')
                USING ERRCODE = 'object_not_in_prerequisite_state',
                      HINT = 'Fix each table as said, or pgcast.unwatch() it, or keep '
                             'PGCAST_CAPTURE=outbox.';
        END IF;
    END IF;
    FOR rel IN SELECT w.rel FROM pgcast.watched AS w
               UNION SELECT u FROM unnest(unknown) AS u ORDER BY 1 LOOP
        PERFORM pgcast.capture_apply(rel, wal);
    END LOOP;
    -- anything else in pgcast (added by hand, or by a pgcast older than this one) goes
    FOR rel IN SELECT pr.prrelid FROM pg_publication_rel AS pr
               JOIN pg_publication AS p ON p.oid = pr.prpubid
               WHERE p.pubname = 'pgcast'
                 AND NOT (wal AND pr.prrelid IN (SELECT w.rel FROM pgcast.watched AS w)) LOOP
        EXECUTE format('ALTER PUBLICATION pgcast DROP TABLE %s', rel);
    END LOOP;
    UPDATE pgcast.capture AS c SET mode = set_capture.mode, changed_at = now()
    WHERE c.singleton AND c.mode <> set_capture.mode;
END
$$;

REVOKE EXECUTE ON FUNCTION pgcast.set_capture(text) FROM PUBLIC;

COMMENT ON FUNCTION pgcast.set_capture(text) IS
    'Switch capture to outbox or wal: the watched tables'' triggers and publication pgcast follow (the leader calls it).';

-- Tables watched before this migration are declared now (from their functions' comments).
SELECT pgcast.watched_sync();
