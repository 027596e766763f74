import type { ColumnType, Generated } from 'kysely'

/**
 * The kysely view of the database (tables created by `migrations/`). int8 columns come back as
 * `bigint` (see `createDatabase`); timestamps are milliseconds since the epoch.
 *
 * @example
 * const rows = await db.selectFrom('events').select(['event_id', 'stream_ordering'])
 *   .where('room_id', '=', roomId).orderBy('stream_ordering').execute()
 */
export interface Database {
  instances: InstancesTable
  stream_positions: StreamPositionsTable
  rooms: RoomsTable
  events: EventsTable
  event_json: EventJsonTable
  redactions: RedactionsTable
  event_edges: EventEdgesTable
  /** A view of `rooms.forward_extremities` (migration 0033): read only. */
  event_forward_extremities: RoomEventTable
  event_backward_extremities: RoomEventTable
  state_events: StateEventsTable
  current_state_events: CurrentStateEventsTable
  room_memberships: RoomMembershipsTable
  event_txn_ids: EventTxnIdsTable
  replication_requests: ReplicationRequestsTable
  room_aliases: RoomAliasesTable
  users: UsersTable
  devices: DevicesTable
  access_tokens: AccessTokensTable
  access_token_revocations: AccessTokenRevocationsTable
  user_filters: UserFiltersTable
  account_data: AccountDataTable
  push_rules: PushRulesTable
  receipts: ReceiptsTable
  typing: TypingTable
  presence: PresenceTable
  e2e_device_keys: E2eDeviceKeysTable
  e2e_one_time_keys: E2eOneTimeKeysTable
  e2e_fallback_keys: E2eFallbackKeysTable
  e2e_cross_signing_keys: E2eCrossSigningKeysTable
  e2e_signatures: E2eSignaturesTable
  device_lists_changes: DeviceListsChangesTable
  e2e_room_keys_versions: E2eRoomKeysVersionsTable
  e2e_room_keys: E2eRoomKeysTable
  event_relations: EventRelationsTable
  device_inbox: DeviceInboxTable
  to_device_position: ToDevicePositionTable
  to_device_txns: ToDeviceTxnsTable
  profiles: ProfilesTable
  pushers: PushersTable
  event_search: EventSearchTable
  event_search_position: EventSearchPositionTable
  event_reports: EventReportsTable
  blocked_rooms: BlockedRoomsTable
  registration_tokens: RegistrationTokensTable
  room_deletions: RoomDeletionsTable
  ratelimit_overrides: RatelimitOverridesTable
  media: MediaTable
  media_thumbnails: MediaThumbnailsTable
  sliding_sync_connections: SlidingSyncConnectionsTable
  history_purges: HistoryPurgesTable
  retention_settings: RetentionSettingsTable
  myelin_schema_compat: SchemaCompatTable
  myelin_migration_checksums: MigrationChecksumsTable
}

type Int8 = ColumnType<bigint, bigint | number, bigint | number>
type Json<T = unknown> = ColumnType<T, string, string>

export interface InstancesTable {
  instance_id: Generated<number>
  instance_name: string
}

export interface StreamPositionsTable {
  stream_name: string
  instance_name: string
  stream_id: Int8
}

export interface RoomsTable {
  room_id: string
  room_version: string
  creator: string
  is_public: Generated<boolean>
  created_ts: Int8
  owner: string | null
  epoch: Generated<bigint>
  max_depth: Generated<bigint>
  last_stream_ordering: Int8 | null
  /** Sorted; written by the persist statement (storage/events/append-events.ts). */
  forward_extremities: Generated<string[]>
}

export interface EventsTable {
  stream_ordering: Int8
  event_id: string
  room_id: string
  type: string
  state_key: string | null
  sender: string
  origin_server_ts: Int8
  received_ts: Int8
  depth: Int8
  instance_name: string
  outlier: Generated<boolean>
  redacts: string | null
  membership: string | null
}

