import { expect } from 'chai'
import fc from 'fast-check'
import {
  authEventKeys,
  authorizeEvent,
  checkEventSize,
  maxPduBytes,
  powerLevels,
  stateKey,
} from '../../../persisters/auth-rules.js'
import type { AuthContext, AuthEventInput, RoomState, RoomStateEvent } from '../../../persisters/auth-rules.js'
import { canonicalJsonBytes } from '../../../storage/events/canonical-json.js'
import { isStorageError } from '../../../storage/errors.js'

const roomId = '!room:x'
/** Creator, power level 100. */
const alice = '@alice:x'
/** Moderator, power level 50. */
const bob = '@bob:x'
/** Plain member, power level 0 (users_default). */
const carol = '@carol:x'
/** Not in the room unless a case says so. */
const dave = '@dave:x'
/** A second moderator at 50, for equal-level cases. */
const erin = '@erin:x'

interface RoomSetup {
  /** `m.room.join_rules` join_rule; `null` for no join rules event. Default `invite`. */
  joinRule?: string | null
  /** Memberships on top of the defaults (alice, bob, carol, erin joined). */
  members?: Record<string, string>
  /** Merged into the default power levels content; `null` for no power levels event. */
  powerLevels?: Record<string, unknown> | null
}

function stateEvent(type: string, key: string, sender: string, content: Record<string, unknown>): RoomStateEvent {
  return { type, state_key: key, sender, content }
}

/** A room created by alice, with power levels alice 100, bob 50, erin 50 and the given overrides. */
function room(setup: RoomSetup = {}): Map<string, RoomStateEvent> {
  const state = new Map<string, RoomStateEvent>()
  const put = (event: RoomStateEvent): void => {
    state.set(stateKey(event.type, event.state_key), event)
  }
  put(stateEvent('m.room.create', '', alice, { room_version: '11' }))
  const members = { [alice]: 'join', [bob]: 'join', [carol]: 'join', [erin]: 'join', ...setup.members }
  for (const [user, membership] of Object.entries(members)) put(stateEvent('m.room.member', user, user, { membership }))
  if (setup.powerLevels !== null) {
    put(stateEvent('m.room.power_levels', '', alice, { users: { [alice]: 100, [bob]: 50, [erin]: 50 }, ...setup.powerLevels }))
  }
  if (setup.joinRule !== null) put(stateEvent('m.room.join_rules', '', alice, { join_rule: setup.joinRule ?? 'invite' }))
  return state
}

function member(sender: string, target: string, membership: string, extra: Record<string, unknown> = {}): AuthEventInput {
  return { type: 'm.room.member', sender, state_key: target, content: { membership, ...extra }, room_id: roomId }
}

function message(sender: string, type = 'm.room.message'): AuthEventInput {
  return { type, sender, content: { msgtype: 'm.text', body: 'hello' }, room_id: roomId }
}

function state(sender: string, type: string, content: Record<string, unknown>, key = ''): AuthEventInput {
  return { type, sender, state_key: key, content, room_id: roomId }
}

function redaction(sender: string): AuthEventInput {
  return { type: 'm.room.redaction', sender, content: { redacts: '$target' }, room_id: roomId }
}

function powerLevelsChange(sender: string, content: Record<string, unknown>): AuthEventInput {
  return state(sender, 'm.room.power_levels', { users: { [alice]: 100, [bob]: 50, [erin]: 50 }, ...content })
}

interface Case {
  name: string
  event: AuthEventInput
  state?: RoomState
  context?: AuthContext
  /** `true` to expect acceptance, else a pattern the rejection reason must match. */
  expect: true | RegExp
}

function runCases(cases: Case[]): void {
  for (const c of cases) {
    const verb = c.expect === true ? 'allow' : 'reject'
    it(`should ${verb}: ${c.name}`, () => {
      const result = authorizeEvent(c.event, c.state ?? room(), c.context)
      if (c.expect === true) {
        expect(result, result.ok ? '' : result.reason).to.deep.equal({ ok: true })
      } else {
        expect(result.ok, 'expected a rejection').to.equal(false)
        if (!result.ok) expect(result.reason).to.match(c.expect)
      }
    })
  }
}

