import { randomUUID } from 'node:crypto'
import type { FastifyBaseLogger, FastifyPluginAsync } from 'fastify'
import { randomAlphanumeric } from '../../storage/access-token.js'
import { powerLevels, roomStateOf, stateKey } from '../../persisters/auth-rules.js'
import { RejectedEventError } from '../../persisters/persist-errors.js'
import {
  adminRoomMembers,
  adminRoomOrders,
  adminRooms,
  adminRoomSummaries,
  blockRoom,
  claimRoomDeletion,
  purgeRoom,
  roomBlock,
  roomDeletions,
  startRoomDeletion,
  unblockRoom,
  unfinishedRoomDeletions,
  updateRoomDeletion,
  type AdminRoomOrder,
  type RoomDeletion,
  type RoomShutdown,
} from '../../storage/admin.js'
import { getCurrentState, getRoomHead } from '../../storage/events/event-store.js'
import { getProfile } from '../../storage/profiles.js'
import { deleteAlias, moveAliases, roomAliases } from '../../storage/room-aliases.js'
import { setRoomPublished } from '../../storage/room-directory.js'
import { MatrixError, notFound } from '../errors.js'
import { requireAdmin } from '../require-user.js'
import { resumableJobs } from '../resumable-jobs.js'
import { planRoomCreation, profileContent } from '../room-creation.js'
import { checkRoomId, generateRoomId } from '../room-ids.js'
import type { RoomServices } from '../room-services.js'
import { adminUsersOf, idParam, limitString, offsetString, pageLimit, pageOffset, roomParams } from './admin-common.js'
import { leaveRoom } from './deactivate.js'

/** The room routes of the admin API (admin.ts lists them all). */

interface RoomDelete {
  new_room_user_id?: string
  room_name?: string
  message?: string
  block?: boolean
  purge?: boolean
  force_purge?: boolean
}

/** Synapse's defaults for the room members of a deleted room are moved to. */
const defaultNoticeRoomName = 'Content Violation Notification'
const defaultNoticeMessage = 'Sharing illegal content on this server is not permitted and rooms in violation will be blocked.'

