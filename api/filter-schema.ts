/**
 * JSON schema of a sync filter (client-server API "Filtering"): types of the known fields are
 * checked, unknown fields are kept. Used by `POST /user/{userId}/filter`; /sync validates inline
 * filters against the same schema.
 */

const stringList = { type: 'array', maxItems: 1000, items: { type: 'string', maxLength: 1000 } } as const

const eventFilter = {
  type: 'object',
  properties: {
    limit: { type: 'integer', minimum: 0 },
    types: stringList,
    not_types: stringList,
    senders: stringList,
    not_senders: stringList,
  },
} as const

const roomEventFilter = {
  type: 'object',
  properties: {
    ...eventFilter.properties,
    rooms: stringList,
    not_rooms: stringList,
    contains_url: { type: 'boolean' },
    include_redundant_members: { type: 'boolean' },
    lazy_load_members: { type: 'boolean' },
    unread_thread_notifications: { type: 'boolean' },
  },
} as const

export const filterSchema = {
  type: 'object',
  properties: {
    event_fields: stringList,
    event_format: { type: 'string', enum: ['client', 'federation'] },
    presence: eventFilter,
    account_data: eventFilter,
    room: {
      type: 'object',
      properties: {
        rooms: stringList,
        not_rooms: stringList,
        include_leave: { type: 'boolean' },
        ephemeral: roomEventFilter,
        state: roomEventFilter,
        timeline: roomEventFilter,
        account_data: roomEventFilter,
      },
    },
  },
} as const