describe('auth rules', () => {
  describe('m.room.create', () => {
    const create = (sender = alice, content: Record<string, unknown> = { room_version: '11' }, key = ''): AuthEventInput => ({
      type: 'm.room.create', sender, state_key: key, content, room_id: roomId,
    })
    runCases([
      { name: 'the first event of an empty room', event: create(), state: new Map(), expect: true },
      { name: 'a create without room_version', event: create(alice, {}), state: new Map(), expect: true },
      { name: 'a second m.room.create', event: create(), expect: /already has an m\.room\.create/ },
      {
        name: 'an m.room.create into a room that already has other state',
        event: create(),
        state: new Map([[stateKey('m.room.member', alice), stateEvent('m.room.member', alice, alice, { membership: 'join' })]]),
        expect: /must be the first event/,
      },
      { name: 'a sender from another server than the room ID', event: create('@alice:y'), state: new Map(), expect: /different server names/ },
      { name: 'an unsupported room version', event: create(alice, { room_version: '10' }), state: new Map(), expect: /room version "10" is not supported/ },
      { name: 'a non-string room version', event: create(alice, { room_version: 11 }), state: new Map(), expect: /must be a string/ },
      { name: 'a non-empty state key', event: create(alice, {}, 'x'), state: new Map(), expect: /empty state key/ },
      { name: 'any other event before m.room.create', event: message(alice), state: new Map(), expect: /no m\.room\.create/ },
    ])
  })

  describe("the creator's first join", () => {
    const justCreated = (): RoomState => new Map([[stateKey('m.room.create', ''), stateEvent('m.room.create', '', alice, {})]])
    runCases([
      { name: 'the creator joining right after m.room.create', event: member(alice, alice, 'join'), state: justCreated(), expect: true },
      { name: 'someone else joining right after m.room.create', event: member(dave, dave, 'join'), state: justCreated(), expect: /needs an invite/ },
      { name: 'the creator joining someone else', event: member(alice, dave, 'join'), state: justCreated(), expect: /on behalf of/ },
      { name: 'the creator sending a message before joining', event: message(alice), state: justCreated(), expect: /not joined/ },
    ])
  })

  describe('join', () => {
    runCases([
      { name: 'an outsider joining a public room', event: member(dave, dave, 'join'), state: room({ joinRule: 'public' }), expect: true },
      { name: 'an uninvited outsider joining an invite-only room', event: member(dave, dave, 'join'), expect: /needs an invite to join a room with join rule invite/ },
      { name: 'an invited user joining an invite-only room', event: member(dave, dave, 'join'), state: room({ members: { [dave]: 'invite' } }), expect: true },
      { name: 'a member re-joining (profile change) in an invite-only room', event: member(carol, carol, 'join', { displayname: 'C' }), expect: true },
      { name: 'a user who left re-joining an invite-only room', event: member(dave, dave, 'join'), state: room({ members: { [dave]: 'leave' } }), expect: /needs an invite/ },
      { name: 'a banned user joining a public room', event: member(dave, dave, 'join'), state: room({ joinRule: 'public', members: { [dave]: 'ban' } }), expect: /banned/ },
      { name: 'an invited user joining a knock room', event: member(dave, dave, 'join'), state: room({ joinRule: 'knock', members: { [dave]: 'invite' } }), expect: true },
      { name: 'a knocking user joining a knock room without an invite', event: member(dave, dave, 'join'), state: room({ joinRule: 'knock', members: { [dave]: 'knock' } }), expect: /needs an invite/ },
      { name: 'an invited user joining a restricted room', event: member(dave, dave, 'join'), state: room({ joinRule: 'restricted', members: { [dave]: 'invite' } }), expect: true },
      {
        name: 'an uninvited user joining a restricted room through an authorising user',
        event: member(dave, dave, 'join', { join_authorised_via_users_server: bob }),
        state: room({ joinRule: 'knock_restricted' }),
        expect: /allow conditions is not supported/,
      },
      { name: 'an uninvited user joining a room without join rules (defaults to invite)', event: member(dave, dave, 'join'), state: room({ joinRule: null }), expect: /join rule invite/ },
      { name: 'an invited user joining a private room', event: member(dave, dave, 'join'), state: room({ joinRule: 'private', members: { [dave]: 'invite' } }), expect: /"private" does not allow joining/ },
      { name: 'a member joining someone else', event: member(bob, dave, 'join'), state: room({ joinRule: 'public' }), expect: /cannot join on behalf of @dave:x/ },
    ])
  })

  describe('invite', () => {
    runCases([
      { name: 'a member inviting an outsider (invite level 0)', event: member(carol, dave, 'invite'), expect: true },
      { name: 'a member re-inviting a user who left', event: member(carol, dave, 'invite'), state: room({ members: { [dave]: 'leave' } }), expect: true },
      { name: 'a member inviting a knocking user', event: member(carol, dave, 'invite'), state: room({ members: { [dave]: 'knock' } }), expect: true },
      { name: 'a member below the invite level', event: member(carol, dave, 'invite'), state: room({ powerLevels: { invite: 50 } }), expect: /power level 0 is below the 50 required to invite/ },
      { name: 'a moderator at the invite level', event: member(bob, dave, 'invite'), state: room({ powerLevels: { invite: 50 } }), expect: true },
      { name: 'an invited user inviting someone else', event: member(dave, '@frank:x', 'invite'), state: room({ members: { [dave]: 'invite' } }), expect: /not joined \(membership: invite\)/ },
      { name: 'inviting a user who is already joined', event: member(bob, carol, 'invite'), expect: /already joined/ },
      { name: 'inviting a banned user', event: member(alice, dave, 'invite'), state: room({ members: { [dave]: 'ban' } }), expect: /banned/ },
      { name: 'a third-party invite', event: member(alice, dave, 'invite', { third_party_invite: { signed: { mxid: dave, token: 't' } } }), expect: /third-party invites are not supported/ },
    ])
  })

  describe('leave (own membership)', () => {
    runCases([
      { name: 'a member leaving', event: member(carol, carol, 'leave'), expect: true },
      { name: 'an invited user rejecting the invite', event: member(dave, dave, 'leave'), state: room({ members: { [dave]: 'invite' } }), expect: true },
      { name: 'a knocking user rescinding the knock', event: member(dave, dave, 'leave'), state: room({ members: { [dave]: 'knock' } }), expect: true },
      { name: 'a banned user unbanning themselves', event: member(dave, dave, 'leave'), state: room({ members: { [dave]: 'ban' } }), expect: /cannot leave: their membership is ban/ },
      { name: 'an outsider leaving a room they are not in', event: member(dave, dave, 'leave'), expect: /cannot leave: their membership is leave/ },
    ])
  })

  describe('kick', () => {
    runCases([
      { name: 'a moderator (50) kicking a member (0)', event: member(bob, carol, 'leave'), expect: true },
      { name: 'a moderator rescinding an invite', event: member(bob, dave, 'leave'), state: room({ members: { [dave]: 'invite' } }), expect: true },
      { name: 'a member (0) kicking a moderator', event: member(carol, bob, 'leave'), expect: /power level 0 is below the 50 required to kick/ },
      { name: 'a moderator (50) kicking the creator (100)', event: member(bob, alice, 'leave'), expect: /@alice:x's power level 100 is not below the sender's 50/ },
      { name: 'a moderator kicking another moderator at the same level', event: member(bob, erin, 'leave'), expect: /@erin:x's power level 50 is not below the sender's 50/ },
      { name: 'a member kicking a member when the kick level is 0 (equal levels)', event: member(carol, '@frank:x', 'leave'), state: room({ powerLevels: { kick: 0 }, members: { '@frank:x': 'join' } }), expect: /not below the sender's 0/ },
      { name: 'the creator kicking a moderator', event: member(alice, bob, 'leave'), expect: true },
      { name: 'a moderator who has left kicking a member', event: member(bob, carol, 'leave'), state: room({ members: { [bob]: 'leave' } }), expect: /cannot kick: not joined/ },
    ])
  })

  describe('ban and unban', () => {
    runCases([
      { name: 'a moderator (50) banning a member', event: member(bob, carol, 'ban'), expect: true },
      { name: 'a moderator banning an outsider', event: member(bob, dave, 'ban'), expect: true },
      { name: 'a member (0) banning anyone', event: member(carol, dave, 'ban'), expect: /power level 0 is below the 50 required to ban/ },
      { name: 'a moderator banning the creator', event: member(bob, alice, 'ban'), expect: /power level 100 is not below the sender's 50/ },
      { name: 'a moderator banning an equal moderator', event: member(bob, erin, 'ban'), expect: /not below the sender's 50/ },
      { name: 'the creator banning a moderator', event: member(alice, bob, 'ban'), expect: true },
      { name: 'a moderator who has left banning', event: member(bob, carol, 'ban'), state: room({ members: { [bob]: 'leave' } }), expect: /cannot ban: not joined/ },
      { name: 'a moderator (50) unbanning at ban and kick level 50', event: member(bob, dave, 'leave'), state: room({ members: { [dave]: 'ban' } }), expect: true },
      { name: 'a moderator (50) unbanning with ban level 75', event: member(bob, dave, 'leave'), state: room({ members: { [dave]: 'ban' }, powerLevels: { ban: 75 } }), expect: /below the 75 required to unban/ },
      { name: 'a moderator (50) unbanning with kick level 75', event: member(bob, dave, 'leave'), state: room({ members: { [dave]: 'ban' }, powerLevels: { kick: 75 } }), expect: /below the 75 required to kick/ },
      { name: 'a member (0) unbanning', event: member(carol, dave, 'leave'), state: room({ members: { [dave]: 'ban' } }), expect: /required to unban/ },
    ])
  })

  describe('knock', () => {
    runCases([
      { name: 'an outsider knocking on a knock room', event: member(dave, dave, 'knock'), state: room({ joinRule: 'knock' }), expect: true },
      { name: 'an outsider knocking on a knock_restricted room', event: member(dave, dave, 'knock'), state: room({ joinRule: 'knock_restricted' }), expect: true },
      { name: 'a user who left knocking again', event: member(dave, dave, 'knock'), state: room({ joinRule: 'knock', members: { [dave]: 'leave' } }), expect: true },
      { name: 'knocking on an invite-only room', event: member(dave, dave, 'knock'), expect: /join rule invite does not allow knocking/ },
      { name: 'knocking on a public room', event: member(dave, dave, 'knock'), state: room({ joinRule: 'public' }), expect: /does not allow knocking/ },
      { name: 'knocking on behalf of someone else', event: member(bob, dave, 'knock'), state: room({ joinRule: 'knock' }), expect: /on behalf of/ },
      { name: 'a banned user knocking', event: member(dave, dave, 'knock'), state: room({ joinRule: 'knock', members: { [dave]: 'ban' } }), expect: /membership is ban/ },
      { name: 'an invited user knocking', event: member(dave, dave, 'knock'), state: room({ joinRule: 'knock', members: { [dave]: 'invite' } }), expect: /membership is invite/ },
      { name: 'a member knocking', event: member(carol, carol, 'knock'), state: room({ joinRule: 'knock' }), expect: /membership is join/ },
    ])
  })

  describe('malformed membership events', () => {
    runCases([
      { name: 'an unknown membership', event: member(carol, carol, 'lurk'), expect: /unknown membership "lurk"/ },
      { name: 'a missing membership', event: { type: 'm.room.member', sender: carol, state_key: carol, content: {}, room_id: roomId }, expect: /string membership/ },
      { name: 'a missing state key', event: { type: 'm.room.member', sender: carol, content: { membership: 'join' }, room_id: roomId }, expect: /needs a state key/ },
    ])
  })

  describe('sending messages', () => {
    runCases([
      { name: 'a joined member sending a message', event: message(carol), expect: true },
      { name: 'an outsider sending a message', event: message(dave), expect: /@dave:x is not joined to the room \(membership: leave\)/ },
      { name: 'an invited user sending a message', event: message(dave), state: room({ members: { [dave]: 'invite' } }), expect: /membership: invite/ },
      { name: 'a banned user sending a message', event: message(dave), state: room({ members: { [dave]: 'ban' } }), expect: /membership: ban/ },
      { name: 'a member below events_default', event: message(carol), state: room({ powerLevels: { events_default: 10 } }), expect: /power level 0 is below the 10 required to send m\.room\.message/ },
      { name: 'a member below the level the events map sets for the type', event: message(carol), state: room({ powerLevels: { events: { 'm.room.message': 20 } } }), expect: /below the 20 required/ },
      { name: 'a moderator above the events map level', event: message(bob), state: room({ powerLevels: { events: { 'm.room.message': 20 } } }), expect: true },
      { name: 'a type the events map lowers below events_default', event: message(carol, 'm.reaction'), state: room({ powerLevels: { events_default: 50, events: { 'm.reaction': 0 } } }), expect: true },
      { name: 'a member with an explicit user level meeting events_default', event: message(carol), state: room({ powerLevels: { events_default: 10, users: { [carol]: 10 } } }), expect: true },
      { name: 'a member when users_default covers events_default', event: message(carol), state: room({ powerLevels: { events_default: 10, users_default: 10 } }), expect: true },
    ])
  })

  describe('setting state', () => {
    it("should explain a rejection as \"sender's power level 0 is below the 50 required to send m.room.name\"", () => {
      expect(authorizeEvent(state(carol, 'm.room.name', { name: 'x' }), room())).to.deep.equal({
        ok: false,
        reason: "sender's power level 0 is below the 50 required to send m.room.name",
      })
    })
    runCases([
      { name: 'a moderator at state_default (50)', event: state(bob, 'm.room.name', { name: 'x' }), expect: true },
      { name: 'a member when the events map lowers the type to 0', event: state(carol, 'm.room.topic', { topic: 't' }), state: room({ powerLevels: { events: { 'm.room.topic': 0 } } }), expect: true },
      { name: 'a moderator when the events map raises the type to 100', event: state(bob, 'm.room.tombstone', {}), state: room({ powerLevels: { events: { 'm.room.tombstone': 100 } } }), expect: /below the 100 required/ },
      { name: 'a state event with an empty key counting as state, not a message', event: state(carol, 'x.custom', {}), state: room({ powerLevels: { events_default: 0, state_default: 50 } }), expect: /below the 50 required/ },
      { name: 'a member setting state in a room without power levels (state_default 0)', event: state(carol, 'm.room.name', { name: 'x' }), state: room({ powerLevels: null }), expect: true },
      { name: 'an outsider setting state', event: state(dave, 'm.room.name', { name: 'x' }), state: room({ powerLevels: null }), expect: /not joined/ },
      { name: "a state key that is another user's ID", event: state(bob, 'x.profile', {}, carol), expect: /state key @carol:x starts with @ and is not the sender/ },
      { name: "a state key that is the sender's own ID", event: state(bob, 'x.profile', {}, bob), expect: true },
      { name: 'a state key that is not a user ID', event: state(bob, 'x.profile', {}, 'carol'), expect: true },
      { name: 'an m.room.third_party_invite at the invite level', event: state(carol, 'm.room.third_party_invite', {}, 'token'), expect: true },
      { name: 'an m.room.third_party_invite below the invite level', event: state(carol, 'm.room.third_party_invite', {}, 'token'), state: room({ powerLevels: { invite: 50 } }), expect: /required to send m\.room\.third_party_invite/ },
      { name: 'content that is not an object', event: { ...message(carol), content: 'hi' as unknown as Record<string, unknown> }, expect: /content must be an object/ },
    ])
  })

  describe('m.room.power_levels changes', () => {
    runCases([
      { name: 'the first power levels event in a room without one', event: state(carol, 'm.room.power_levels', { users: { [carol]: 100 } }), state: room({ powerLevels: null }), expect: true },
      { name: 'a member (0) changing power levels (state_default 50)', event: powerLevelsChange(carol, { users_default: 0 }), expect: /power level 0 is below the 50 required to send m\.room\.power_levels/ },
      { name: 'a moderator raising a member to its own level', event: powerLevelsChange(bob, { users: { [alice]: 100, [bob]: 50, [erin]: 50, [carol]: 50 } }), expect: true },
      { name: 'a moderator raising a member above its own level', event: powerLevelsChange(bob, { users: { [alice]: 100, [bob]: 50, [erin]: 50, [carol]: 51 } }), expect: /below the new users\["@carol:x"\] level 51/ },
      { name: 'a moderator raising itself', event: powerLevelsChange(bob, { users: { [alice]: 100, [bob]: 60, [erin]: 50 } }), expect: /new users\["@bob:x"\] level 60/ },
      { name: 'a moderator lowering itself', event: powerLevelsChange(bob, { users: { [alice]: 100, [bob]: 10, [erin]: 50 } }), expect: true },
      { name: 'a moderator removing its own entry', event: powerLevelsChange(bob, { users: { [alice]: 100, [erin]: 50 } }), expect: true },
      { name: 'a moderator demoting the creator', event: powerLevelsChange(bob, { users: { [alice]: 0, [bob]: 50, [erin]: 50 } }), expect: /not above @alice:x's level 100/ },
      { name: 'a moderator demoting an equal moderator', event: powerLevelsChange(bob, { users: { [alice]: 100, [bob]: 50, [erin]: 0 } }), expect: /not above @erin:x's level 50/ },
      { name: 'a moderator removing an equal moderator', event: powerLevelsChange(bob, { users: { [alice]: 100, [bob]: 50 } }), expect: /not above @erin:x's level 50/ },
      {
        name: 'a moderator demoting a member below it',
        event: powerLevelsChange(bob, { users: { [alice]: 100, [bob]: 50, [erin]: 50 } }),
        state: room({ powerLevels: { users: { [alice]: 100, [bob]: 50, [erin]: 50, [carol]: 20 } } }),
        expect: true,
      },
      { name: 'the creator promoting a moderator to 100', event: powerLevelsChange(alice, { users: { [alice]: 100, [bob]: 100, [erin]: 50 } }), expect: true },
      { name: 'a moderator lowering the ban level 50 → 40', event: powerLevelsChange(bob, { ban: 40 }), state: room({ powerLevels: { ban: 50 } }), expect: true },
      { name: 'a moderator adding a kick level above its own', event: powerLevelsChange(bob, { kick: 60 }), expect: /below the new kick level 60/ },
      { name: 'a moderator changing a ban level that is above its own', event: powerLevelsChange(bob, { ban: 50 }), state: room({ powerLevels: { ban: 75 } }), expect: /below the current ban level 75/ },
      { name: 'a moderator removing a state_default that is above its own', event: powerLevelsChange(bob, {}), state: room({ powerLevels: { state_default: 50, redact: 100, events: { 'm.room.power_levels': 50 } } }), expect: /current redact level 100/ },
      { name: 'a moderator leaving an above-own ban level unchanged', event: powerLevelsChange(bob, { ban: 75, invite: 10 }), state: room({ powerLevels: { ban: 75 } }), expect: true },
      { name: 'a moderator adding an events entry at its own level', event: powerLevelsChange(bob, { events: { 'm.room.topic': 50 } }), expect: true },
      { name: 'a moderator adding an events entry above its own level', event: powerLevelsChange(bob, { events: { 'm.room.topic': 60 } }), expect: /new events\["m\.room\.topic"\] level 60/ },
      { name: 'a moderator changing an events entry above its own level', event: powerLevelsChange(bob, { events: { 'm.room.tombstone': 50 } }), state: room({ powerLevels: { events: { 'm.room.tombstone': 100 } } }), expect: /current events\["m\.room\.tombstone"\] level 100/ },
      { name: 'a moderator removing an events entry above its own level', event: powerLevelsChange(bob, { events: {} }), state: room({ powerLevels: { events: { 'm.room.tombstone': 100 } } }), expect: /current events\["m\.room\.tombstone"\] level 100/ },
      { name: 'a moderator keeping an events entry above its own level', event: powerLevelsChange(bob, { events: { 'm.room.tombstone': 100 }, invite: 0 }), state: room({ powerLevels: { events: { 'm.room.tombstone': 100 } } }), expect: true },
      { name: 'a moderator lowering notifications.room', event: powerLevelsChange(bob, { notifications: { room: 20 } }), state: room({ powerLevels: { notifications: { room: 50 } } }), expect: true },
      { name: 'a moderator changing notifications.room above its own level', event: powerLevelsChange(bob, { notifications: { room: 20 } }), state: room({ powerLevels: { notifications: { room: 100 } } }), expect: /current notifications\["room"\] level 100/ },
      { name: 'a level given as a string', event: powerLevelsChange(alice, { ban: '50' }), expect: /ban must be an integer/ },
      { name: 'a level given as a float', event: powerLevelsChange(alice, { kick: 50.5 }), expect: /kick must be an integer/ },
      { name: 'an events value that is not an integer', event: powerLevelsChange(alice, { events: { 'm.room.name': '50' } }), expect: /events\["m\.room\.name"\] must be an integer/ },
      { name: 'events that is not an object', event: powerLevelsChange(alice, { events: [] }), expect: /events must be an object/ },
      { name: 'a users key that is not a user ID', event: powerLevelsChange(alice, { users: { [alice]: 100, bob: 50 } }), expect: /users key "bob" is not a user ID/ },
      { name: 'a users value that is a boolean', event: powerLevelsChange(alice, { users: { [alice]: true } }), expect: /must be an integer/ },
      { name: 'a malformed first power levels event', event: state(carol, 'm.room.power_levels', { users_default: 'high' }), state: room({ powerLevels: null }), expect: /users_default must be an integer/ },
    ])
  })

  describe('redactions', () => {
    runCases([
      { name: 'a moderator at the redact level redacting anyone', event: redaction(bob), context: { redactedEventSender: carol }, expect: true },
      { name: 'a moderator redacting an event whose sender is unknown', event: redaction(bob), expect: true },
      { name: 'a member redacting its own event', event: redaction(carol), context: { redactedEventSender: carol }, expect: true },
      { name: "a member redacting someone else's event", event: redaction(carol), context: { redactedEventSender: bob }, expect: /below the redact level 50, and the redacted event was sent by @bob:x/ },
      { name: 'a member redacting an event whose sender is unknown', event: redaction(carol), expect: /not known to be its own/ },
      { name: 'a member redacting anything when the redact level is 0', event: redaction(carol), context: { redactedEventSender: bob }, state: room({ powerLevels: { redact: 0 } }), expect: true },
      { name: 'a member below the level needed to send m.room.redaction at all', event: redaction(carol), context: { redactedEventSender: carol }, state: room({ powerLevels: { events: { 'm.room.redaction': 10 } } }), expect: /below the 10 required to send m\.room\.redaction/ },
      { name: 'an outsider redacting its own old event', event: redaction(dave), context: { redactedEventSender: dave }, expect: /not joined/ },
      { name: 'a redaction without content.redacts', event: { ...redaction(bob), content: {} }, expect: /needs a string redacts/ },
    ])
  })
})

describe('powerLevels', () => {
  it('should give the creator 100 and others 0, state_default 0, when the room has no power levels event', () => {
    const levels = powerLevels(room({ powerLevels: null }))
    expect(levels.explicit).to.equal(false)
    expect([levels.user(alice), levels.user(bob)]).to.deep.equal([100, 0])
    expect([levels.required('m.room.name', true), levels.required('m.room.message', false)]).to.deep.equal([0, 0])
    expect([levels.ban, levels.kick, levels.redact, levels.invite]).to.deep.equal([50, 50, 50, 0])
  })

  it('should apply the defaults users_default 0, events_default 0, state_default 50 to an empty power levels event', () => {
    const state = room()
    state.set(stateKey('m.room.power_levels', ''), stateEvent('m.room.power_levels', '', alice, {}))
    const levels = powerLevels(state)
    expect(levels.explicit).to.equal(true)
    expect([levels.user(alice), levels.user(dave)]).to.deep.equal([0, 0])
    expect([levels.required('m.room.name', true), levels.required('m.room.message', false)]).to.deep.equal([50, 0])
  })

  it('should ignore inherited keys such as toString in users and events', () => {
    const levels = powerLevels(room())
    expect(levels.user('toString')).to.equal(0)
    expect(levels.required('constructor', false)).to.equal(0)
  })
})

describe('checkEventSize', () => {
  const pdu = {
    type: 'm.room.message', room_id: roomId, sender: carol, depth: 1, origin_server_ts: 1, prev_events: [], auth_events: [],
    content: { body: '' }, hashes: { sha256: 'h' }, signatures: { x: { 'ed25519:a': 's' } },
  }
  const withBodyBytes = (total: number, char = 'x'): typeof pdu => {
    const baseSize = canonicalJsonBytes(pdu).length
    const charBytes = Buffer.byteLength(char)
    return { ...pdu, content: { body: char.repeat((total - baseSize) / charBytes) } }
  }

  it('should accept a PDU of exactly 65,536 bytes', () => {
    const exact = withBodyBytes(maxPduBytes)
    expect(canonicalJsonBytes(exact).length).to.equal(65_536)
    expect(checkEventSize(exact)).to.deep.equal({ ok: true })
  })

  it('should reject a PDU of 65,537 bytes', () => {
    expect(checkEventSize(withBodyBytes(maxPduBytes + 1))).to.deep.equal({
      ok: false,
      reason: 'the event is 65,537 bytes of canonical JSON; the limit is 65,536',
    })
  })

  it('should count UTF-8 bytes, not characters', () => {
    const twoByteChars = withBodyBytes(maxPduBytes + 2, 'é')
    expect(JSON.stringify(twoByteChars).length).to.be.below(maxPduBytes)
    expect(checkEventSize(twoByteChars).ok).to.equal(false)
  })

  it('should limit sender, room_id, state_key, type and event_id to 255 bytes', () => {
    for (const key of ['sender', 'room_id', 'state_key', 'type', 'event_id']) {
      expect(checkEventSize({ ...pdu, [key]: 'a'.repeat(255) }).ok, `${key} at 255`).to.equal(true)
      expect(checkEventSize({ ...pdu, [key]: 'é'.repeat(128) }), `${key} of 128 two-byte characters`).to.deep.equal({
        ok: false,
        reason: `${key} is 256 bytes; the limit is 255`,
      })
      expect(checkEventSize({ ...pdu, [key]: 'a'.repeat(256) })).to.deep.equal({ ok: false, reason: `${key} is 256 bytes; the limit is 255` })
    }
  })

  it('should throw ES_BAD_EVENT for a PDU without canonical form', () => {
    expect(() => checkEventSize({ ...pdu, depth: 1.5 })).to.throw().that.satisfies((err: unknown) => isStorageError(err, 'ES_BAD_EVENT'))
  })
})

describe('authEventKeys', () => {
  const keysOf = (event: AuthEventInput): string[] => authEventKeys(event).map((k) => `${k.type}|${k.state_key}`)
  const base = ['m.room.create|', 'm.room.power_levels|']

  const cases: [name: string, event: AuthEventInput, expected: string[]][] = [
    ['m.room.create has none', { type: 'm.room.create', sender: alice, state_key: '', content: {}, room_id: roomId }, []],
    ['a message: create, power levels, sender', message(carol), [...base, `m.room.member|${carol}`]],
    ['a state event: the same three', state(bob, 'm.room.name', { name: 'x' }), [...base, `m.room.member|${bob}`]],
    ['a self-join: sender once, plus join rules', member(dave, dave, 'join'), [...base, `m.room.member|${dave}`, 'm.room.join_rules|']],
    ['an invite: sender, target, join rules', member(bob, dave, 'invite'), [...base, `m.room.member|${bob}`, `m.room.member|${dave}`, 'm.room.join_rules|']],
    ['a knock: sender, join rules', member(dave, dave, 'knock'), [...base, `m.room.member|${dave}`, 'm.room.join_rules|']],
    ['a kick: sender, target, no join rules', member(bob, carol, 'leave'), [...base, `m.room.member|${bob}`, `m.room.member|${carol}`]],
    ['a ban: sender, target, no join rules', member(bob, dave, 'ban'), [...base, `m.room.member|${bob}`, `m.room.member|${dave}`]],
    [
      'a restricted join: also the authorising user',
      member(dave, dave, 'join', { join_authorised_via_users_server: bob }),
      [...base, `m.room.member|${dave}`, 'm.room.join_rules|', `m.room.member|${bob}`],
    ],
    [
      'a third-party invite: also the m.room.third_party_invite of the token',
      member(bob, dave, 'invite', { third_party_invite: { signed: { mxid: dave, token: 'tok' } } }),
      [...base, `m.room.member|${bob}`, `m.room.member|${dave}`, 'm.room.join_rules|', 'm.room.third_party_invite|tok'],
    ],
  ]
  for (const [name, event, expected] of cases) {
    it(`should select for ${name}`, () => {
      expect(keysOf(event)).to.have.members(expected).and.have.length(expected.length)
    })
  }

  it('should never list a (type, state_key) twice (property)', () => {
    const user = fc.constantFrom(alice, bob, dave)
    fc.assert(
      fc.property(user, user, user, fc.constantFrom('join', 'invite', 'leave', 'ban', 'knock'), (sender, target, authoriser, membership) => {
        const keys = keysOf(member(sender, target, membership, { join_authorised_via_users_server: authoriser }))
        expect(new Set(keys).size).to.equal(keys.length)
        expect(keys).to.include.members([...base, `m.room.member|${sender}`, `m.room.member|${target}`])
      }),
    )
  })
})

describe('stateKey', () => {
  it('should keep distinct (type, state_key) pairs distinct (property)', () => {
    const part = fc.string({ maxLength: 4 }).filter((s) => !s.includes('\u0000'))
    fc.assert(
      fc.property(part, part, part, part, (t1, k1, t2, k2) => {
        fc.pre(t1 !== t2 || k1 !== k2)
        expect(stateKey(t1, k1)).to.not.equal(stateKey(t2, k2))
      }),
    )
  })
})
