import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import {
  ClientEvent,
  createClient,
  EventType,
  NotificationCountType,
  PendingEventOrdering,
  ReceiptType,
  RoomEvent,
  SyncState,
  type MatrixClient,
  type MatrixEvent,
  type Room,
} from 'matrix-js-sdk'
import { logger as sdkLogger, type Logger } from 'matrix-js-sdk/lib/logger.js'
import { SlidingSync } from 'matrix-js-sdk/lib/sliding-sync.js'
import { createTestDatabase, redisUrl, type TestDatabase } from '../../support/db.js'
import { eventually } from '../reliability/load.js'
import { register, startTestCluster, type TestCluster } from '../reliability/test-cluster.js'
import { unexpectedErrors } from './server-answers.js'

const messages = 100

/**
 * The SDK logs every sync at debug level; the tests' output is about Myelin. Clients get a
 * silent logger; the SDK's module-wide `loglevel` logger (which MatrixRTC sessions take child
 * loggers from, each reset to debug level but built with its parent's method factory) writes
 * nowhere.
 */
const silent: Logger = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, getChild: () => silent }
const rootLogger = sdkLogger as unknown as { methodFactory: () => () => void; rebuild(): void }
rootLogger.methodFactory = () => () => {}
rootLogger.rebuild()

/**
 * matrix-js-sdk arms a timer per HTTP request (its AbortSignal.timeout ponyfill, 80-110 s) and a
 * 6 h capabilities poll, and clears neither when the client stops: they would hold mocha's event
 * loop for minutes after the test. While the SDK runs, new timers are unref'd (the cluster's
 * child processes keep the loop alive meanwhile). Returns the restore function.
 */
function unrefNewTimers(): () => void {
  const original = globalThis.setTimeout
  const unrefing = (...args: Parameters<typeof setTimeout>) => original(...args).unref()
  globalThis.setTimeout = Object.assign(unrefing, original) as typeof setTimeout
  return () => {
    globalThis.setTimeout = original
  }
}

/**
 * A `fetch` for the SDK that records, from the wire, the transaction ID of every send (its URL)
 * and the `unsigned.transaction_id` each synced timeline event carried, by event ID.
 */
function recordingFetch(): { fetchFn: typeof fetch; txnOfSend: Map<string, string>; txnInSync: Map<string, unknown> } {
  const txnOfSend = new Map<string, string>()
  const txnInSync = new Map<string, unknown>()
  const fetchFn: typeof fetch = async (input, init) => {
    const res = await fetch(input, init)
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url)
    const send = /\/rooms\/[^/]+\/send\/[^/]+\/([^/]+)$/.exec(url.pathname)
    if (res.ok && (send !== null || url.pathname.endsWith('/sync'))) {
      const body = (await res.clone().json()) as {
        event_id?: string
        rooms?: { join?: Record<string, { timeline?: { events?: { event_id: string; unsigned?: { transaction_id?: unknown } }[] } }> }
      }
      if (send !== null) txnOfSend.set(body.event_id as string, decodeURIComponent(send[1] as string))
      for (const room of Object.values(body.rooms?.join ?? {})) {
        for (const event of room.timeline?.events ?? []) txnInSync.set(event.event_id, event.unsigned?.transaction_id)
      }
    }
    return res
  }
  return { fetchFn, txnOfSend, txnInSync }
}

interface Session {
  readonly access_token: string
  readonly user_id: string
  readonly device_id: string
}

/**
 * A started matrix-js-sdk client, resolved once its first sync is PREPARED. Local echoes wait
 * in `room.getPendingEvents()` until their remote echo arrives (PendingEventOrdering.Detached),
 * which the SDK matches by `unsigned.transaction_id`.
 */