export interface EventJsonTable {
  event_id: string
  room_id: string
  json: string
}

export interface RedactionsTable {
  event_id: string
  redacts: string
}

export interface EventEdgesTable {
  event_id: string
  prev_event_id: string
  room_id: string
}

export interface RoomEventTable {
  room_id: string
  event_id: string
}

export interface StateEventsTable {
  event_id: string
  room_id: string
  type: string
  state_key: string
  prev_state_event_id: string | null
}

export interface CurrentStateEventsTable {
  room_id: string
  type: string
  state_key: string
  event_id: string
  membership: string | null
  stream_ordering: Int8
}

export interface RoomMembershipsTable {
  event_id: string
  room_id: string
  user_id: string
  sender: string
  membership: string
  stream_ordering: Int8
  depth: Int8
}

export interface EventTxnIdsTable {
  room_id: string
  user_id: string
  device_id: string
  txn_id: string
  event_id: string
  inserted_ts: Int8
}

export interface ReplicationRequestsTable {
  request_id: string
  /** Index in the request of the first event of `event_ids`. */
  first_idx: number
  event_ids: string[]
  inserted_ts: Int8
}

export interface RoomAliasesTable {
  room_alias: string
  room_id: string
  creator: string
}

export interface UsersTable {
  user_id: string
  password_hash: string | null
  created_ts: Int8
  deactivated: Generated<boolean>
  admin: Generated<boolean>
  shadow_banned: Generated<boolean>
}

export interface DevicesTable {
  user_id: string
  device_id: string
  display_name: string | null
  created_ts: Int8
  last_seen_ts: Int8 | null
}

export interface AccessTokensTable {
  id: Generated<bigint>
  token_hash: Buffer
  user_id: string
  device_id: string
  created_ts: Int8
  last_used_ts: Int8 | null
}

/** Filled by triggers (migration 0007) when a token is deleted or its user deactivated. */
export interface AccessTokenRevocationsTable {
  id: Generated<bigint>
  token_id: Int8
  revoked_ts: Int8
}

export interface UserFiltersTable {
  user_id: string
  filter_id: Int8
  filter_json: Json
}

export interface AccountDataTable {
  user_id: string
  room_id: Generated<string>
  type: string
  content: Json
  stream_id: Int8
}

export interface PushRulesTable {
  user_id: string
  rules: Json
  stream_id: Int8
}

export interface PushersTable {
  id: Generated<bigint>
  user_id: string
  access_token_id: Int8 | null
  kind: string
  app_id: string
  pushkey: string
  app_display_name: string
  device_display_name: string
  profile_tag: string | null
  lang: string
  data: Json
  created_ts: Int8
  last_stream_ordering: Int8
  failing_since: Int8 | null
}

export interface EventSearchTable {
  event_id: string
  room_id: string
  stream_ordering: Int8
  sender: string
  type: string
  key: string
  /** tsvector, written and read in SQL only. */
  vector: string
}

export interface MediaTable {
  media_id: string
  user_id: string
  content_type: string
  upload_name: string | null
  size: Int8
  created_ts: Int8
  content: Buffer | null
  expires_ts: Int8 | null
  quarantined_by: string | null
  safe_from_quarantine: Generated<boolean>
}

export interface MediaThumbnailsTable {
  media_id: string
  width: number
  height: number
  method: 'crop' | 'scale'
  content_type: string | null
  content: Buffer | null
  created_ts: Int8
}

export interface SlidingSyncConnectionsTable {
  /** `<user>|<device>|<conn_id>`. */
  conn_key: string
  state: string
  touched_ts: Int8
}

export interface HistoryPurgesTable {
  purge_id: string
  room_id: string
  status: string
  up_to_depth: Int8
  delete_local_events: boolean
  cursor_depth: Int8 | null
  cursor_stream: Int8 | null
  deleted: Generated<Int8>
  error: string | null
  started_ts: Int8
}

