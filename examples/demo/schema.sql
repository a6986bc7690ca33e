-- The demo's own tables: what an application's migration would add next to pgcast's.
-- Idempotent. Needs pgcast's schema (pgcast-migrate) for pgcast.notify_trigger().

CREATE TABLE IF NOT EXISTS "Article" (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    title      text        NOT NULL,
    body       text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Full-text document: title weighs more than body in ts_rank.
    search     tsvector GENERATED ALWAYS AS (
        setweight(to_tsvector('english', title), 'A') ||
        setweight(to_tsvector('english', body), 'B')
    ) STORED
);
CREATE INDEX IF NOT EXISTS article_search_idx ON "Article" USING gin (search);

-- Every change of an article becomes one event on the channel `articles`:
-- {"table":"Article","op":"INSERT|UPDATE|DELETE","id":..., "changed":[...] on UPDATE}.
CREATE OR REPLACE TRIGGER article_changed
    AFTER INSERT OR UPDATE OR DELETE ON "Article"
    FOR EACH ROW EXECUTE FUNCTION pgcast.notify_trigger('articles');

CREATE TABLE IF NOT EXISTS orders (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    status     text        NOT NULL DEFAULT 'pending'
               CHECK (status IN ('pending', 'paid', 'shipped', 'delivered', 'cancelled')),
    amount     numeric(10, 2) NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS orders_status_idx ON orders (status);

CREATE OR REPLACE TRIGGER orders_changed
    AFTER INSERT OR UPDATE OR DELETE ON orders
    FOR EACH ROW EXECUTE FUNCTION pgcast.notify_trigger('orders');