async function startSdkClient(baseUrl: string, session: Session, fetchFn?: typeof fetch, options: { crypto?: boolean } = {}): Promise<MatrixClient> {
  const client = createClient({
    baseUrl,
    accessToken: session.access_token,
    userId: session.user_id,
    deviceId: session.device_id,
    logger: silent,
    ...(fetchFn !== undefined && { fetchFn }),
  })
  const prepared = new Promise<void>((resolve, reject) => {
    client.on(ClientEvent.Sync, (state: SyncState, _previous: SyncState | null, data?: { error?: Error }) => {
      if (state === SyncState.Prepared) resolve()
      if (state === SyncState.Error) reject(data?.error ?? new Error('first sync failed'))
    })
  })
  if (options.crypto) await client.initRustCrypto({ useIndexedDB: false })
  await client.startClient({ initialSyncLimit: 10, pendingEventOrdering: PendingEventOrdering.Detached })
  await prepared
  return client
}

/**
 * A started matrix-js-sdk client syncing with simplified sliding sync (MSC4186, as Element Web's
 * labs and Element X do), resolved once its first response is processed: one list of every room
 * (newest first) with all their state and 20 events each.
 */
async function startSlidingClient(baseUrl: string, session: Session, options: { crypto?: boolean } = {}): Promise<MatrixClient> {
  const client = createClient({ baseUrl, accessToken: session.access_token, userId: session.user_id, deviceId: session.device_id, logger: silent })
  if (options.crypto) await client.initRustCrypto({ useIndexedDB: false })
  const config = { timeline_limit: 20, required_state: [['*', '*']] }
  const slidingSync = new SlidingSync(baseUrl, new Map([['all', { ranges: [[0, 99]], ...config }]]), config, client, 10_000)
  const prepared = new Promise<void>((resolve, reject) => {
    client.on(ClientEvent.Sync, (state: SyncState, _previous: SyncState | null, data?: { error?: Error }) => {
      if (state === SyncState.Prepared) resolve()
      if (state === SyncState.Error) reject(data?.error ?? new Error('first sliding sync failed'))
    })
  })
  await client.startClient({ slidingSync, pendingEventOrdering: PendingEventOrdering.Detached })
  await prepared
  return client
}

/**
 * `owner` creates an end-to-end encrypted room named `name` and invites `guest`, who joins; each
 * then sends a message the other must decrypt (the SDKs publish, query and claim keys, and send
 * room keys to device). Returns the room, and the owner's message with its event ID.
 */
async function encryptedExchange(owner: MatrixClient, guest: MatrixClient, guestUserId: string, name: string): Promise<{ roomId: string; ownerEventId: string; ownerBody: string }> {
  const { room_id: roomId } = await owner.createRoom({
    name,
    invite: [guestUserId],
    initial_state: [{ type: 'm.room.encryption', state_key: '', content: { algorithm: 'm.megolm.v1.aes-sha2' } }],
  })
  await eventually(`${name}: the guest sees the invite`, () => guest.getRoom(roomId)?.getMyMembership() === 'invite')
  await guest.joinRoom(roomId)
  await eventually(`${name}: the owner sees the guest join`, () => owner.getRoom(roomId)?.getMember(guestUserId)?.membership === 'join')
  await eventually(`${name}: the guest knows the room is encrypted`, () => guest.getRoom(roomId)?.hasEncryptionStateEvent() === true)
  const clearBodies = (client: MatrixClient) =>
    (client.getRoom(roomId)?.getLiveTimeline().getEvents() ?? []).filter((e) => e.getType() === EventType.RoomMessage).map((e) => e.getContent()['body'])
  const ownerBody = `only the guest of ${name} can read this`
  const { event_id: ownerEventId } = await owner.sendTextMessage(roomId, ownerBody)
  await eventually(`${name}: the guest decrypts the owner’s message`, () => clearBodies(guest).includes(ownerBody), 30_000)
  const guestBody = `and only the owner of ${name} this`
  await guest.sendTextMessage(roomId, guestBody)
  await eventually(`${name}: the owner decrypts the guest’s message`, () => clearBodies(owner).includes(guestBody), 30_000)
  return { roomId, ownerEventId, ownerBody }
}