export interface RetentionSettingsTable {
  singleton: Generated<boolean>
  default_max_lifetime_ms: Int8 | null
  allowed_lifetime_min_ms: Int8 | null
  allowed_lifetime_max_ms: Int8 | null
}

export interface RoomDeletionsTable {
  delete_id: string
  room_id: string
  status: string
  shutdown_room: Json<unknown> | null
  error: string | null
  started_ts: Int8
  params: ColumnType<unknown, string | undefined, string>
}

export interface RegistrationTokensTable {
  token: string
  uses_allowed: number | null
  pending: Generated<number>
  completed: Generated<number>
  expiry_time: Int8 | null
}

export interface BlockedRoomsTable {
  room_id: string
  user_id: string
  blocked_ts: Int8
}

export interface EventReportsTable {
  id: Generated<bigint>
  received_ts: Int8
  room_id: string
  event_id: string | null
  user_id: string
  reason: string | null
  score: number | null
}

export interface EventSearchPositionTable {
  lock: Generated<boolean>
  /** The events stream position every live event up to which was considered. */
  stream_ordering: Int8
  /** The backfill stream ID every imported event down to which (stream ordering -ID) was considered. */
  backfill_id: Generated<bigint>
}

export interface ReceiptsTable {
  room_id: string
  receipt_type: string
  user_id: string
  thread_id: Generated<string>
  event_id: string
  data: Json
  stream_id: Int8
}

export interface TypingTable {
  room_id: string
  user_id: string
  /** 0: not typing. */
  expires_ts: Int8
  stream_id: Int8
}

export interface PresenceTable {
  user_id: string
  state: 'online' | 'unavailable' | 'offline'
  status_msg: string | null
  last_active_ts: Int8
  online_until_ts: Int8
  stream_id: Int8
}

export interface E2eDeviceKeysTable {
  user_id: string
  device_id: string
  key_json: string
}

export interface E2eOneTimeKeysTable {
  user_id: string
  device_id: string
  algorithm: string
  key_id: string
  key_json: string
}

export interface E2eFallbackKeysTable {
  user_id: string
  device_id: string
  algorithm: string
  key_id: string
  key_json: string
  used: Generated<boolean>
}

export interface E2eCrossSigningKeysTable {
  user_id: string
  key_type: 'master' | 'self_signing' | 'user_signing'
  public_key: string
  key_json: string
}

export interface E2eSignaturesTable {
  target_user_id: string
  target_key_id: string
  signer_user_id: string
  signer_key_id: string
  signature: string
}

export interface DeviceListsChangesTable {
  user_id: string
  stream_id: Int8
}

export interface E2eRoomKeysVersionsTable {
  user_id: string
  version: Int8
  algorithm: string
  auth_data: string
  etag: Generated<bigint>
  deleted: Generated<boolean>
}

export interface E2eRoomKeysTable {
  user_id: string
  version: Int8
  room_id: string
  session_id: string
  first_message_index: number
  forwarded_count: number
  is_verified: boolean
  session_data: string
}

export interface EventRelationsTable {
  event_id: string
  relates_to_id: string
  relation_type: string
  aggregation_key: string | null
  room_id: string
  sender: string
  type: string
  stream_ordering: Int8
}

export interface DeviceInboxTable {
  user_id: string
  device_id: string
  stream_id: Int8
  message_json: string
}

export interface ToDevicePositionTable {
  lock: Generated<string>
  position: Int8
}

export interface ToDeviceTxnsTable {
  user_id: string
  device_id: string
  txn_id: string
  inserted_ts: Int8
}

export interface ProfilesTable {
  user_id: string
  displayname: string | null
  avatar_url: string | null
}

export interface SchemaCompatTable {
  lock: Generated<string>
  compat_version: number
}

export interface MigrationChecksumsTable {
  name: string
  sha256: string
  applied_ts: Int8
}

export interface RatelimitOverridesTable {
  user_id: string
  messages_per_second: number
  burst_count: number
}