export function adminRoomRoutes(services: RoomServices): FastifyPluginAsync {
  return async (app) => {
    const runtime = app.myelin
    const { db } = runtime
    const serverName = runtime.config.server_name
    const { existingUser } = adminUsersOf(app)
    const existingRoom = async (raw: string) => {
      const roomId = checkRoomId(raw)
      const summary = (await adminRoomSummaries(db, [roomId])).get(roomId)
      if (summary === undefined) throw notFound('Room not found')
      return summary
    }

    app.route<{ Querystring: { from?: string; limit?: string; order_by?: AdminRoomOrder; dir?: 'f' | 'b'; search_term?: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/rooms',
      schema: {
        querystring: {
          type: 'object',
          properties: {
            from: offsetString,
            limit: limitString,
            order_by: { type: 'string', enum: adminRoomOrders },
            dir: { type: 'string', enum: ['f', 'b'] },
            search_term: { type: 'string', maxLength: 255 },
          },
        },
      },
      handler: async (request) => {
        await requireAdmin(request)
        const q = request.query
        const offset = pageOffset(q.from)
        const limit = pageLimit(q.limit)
        const { rooms, total } = await adminRooms(db, { offset, limit, orderBy: q.order_by ?? 'name', dir: q.dir ?? 'f', ...(q.search_term !== undefined && { searchTerm: q.search_term }) })
        return {
          rooms,
          offset,
          total_rooms: total,
          ...(offset + rooms.length < total && { next_batch: offset + rooms.length }),
          ...(offset > 0 && { prev_batch: Math.max(0, offset - limit) }),
        }
      },
    })

    app.route<{ Params: { roomId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v1/rooms/:roomId/block',
      schema: { params: roomParams },
      handler: async (request) => {
        await requireAdmin(request)
        const block = await roomBlock(db, checkRoomId(request.params.roomId))
        return block === undefined ? { block: false } : { block: true, user_id: block.userId }
      },
    })

    app.route<{ Params: { roomId: string }; Body: { block: boolean } }>({
      method: 'PUT',
      url: '/_synapse/admin/v1/rooms/:roomId/block',
      schema: { params: roomParams, body: { type: 'object', required: ['block'], properties: { block: { type: 'boolean' } } } },
      handler: async (request) => {
        const { userId } = await requireAdmin(request)
        const roomId = checkRoomId(request.params.roomId)
        if (request.body.block) await blockRoom(db, roomId, userId, runtime.clock())
        else await unblockRoom(db, roomId)
        request.log.info({ roomId, block: request.body.block }, 'admin changed a room block')
        return { block: request.body.block }
      },
    })

    const roomDeleteSchema = {
      params: roomParams,
      body: {
        type: ['object', 'null'],
        properties: {
          new_room_user_id: idParam,
          room_name: { type: 'string', maxLength: 255 },
          message: { type: 'string', maxLength: 4096 },
          block: { type: 'boolean' },
          purge: { type: 'boolean' },
          force_purge: { type: 'boolean' },
        },
      },
    } as const

    /**
     * The checks before a deletion, and its block: the room to delete, or undefined when the room
     * is not here and the request only blocks it (allowed, as Synapse; deleting it is 404).
     */
    async function prepareDeletion(rawRoomId: string, adminId: string, body: RoomDelete): Promise<{ roomId: string; replacementOwner?: string } | undefined> {
      const roomId = checkRoomId(rawRoomId)
      const exists = (await getRoomHead(db, roomId)) !== undefined
      const replacementOwner = body.new_room_user_id === undefined ? undefined : await existingUser(body.new_room_user_id)
      if (body.block === true) await blockRoom(db, roomId, adminId, runtime.clock())
      if (!exists) {
        if (body.block === true) return undefined
        throw notFound('Room not found')
      }
      return { roomId, ...(replacementOwner !== undefined && { replacementOwner }) }
    }

    /**
     * Every local member leaves (the server acting for them); with a replacement owner the joined
     * ones go to a notice room, which gets the aliases; otherwise the aliases are deleted; the
     * room leaves the directory.
     */
    async function shutDownRoom(roomId: string, body: RoomDelete, replacementOwner: string | undefined, log: FastifyBaseLogger): Promise<RoomShutdown> {
      const members = await db
        .selectFrom('current_state_events')
        .select(['state_key', 'membership'])
        .where('room_id', '=', roomId)
        .where('type', '=', 'm.room.member')
        .where('membership', 'in', ['join', 'invite', 'knock'])
        .orderBy('state_key')
        .execute()
      const kicked: string[] = []
      const failed: string[] = []
      for (const { state_key: userId } of members) {
        try {
          await leaveRoom(runtime, services, roomId, userId)
          kicked.push(userId)
        } catch (err) {
          log.warn({ err, roomId, userId }, 'room deletion: could not remove a member')
          failed.push(userId)
        }
      }
      const joined = new Set(members.filter((m) => m.membership === 'join').map((m) => m.state_key))
      const newRoomId = replacementOwner === undefined ? null : await noticeRoom(replacementOwner, body, kicked.filter((u) => joined.has(u)))
      await setRoomPublished(db, roomId, false)
      const aliases = newRoomId === null ? await roomAliases(db, roomId) : await moveAliases(db, roomId, newRoomId)
      if (newRoomId === null) for (const alias of aliases) await deleteAlias(db, alias)
      log.info({ roomId, kicked: kicked.length, failed: failed.length, newRoomId }, 'admin shut a room down')
      return { kicked_users: kicked, failed_to_kick_users: failed, local_aliases: aliases, new_room_id: newRoomId }
    }

    /** The purge after a shutdown, unless `purge: false`; 409 when someone could not be removed, unless `force_purge`. */
    async function purgeAfter(roomId: string, body: RoomDelete, shutdown: RoomShutdown, log: FastifyBaseLogger): Promise<void> {
      if (body.purge === false) return
      if (shutdown.failed_to_kick_users.length > 0 && body.force_purge !== true) {
        throw new MatrixError(409, 'M_UNKNOWN', `${shutdown.failed_to_kick_users.length} members could not be removed, so the room was not purged (force_purge purges it anyway)`, { ...shutdown })
      }
      const events = await purgeRoom(db, roomId)
      log.info({ roomId, events }, 'admin purged a room')
    }

    const nothingShutDown: RoomShutdown = { kicked_users: [], failed_to_kick_users: [], local_aliases: [], new_room_id: null }

    app.route<{ Params: { roomId: string }; Body: RoomDelete | null }>({
      method: 'DELETE',
      url: '/_synapse/admin/v1/rooms/:roomId',
      schema: roomDeleteSchema,
      handler: async (request) => {
        const { userId: adminId } = await requireAdmin(request)
        const body = request.body ?? {}
        const target = await prepareDeletion(request.params.roomId, adminId, body)
        if (target === undefined) return nothingShutDown
        const shutdown = await shutDownRoom(target.roomId, body, target.replacementOwner, request.log)
        await purgeAfter(target.roomId, body, shutdown, request.log)
        return shutdown
      },
    })

    app.route<{ Params: { roomId: string }; Body: { user_id?: string } | null }>({
      method: 'POST',
      url: '/_synapse/admin/v1/rooms/:roomId/make_room_admin',
      schema: { params: roomParams, body: { type: ['object', 'null'], properties: { user_id: idParam } } },
      handler: async (request) => {
        const { userId: adminId } = await requireAdmin(request)
        const roomId = checkRoomId(request.params.roomId)
        if ((await getRoomHead(db, roomId)) === undefined) throw notFound('Room not found')
        const target = await existingUser(request.body?.user_id ?? adminId)
        const state = await getCurrentState(db, roomId)
        const roomState = roomStateOf(state)
        const levels = powerLevels(roomState)
        // The joined member with the most power acts (every member is local: no federation).
        const joined = state.filter((e) => e.type === 'm.room.member' && e.membership === 'join').map((e) => e.stateKey)
        const actor = joined.sort((a, b) => levels.user(b) - levels.user(a) || (a < b ? -1 : 1))[0]
        if (actor === undefined || levels.user(actor) < levels.required('m.room.power_levels', true)) throw new MatrixError(400, 'M_UNKNOWN', 'No local member in the room can grant power')
        const granted = levels.user(actor)
        if (levels.user(target) < granted) {
          const content = roomState.get(stateKey('m.room.power_levels', ''))?.content ?? {}
          const users = typeof content['users'] === 'object' && content['users'] !== null ? content['users'] : {}
          try {
            await services.sender.send({ requestId: randomUUID(), roomId, events: [{ type: 'm.room.power_levels', state_key: '', sender: actor, content: { ...content, users: { ...users, [target]: granted } } }] })
          } catch (err) {
            if (err instanceof RejectedEventError) throw new MatrixError(400, 'M_UNKNOWN', `No local member in the room can grant power: ${err.reason}`)
            throw err
          }
        }
        const membership = state.find((e) => e.type === 'm.room.member' && e.stateKey === target)?.membership
        const joinRule = state.find((e) => e.type === 'm.room.join_rules' && e.stateKey === '')?.content['join_rule']
        if (membership !== 'join' && membership !== 'invite' && joinRule !== 'public') {
          await services.sender.send({ requestId: randomUUID(), roomId, events: [{ type: 'm.room.member', state_key: target, sender: actor, content: { membership: 'invite' } }] })
        }
        request.log.info({ roomId, userId: target, actor, level: granted }, 'admin made a room admin')
        return {}
      },
    })

    // The asynchronous form: answered with a delete_id at once, the work going on in this
    // process, its progress and options in `room_deletions` so that any api worker answers the
    // status, and resumes the deletion if this process stops before it is done.
    app.route<{ Params: { roomId: string }; Body: RoomDelete | null }>({
      method: 'DELETE',
      url: '/_synapse/admin/v2/rooms/:roomId',
      schema: roomDeleteSchema,
      handler: async (request) => {
        const { userId: adminId } = await requireAdmin(request)
        const body = request.body ?? {}
        const target = await prepareDeletion(request.params.roomId, adminId, body)
        const deleteId = randomAlphanumeric(16)
        // The options a resume needs (the block is done): the replacement owner as checked.
        const { block: _block, new_room_user_id: _owner, ...options } = body
        const params: RoomDelete = { ...options, ...(target?.replacementOwner !== undefined && { new_room_user_id: target.replacementOwner }) }
        await startRoomDeletion(db, { deleteId, roomId: checkRoomId(request.params.roomId), now: runtime.clock(), params })
        if (target === undefined) {
          await updateRoomDeletion(db, deleteId, { status: 'complete', shutdown: nothingShutDown })
          return { delete_id: deleteId }
        }
        void runDeletion(deleteId, request.log)
        return { delete_id: deleteId }
      },
    })

    /**
     * Runs an asynchronous deletion from where it got to, under its claim (storage/admin.ts
     * `claimRoomDeletion`): nothing when another process runs it or it is finished. A deletion
     * cut short by this process closing is left for a resume, not marked failed.
     */
    const deletions = resumableJobs(app, {
      what: 'room deletion',
      unfinished: () => unfinishedRoomDeletions(db),
      work: async (deleteId, log) => {
        await claimRoomDeletion(db, deleteId, async ({ roomId, status, params, shutdown }) => {
          if (status !== 'shutting_down' && status !== 'purging') return
          const body = params as RoomDelete
          try {
            let done = shutdown
            if (status === 'shutting_down' || done === undefined) {
              done = await shutDownRoom(roomId, body, body.new_room_user_id, log)
              await updateRoomDeletion(db, deleteId, { status: 'purging', shutdown: done })
            }
            await purgeAfter(roomId, body, done, log)
            await updateRoomDeletion(db, deleteId, { status: 'complete' })
          } catch (err) {
            if (deletions.closing) {
              log.warn({ err, roomId }, 'room deletion interrupted by the shutdown; it resumes later')
              return
            }
            log.error({ err, roomId }, 'room deletion failed')
            await updateRoomDeletion(db, deleteId, { status: 'failed', error: err instanceof Error ? err.message : String(err) }).catch((e: unknown) =>
              log.error({ err: e }, 'could not record a failed room deletion'),
            )
          }
        })
      },
    })
    const runDeletion = (deleteId: string, log: FastifyBaseLogger) => deletions.run(deleteId, log.child({ deleteId }))

    /** Asking the status of an unfinished deletion resumes it if no process is running it (a no-op otherwise). */
    function resumeIfStopped(deletion: RoomDeletion, log: FastifyBaseLogger): void {
      if (!deletions.closing && (deletion.status === 'shutting_down' || deletion.status === 'purging')) void runDeletion(deletion.delete_id, log)
    }

    app.route<{ Params: { roomId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v2/rooms/:roomId/delete_status',
      schema: { params: roomParams },
      handler: async (request) => {
        await requireAdmin(request)
        const results = await roomDeletions(db, { roomId: checkRoomId(request.params.roomId) })
        if (results.length === 0) throw notFound('No deletion of this room')
        for (const deletion of results) resumeIfStopped(deletion, request.log)
        return { results: results.map(({ room_id: _room, ...deletion }) => deletion) }
      },
    })

    app.route<{ Params: { deleteId: string } }>({
      method: 'GET',
      url: '/_synapse/admin/v2/rooms/delete_status/:deleteId',
      schema: { params: { type: 'object', required: ['deleteId'], properties: { deleteId: { type: 'string', minLength: 1, maxLength: 64 } } } },
      handler: async (request) => {
        await requireAdmin(request)
        const [deletion] = await roomDeletions(db, { deleteId: request.params.deleteId })
        if (deletion === undefined) throw notFound('No such deletion')
        resumeIfStopped(deletion, request.log)
        const { delete_id: _id, room_id: _room, ...status } = deletion
        return status
      },
    })

    /** The room the members of a deleted room are moved to (Synapse's `new_room_user_id`): its owner, the message, and them. */
    async function noticeRoom(owner: string, body: RoomDelete, users: readonly string[]): Promise<string> {
      const roomId = generateRoomId(serverName)
      const plan = planRoomCreation(roomId, owner, serverName, { preset: 'public_chat', name: body.room_name ?? defaultNoticeRoomName, power_level_content_override: { users: { [owner]: 100 }, users_default: -10 } }, (await getProfile(db, owner)) ?? {})
      await services.sender.send({ requestId: randomUUID(), roomId, events: plan.events })
      const message = { type: 'm.room.message', sender: owner, content: { msgtype: 'm.text', body: body.message ?? defaultNoticeMessage } }
      await services.sender.send({ requestId: randomUUID(), roomId, events: [message] })
      for (const userId of users) {
        const profile = profileContent((await getProfile(db, userId)) ?? {})
        await services.sender.send({ requestId: randomUUID(), roomId, events: [{ type: 'm.room.member', state_key: userId, sender: userId, content: { membership: 'join', ...profile } }] })
      }
      return roomId
    }

    /** A read of one existing room (404 otherwise) under `/_synapse/admin/v1/rooms/{roomId}`. */
    const roomRead = (suffix: string, read: (summary: Awaited<ReturnType<typeof existingRoom>>) => Promise<unknown>) =>
      app.route<{ Params: { roomId: string } }>({
        method: 'GET',
        url: `/_synapse/admin/v1/rooms/:roomId${suffix}`,
        schema: { params: roomParams },
        handler: async (request) => {
          await requireAdmin(request)
          return read(await existingRoom(request.params.roomId))
        },
      })
    roomRead('', async (summary) => summary)
    roomRead('/members', async ({ room_id: roomId }) => {
      const members = await adminRoomMembers(db, roomId)
      return { members, total: members.length }
    })
    roomRead('/state', async ({ room_id: roomId }) => {
      const state = await getCurrentState(db, roomId)
      return { state: state.map((s) => ({ type: s.type, state_key: s.stateKey, sender: s.sender, content: s.content, event_id: s.eventId, room_id: roomId })) }
    })
  }
}
