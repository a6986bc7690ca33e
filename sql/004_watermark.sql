-- pgcast 004: the per-channel watermark, where Redis' history cannot take it back.
-- Redis may go back in time (a restart from an older RDB snapshot, a failover to a
-- replica that lagged, a restore from backup): the channel's offset counter falls back
-- and the next events would reuse offsets that clients already hold. The leader records
-- here, in the statement that deletes the published outbox rows, the last (epoch, top
-- offset) Redis acknowledged for each channel; its publish script starts a new epoch
-- (clients are told recovered:false) for a channel whose Redis state is behind this.
-- A row older than the history TTL is not checked (Redis expired that history on its
-- own) and is pruned by the leader. Written only by the leader; plain, idempotent SQL.

CREATE TABLE IF NOT EXISTS pgcast.watermark (
    channel    text        PRIMARY KEY,
    epoch      text        NOT NULL,
    top        bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Rewritten (HOT: no indexed column changes) once per published batch per channel.
ALTER TABLE pgcast.watermark SET (
    fillfactor = 70,
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

COMMENT ON TABLE pgcast.watermark IS
    'pgcast: per channel, the last epoch and offset published to Redis (written by the leader)';

-- The identity of the Redis the leader last published to (its run id and replication id,
-- which change when Redis restarts or fails over). A new leader that finds another Redis
-- than its predecessor recorded cannot know whether the batch the predecessor had in
-- flight survived, nor in which order it was numbered: the channels of the rows it finds
-- waiting start new epochs (their clients are told recovered:false).
ALTER TABLE pgcast.leader ADD COLUMN IF NOT EXISTS redis_identity text;
