import { expect } from 'chai'
import type { NewEvent } from '../../../persisters/new-event.js'
import { RejectedEventError } from '../../../persisters/persist-errors.js'
import type { Persister } from '../../../persisters/persister.js'
import { getCurrentState } from '../../../storage/events/event-store.js'
import { createTestDatabase } from '../../support/db.js'
import type { TestDatabase } from '../../support/db.js'
import { createRoomEvents, eventCount, member, message, newRoomId, rejection, send, startPersister, user } from './harness.js'

const alice = user('alice') // creator, power 100
const mod = user('mod') // power 50
const bob = user('bob') // power 0
const carol = user('carol')

/**
 * Who may join, send, set state, kick, ban and redact, as the persister enforces it: every
 * refusal is ES_FORBIDDEN (403) with the rule's reason and leaves the room unchanged.
 */
describe('persister authorization', () => {
  let t: TestDatabase
  let persister: Persister
  let roomId: string

  before(async () => {
    t = await createTestDatabase()
    persister = await startPersister(t.db, { writer: 'p1' })
  })
  after(async () => {
    await persister.close()
    await t.drop()
  })

  async function room(joinRule: 'public' | 'invite', joined: readonly string[]): Promise<string> {
    const id = newRoomId()
    await send(persister, id, ...createRoomEvents(alice, { joinRule: 'public', users: { [mod]: 50 } }))
    for (const u of joined) await send(persister, id, member(u, u, 'join'))
    if (joinRule === 'invite') {
      await send(persister, id, { type: 'm.room.join_rules', state_key: '', sender: alice, content: { join_rule: 'invite' } })
    }
    return id
  }

  async function membership(id: string, userId: string): Promise<string | null | undefined> {
    return (await getCurrentState(t.db, id)).find((s) => s.type === 'm.room.member' && s.stateKey === userId)?.membership
  }

  async function expectForbidden(id: string, event: NewEvent, reason: RegExp): Promise<void> {
    const before = await eventCount(t.db, id)
    const err = await rejection(send(persister, id, event))
    expect(err).to.be.instanceOf(RejectedEventError)
    expect((err as RejectedEventError).code).to.equal('ES_FORBIDDEN')
    expect((err as RejectedEventError).reason).to.match(reason)
    expect(await eventCount(t.db, id)).to.equal(before)
  }

  describe('join', () => {
    beforeEach(async () => {
      roomId = await room('invite', [mod])
    })

    it('should refuse an uninvited join to an invite-only room and allow it once invited', async () => {
      await expectForbidden(roomId, member(bob, bob, 'join'), /needs an invite to join a room with join rule invite/)
      await send(persister, roomId, member(alice, bob, 'invite'))
      await send(persister, roomId, member(bob, bob, 'join'))
      expect(await membership(roomId, bob)).to.equal('join')
    })

    it('should allow anyone to join a public room but nobody to join for someone else', async () => {
      const open = await room('public', [])
      await send(persister, open, member(bob, bob, 'join'))
      expect(await membership(open, bob)).to.equal('join')
      await expectForbidden(open, member(bob, carol, 'join'), /cannot join on behalf of/)
    })

    it('should refuse senders from other servers', async () => {
      const open = await room('public', [])
      await expectForbidden(open, member('@eve:elsewhere.test', '@eve:elsewhere.test', 'join'), /not a user of hs\.test/)
    })
  })

  describe('send and set state', () => {
    beforeEach(async () => {
      roomId = await room('public', [mod, bob])
    })

    it('should refuse messages from non-members and accept them from members', async () => {
      await expectForbidden(roomId, message(carol, 'hi'), /is not joined to the room \(membership: leave\)/)
      expect(await send(persister, roomId, message(bob, 'hi'))).to.have.length(1)
    })

    it('should refuse state below state_default and power level changes above the sender', async () => {
      await expectForbidden(roomId, { type: 'm.room.name', state_key: '', sender: bob, content: { name: 'x' } }, /power level 0 is below the 50/)
      await send(persister, roomId, { type: 'm.room.name', state_key: '', sender: mod, content: { name: 'ok' } })
      await expectForbidden(
        roomId,
        { type: 'm.room.power_levels', state_key: '', sender: mod, content: { users: { [alice]: 100, [mod]: 100 } } },
        /below the new users/,
      )
      const name = (await getCurrentState(t.db, roomId)).find((s) => s.type === 'm.room.name')
      expect(name?.content).to.deep.equal({ name: 'ok' })
    })
  })

  describe('kick and ban', () => {
    beforeEach(async () => {
      roomId = await room('public', [mod, bob, carol])
    })

    it('should refuse a kick without the kick level and allow it with it', async () => {
      await expectForbidden(roomId, member(bob, carol, 'leave'), /below the 50 required to kick/)
      await send(persister, roomId, member(mod, carol, 'leave'))
      expect(await membership(roomId, carol)).to.equal('leave')
    })

    it('should refuse kicking someone of equal or higher power', async () => {
      await expectForbidden(roomId, member(mod, alice, 'leave'), /power level 100 is not below the sender's 50/)
    })

    it('should ban, keep the banned user out, and let a moderator unban', async () => {
      await expectForbidden(roomId, member(bob, carol, 'ban'), /below the 50 required to ban/)
      await send(persister, roomId, member(mod, carol, 'ban'))
      expect(await membership(roomId, carol)).to.equal('ban')
      await expectForbidden(roomId, member(carol, carol, 'join'), /is banned/)
      await expectForbidden(roomId, member(bob, carol, 'leave'), /required to unban/)
      await send(persister, roomId, member(mod, carol, 'leave'))
      await send(persister, roomId, member(carol, carol, 'join'))
      expect(await membership(roomId, carol)).to.equal('join')
    })
  })

  describe('redact', () => {
    beforeEach(async () => {
      roomId = await room('public', [mod, bob, carol])
    })

    it('should let users redact their own events and moderators anyone else', async () => {
      const [own] = await send(persister, roomId, message(bob, 'mine'))
      const [other] = await send(persister, roomId, message(carol, 'theirs'))
      await expectForbidden(
        roomId,
        { type: 'm.room.redaction', sender: bob, content: {}, redacts: other!.event_id },
        /below the redact level 50, and the redacted event was sent by/,
      )
      const [r1] = await send(persister, roomId, { type: 'm.room.redaction', sender: bob, content: {}, redacts: own!.event_id })
      const [r2] = await send(persister, roomId, { type: 'm.room.redaction', sender: mod, content: { redacts: other!.event_id } })
      const rows = await t.db.selectFrom('redactions').selectAll().where('event_id', 'in', [r1!.event_id, r2!.event_id]).execute()
      expect(rows.map((r) => [r.event_id, r.redacts]).sort()).to.deep.equal(
        [
          [r1!.event_id, own!.event_id],
          [r2!.event_id, other!.event_id],
        ].sort(),
      )
      const event = await t.db.selectFrom('events').select('redacts').where('event_id', '=', r1!.event_id).executeTakeFirstOrThrow()
      expect(event.redacts).to.equal(own!.event_id)
    })
  })
})
