-- Presence idle timer (storage/presence.ts `idlePresence`): online users without activity for
-- 5 minutes become unavailable, as Synapse's IDLE_TIMER. The sweep that finds them runs every
-- second; this index keeps it to a probe.
CREATE INDEX presence_online_active ON presence (last_active_ts) WHERE state = 'online';