/** Bodies of the live timeline's `m.room.message` events, in timeline order. */
function liveBodies(room: Room): string[] {
  return room
    .getLiveTimeline()
    .getEvents()
    .filter((e) => e.getType() === EventType.RoomMessage)
    .map((e) => e.getContent()['body'] as string)
}

/**
 * matrix-js-sdk 43 (the version the project pins) against a real `myelin cluster`: 2 persisters,
 * 1 api worker, the router, Redis. Everything goes through the SDK's own HTTP client.
 */
describe('matrix-js-sdk against a myelin cluster', function () {
  this.timeout(120_000)
  let t: TestDatabase
  let dir: string
  let cluster: TestCluster
  let base: string
  const clients: MatrixClient[] = []
  let restoreTimers: (() => void) | undefined

  before(async () => {
    restoreTimers = unrefNewTimers()
    t = await createTestDatabase()
    dir = await mkdtemp(join(tmpdir(), 'myelin-sdk-'))
    cluster = await startTestCluster({ databaseUrl: t.url, redisUrl: redisUrl(), dataDir: dir })
    base = cluster.run.ready.client_url
  })

  after(async () => {
    for (const client of clients) client.stopClient()
    restoreTimers?.()
    await cluster?.stop()
    await t?.drop()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  it('two clients exchange 100 messages: both see all in order through sync, local echoes resolve, scroll-back returns the history', async () => {
    const [aliceSession, bobSession] = [await register(base, 'alice'), await register(base, 'bob')]
    const wire = new Map([
      [aliceSession.user_id, recordingFetch()],
      [bobSession.user_id, recordingFetch()],
    ])
    const alice = await startSdkClient(base, aliceSession, wire.get(aliceSession.user_id)!.fetchFn)
    const bob = await startSdkClient(base, bobSession, wire.get(bobSession.user_id)!.fetchFn)
    clients.push(alice, bob)

    const { room_id: roomId } = await alice.createRoom({ name: 'sdk room', invite: [bobSession.user_id] })
    await eventually('bob sees the invite', () => bob.getRoom(roomId)?.getMyMembership() === 'invite')
    await bob.joinRoom(roomId)
    await eventually('alice sees bob join', () => alice.getRoom(roomId)?.getMember(bobSession.user_id)?.membership === 'join')

    // Every message event each client's sync delivers live, in arrival order.
    const seen = new Map<MatrixClient, MatrixEvent[]>([
      [alice, []],
      [bob, []],
    ])
    for (const [client, events] of seen) {
      client.on(RoomEvent.Timeline, (event: MatrixEvent, room: Room | undefined, toStartOfTimeline: boolean | undefined) => {
        if (room?.roomId === roomId && !toStartOfTimeline && event.getType() === EventType.RoomMessage) events.push(event)
      })
    }

    const sent: { body: string; eventId: string; sender: string }[] = []
    for (let i = 0; i < messages; i++) {
      const [client, session] = i % 2 === 0 ? [alice, aliceSession] : [bob, bobSession]
      const body = `message ${i}`
      const { event_id } = await client.sendTextMessage(roomId, body)
      sent.push({ body, eventId: event_id, sender: session.user_id })
    }

    for (const [client, events] of seen) {
      const name = client === alice ? 'alice' : 'bob'
      await eventually(`${name} receives all ${messages} messages`, () => events.length >= messages)
      expect(events.map((e) => e.getContent()['body']), `${name}: every message once, in order`).to.deep.equal(sent.map((s) => s.body))
      expect(events.map((e) => e.getId()), `${name}: the IDs the sends answered`).to.deep.equal(sent.map((s) => s.eventId))
      expect(events.map((e) => e.getSender())).to.deep.equal(sent.map((s) => s.sender))
      const room = client.getRoom(roomId)!
      // Local echo: the sender's pending events all resolved into their remote echoes; none left
      // pending, none shown twice.
      expect(room.getPendingEvents(), `${name}: no local echo left pending`).to.deep.equal([])
      const unsent = room.getLiveTimeline().getEvents().filter((e) => e.status !== null)
      expect(unsent.map((e) => `${e.getId()}: ${e.status}`), `${name}: every live event is sent`).to.deep.equal([])
      const live = liveBodies(room)
      expect(new Set(live).size, `${name}: no message twice in the live timeline`).to.equal(live.length)
      expect(live.slice(-10)).to.deep.equal(sent.slice(-10).map((s) => s.body))
    }

    // On the wire: each sync carried, on the syncing user's own events only, the transaction ID
    // the SDK sent them with (the SDK matches a local echo by it when the sync comes first).
    for (const [userId, { txnOfSend, txnInSync }] of wire) {
      for (const { eventId, sender } of sent) {
        expect(txnInSync.has(eventId), `${userId} synced ${eventId}`).to.equal(true)
        expect(txnInSync.get(eventId), `transaction_id of ${eventId} in ${userId}'s sync`).to.equal(sender === userId ? txnOfSend.get(eventId) : undefined)
      }
      expect(txnOfSend.size).to.equal(messages / 2)
    }

    // Scroll-back: a fresh client (initial sync of 5 events) pages back through /messages.
    const reader = await startSdkClient(base, bobSession)
    clients.push(reader)
    const room = reader.getRoom(roomId)!
    expect(liveBodies(room).length, 'the initial sync is limited').to.be.below(messages)
    for (let page = 0; page < 20 && room.getLiveTimeline().getEvents()[0]?.getType() !== EventType.RoomCreate; page++) {
      await reader.scrollback(room, 30)
    }
    expect(room.getLiveTimeline().getEvents()[0]?.getType(), 'scrolled back to the room creation').to.equal(EventType.RoomCreate)
    expect(liveBodies(room), 'the whole history, in order').to.deep.equal(sent.map((s) => s.body))

    // No request of the three clients met a missing route or a server error.
    expect(unexpectedErrors(cluster), 'error answers the SDK met').to.deep.equal([])
  })

  it("read receipts, the fully read marker, to-device messages, typing and presence between two clients", async () => {
    const [carolSession, daveSession] = [await register(base, 'carol'), await register(base, 'dave')]
    const carol = await startSdkClient(base, carolSession)
    const dave = await startSdkClient(base, daveSession)
    clients.push(carol, dave)
    const { room_id: roomId } = await carol.createRoom({ name: 'receipts', invite: [daveSession.user_id] })
    await eventually('dave sees the invite', () => dave.getRoom(roomId)?.getMyMembership() === 'invite')
    await dave.joinRoom(roomId)
    const { event_id: first } = await carol.sendTextMessage(roomId, 'one')
    const { event_id: second } = await carol.sendTextMessage(roomId, 'two')
    const daveRoom = () => dave.getRoom(roomId)!
    await eventually('dave receives both messages', () => daveRoom().findEventById(second) !== undefined)
    // The server's unread counts, which the SDK shows for unencrypted rooms.
    await eventually('dave has 2 unread notifications', () => daveRoom().getUnreadNotificationCount(NotificationCountType.Total) === 2)

    await dave.sendReadReceipt(daveRoom().findEventById(first)!, ReceiptType.Read)
    await eventually("carol sees dave's receipt on the first message", () => carol.getRoom(roomId)?.getEventReadUpTo(daveSession.user_id, true) === first)
    await dave.setRoomReadMarkers(roomId, second, daveRoom().findEventById(second)!)
    await eventually("carol sees dave's receipt move to the second message", () => carol.getRoom(roomId)?.getEventReadUpTo(daveSession.user_id, true) === second)
    await eventually("dave's fully read marker is the second message", () => daveRoom().getAccountData('m.fully_read')?.getContent()['event_id'] === second)
    // A private receipt is for its owner only: carol's view of dave does not change.
    const { event_id: third } = await carol.sendTextMessage(roomId, 'three')
    await eventually('dave receives the third message', () => daveRoom().findEventById(third) !== undefined)
    await eventually('dave has 1 unread notification, the message after his receipt', () => daveRoom().getUnreadNotificationCount(NotificationCountType.Total) === 1)
    await dave.sendReadReceipt(daveRoom().findEventById(third)!, ReceiptType.ReadPrivate)
    await eventually("dave sees his private receipt", () => daveRoom().getEventReadUpTo(daveSession.user_id, true) === third)
    const { event_id: fourth } = await dave.sendTextMessage(roomId, 'four')
    await eventually('carol receives the fourth message', () => carol.getRoom(roomId)?.findEventById(fourth) !== undefined)
    expect(carol.getRoom(roomId)!.getReceiptsForEvent(carol.getRoom(roomId)!.findEventById(third)!).map((r) => r.userId)).to.not.include(daveSession.user_id)

    // A to-device message from carol reaches dave's device.
    const received: MatrixEvent[] = []
    dave.on(ClientEvent.ToDeviceEvent, (event: MatrixEvent) => received.push(event))
    await carol.sendToDevice('org.example.ping', new Map([[daveSession.user_id, new Map([[daveSession.device_id, { n: 1 }]])]]))
    await eventually('dave receives the to-device message', () => received.some((e) => e.getType() === 'org.example.ping'))
    const ping = received.find((e) => e.getType() === 'org.example.ping')!
    expect([ping.getSender(), ping.getContent()]).to.deep.equal([carolSession.user_id, { n: 1 }])

    // Typing: carol sees dave start and stop.
    const daveAsCarolSees = () => carol.getRoom(roomId)?.getMember(daveSession.user_id)
    await dave.sendTyping(roomId, true, 30_000)
    await eventually('carol sees dave typing', () => daveAsCarolSees()?.typing === true)
    await dave.sendTyping(roomId, false, 0)
    await eventually('carol sees dave stop typing', () => daveAsCarolSees()?.typing === false)

    // Presence: syncing made dave online; carol sees him go idle with a status message.
    await eventually('carol sees dave online', () => carol.getUser(daveSession.user_id)?.presence === 'online')
    await dave.setPresence({ presence: 'unavailable', status_msg: 'away' })
    await eventually('carol sees dave idle', () => carol.getUser(daveSession.user_id)?.presence === 'unavailable')
    expect(carol.getUser(daveSession.user_id)?.presenceStatusMsg).to.equal('away')

    expect(unexpectedErrors(cluster), 'error answers the SDK met').to.deep.equal([])
  })

  it('room upgrade: one client upgrades, the other follows the tombstone to the replacement, which names its predecessor', async () => {
    const [ownerSession, memberSession] = [await register(base, 'upgrader'), await register(base, 'follower')]
    const owner = await startSdkClient(base, ownerSession)
    const member = await startSdkClient(base, memberSession)
    clients.push(owner, member)
    const { room_id: oldRoom } = await owner.createRoom({ name: 'to upgrade', invite: [memberSession.user_id] })
    await eventually('the member sees the invite', () => member.getRoom(oldRoom)?.getMyMembership() === 'invite')
    await member.joinRoom(oldRoom)
    const { replacement_room: newRoom } = await owner.upgradeRoom(oldRoom, '11')
    await eventually('the member sees the tombstone', () => member.getRoom(oldRoom)?.currentState.getStateEvents('m.room.tombstone', '')?.getContent()['replacement_room'] === newRoom)
    // An invite-only room: the upgrader invites its members, as Element offers to when upgrading.
    await owner.invite(newRoom, memberSession.user_id)
    await eventually('the member sees the invite to the replacement', () => member.getRoom(newRoom)?.getMyMembership() === 'invite')
    await member.joinRoom(newRoom)
    await eventually('the member is in the replacement', () => member.getRoom(newRoom)?.getMyMembership() === 'join')
    expect(member.getRoom(newRoom)?.findPredecessor()?.roomId).to.equal(oldRoom)
    expect(member.getRoom(newRoom)?.name).to.equal('to upgrade')
    expect(unexpectedErrors(cluster), 'error answers the SDK met').to.deep.equal([])
  })

  it('knocking: a client knocks through the router on a knock-only room, a moderator sees it and lets them in', async () => {
    const [modSession, visitorSession] = [await register(base, 'moderator'), await register(base, 'visitor')]
    const mod = await startSdkClient(base, modSession)
    const visitor = await startSdkClient(base, visitorSession)
    clients.push(mod, visitor)
    const { room_id: roomId } = await mod.createRoom({ name: 'knock only', initial_state: [{ type: 'm.room.join_rules', state_key: '', content: { join_rule: 'knock' } }] })
    await visitor.knockRoom(roomId, { reason: 'hello' })
    await eventually('the visitor sees its knock', () => visitor.getRoom(roomId)?.getMyMembership() === 'knock')
    await eventually('the moderator sees the knock', () => mod.getRoom(roomId)?.getMember(visitorSession.user_id)?.membership === 'knock')
    await mod.invite(roomId, visitorSession.user_id)
    await eventually('the visitor sees the invite', () => visitor.getRoom(roomId)?.getMyMembership() === 'invite')
    await visitor.joinRoom(roomId)
    await eventually('the moderator sees the visitor join', () => mod.getRoom(roomId)?.getMember(visitorSession.user_id)?.membership === 'join')
    expect(unexpectedErrors(cluster), 'error answers the SDK met').to.deep.equal([])
  })

  it('sliding sync (MSC4186): a client sees an invite, joins, gets the messages of a /sync client in order, and its own sends resolve', async () => {
    const [slidingSession, classicSession] = [await register(base, 'slider'), await register(base, 'classic')]
    const slider = await startSlidingClient(base, slidingSession)
    const classic = await startSdkClient(base, classicSession)
    clients.push(slider, classic)
    const { room_id: roomId } = await classic.createRoom({ name: 'sliding room', invite: [slidingSession.user_id] })
    await eventually('the sliding client sees the invite', () => slider.getRoom(roomId)?.getMyMembership() === 'invite')
    await slider.joinRoom(roomId)
    await eventually('the sliding client is joined, and knows the room by name', () => slider.getRoom(roomId)?.getMyMembership() === 'join' && slider.getRoom(roomId)?.name === 'sliding room')
    await eventually('the /sync client sees the join', () => classic.getRoom(roomId)?.getMember(slidingSession.user_id)?.membership === 'join')

    const live: string[] = []
    slider.on(RoomEvent.Timeline, (event: MatrixEvent, room: Room | undefined, toStartOfTimeline: boolean | undefined) => {
      if (room?.roomId === roomId && !toStartOfTimeline && event.getType() === EventType.RoomMessage && event.getSender() === classicSession.user_id) live.push(event.getContent()['body'] as string)
    })
    const sent: string[] = []
    for (let i = 0; i < 30; i++) {
      sent.push(`classic ${i}`)
      await classic.sendTextMessage(roomId, `classic ${i}`)
    }
    await eventually('the sliding client receives all 30 messages live', () => live.length >= sent.length)
    expect(live, 'every message once, in order').to.deep.equal(sent)

    for (let i = 0; i < 5; i++) await slider.sendTextMessage(roomId, `slider ${i}`)
    const room = slider.getRoom(roomId)!
    await eventually('the sliding client sees its own sends come back', () => liveBodies(room).slice(-5).join() === [0, 1, 2, 3, 4].map((i) => `slider ${i}`).join())
    expect(room.getPendingEvents(), 'no local echo left pending').to.deep.equal([])
    const shown = liveBodies(room)
    expect(new Set(shown).size, 'no message twice in the live timeline').to.equal(shown.length)
    await eventually('the /sync client gets them', () => liveBodies(classic.getRoom(roomId)!).slice(-5).join() === [0, 1, 2, 3, 4].map((i) => `slider ${i}`).join())
    // A state change reaches the sliding client's room state (sliding sync clients take state from required_state only).
    await classic.setRoomName(roomId, 'renamed room')
    await eventually('the sliding client sees the new name', () => slider.getRoom(roomId)?.name === 'renamed room')
    expect(unexpectedErrors(cluster), 'error answers the SDKs met').to.deep.equal([])
  })

  it('files: one client uploads 2 MiB through the router, the other downloads them, authenticated, byte for byte', async () => {
    const [uploaderSession, readerSession] = [await register(base, 'uploader'), await register(base, 'reader')]
    const uploader = await startSdkClient(base, uploaderSession)
    const reader = await startSdkClient(base, readerSession)
    clients.push(uploader, reader)
    // Over the router's 1 MiB replay limit: the body streams through it once.
    const bytes = randomBytes(2 * 1024 * 1024)
    const { content_uri: contentUri } = await uploader.uploadContent(bytes, { name: 'big.bin', type: 'application/octet-stream' })
    const url = reader.mxcUrlToHttp(contentUri, undefined, undefined, undefined, false, true, true)
    expect(url).to.match(/\/_matrix\/client\/v1\/media\/download\//)
    const res = await fetch(url!, { headers: { authorization: `Bearer ${readerSession.access_token}` } })
    expect(res.status).to.equal(200)
    expect(Buffer.compare(Buffer.from(await res.arrayBuffer()), bytes)).to.equal(0)
    expect(unexpectedErrors(cluster), 'error answers the SDK met').to.deep.equal([])
  })

  it('end-to-end encrypted messages between two clients with the rust crypto: keys published, claimed and sent to device, both directions decrypted', async () => {
    const [erinSession, frankSession] = [await register(base, 'erin'), await register(base, 'frank')]
    const erin = await startSdkClient(base, erinSession, undefined, { crypto: true })
    const frank = await startSdkClient(base, frankSession, undefined, { crypto: true })
    clients.push(erin, frank)
    const { roomId, ownerEventId: secretId, ownerBody } = await encryptedExchange(erin, frank, frankSession.user_id, 'secret')

    // What the server stored is ciphertext.
    const stored = await t.db.selectFrom('event_json').select('json').where('event_id', '=', secretId).executeTakeFirstOrThrow()
    expect(JSON.parse(stored.json)).to.include({ type: 'm.room.encrypted' })
    expect(stored.json).to.not.include(ownerBody)

    // Erin turns on key backup: the SDK creates a version and uploads her room keys to it.
    await erin.getCrypto()!.resetKeyBackup()
    const backedUp = () =>
      t.db.selectFrom('e2e_room_keys').select('session_id').where('user_id', '=', erinSession.user_id).where('room_id', '=', roomId).execute()
    await eventually('erin’s room keys are backed up', async () => (await backedUp()).length >= 1, 30_000)
    expect((await erin.getCrypto()!.getActiveSessionBackupVersion()) !== null, 'the SDK trusts the backup it made').to.equal(true)

    // Before the backup existed, the SDK asked for it, and for keys of sessions it could not
    // decrypt yet, and was told there are none (404 M_NOT_FOUND): the answers it expects.
    const errors = unexpectedErrors(cluster).filter((answer) => !answer.startsWith('404 GET /_matrix/client/v3/room_keys/'))
    expect(errors, 'error answers the SDK met').to.deep.equal([])
  })

  it('sliding sync (MSC4186) with the rust crypto: keys and room keys travel through its e2ee and to_device extensions, both directions decrypted', async () => {
    const [slidingSession, classicSession] = [await register(base, 'slidingcrypto'), await register(base, 'classiccrypto')]
    const slider = await startSlidingClient(base, slidingSession, { crypto: true })
    const classic = await startSdkClient(base, classicSession, undefined, { crypto: true })
    clients.push(slider, classic)
    await encryptedExchange(classic, slider, slidingSession.user_id, 'sliding secret')
    // No key backup exists: the SDKs asking for one are told so (404), as they expect.
    const errors = unexpectedErrors(cluster).filter((answer) => !answer.startsWith('404 GET /_matrix/client/v3/room_keys/'))
    expect(errors, 'error answers the SDKs met').to.deep.equal([])
  })
})
