import { expect } from 'chai'
import fc from 'fast-check'
import { classifyRequest } from '../../../../api/routing/path-table.js'

const allPrefixes = ['api/v1', 'r0', 'v3', 'unstable']

describe('classifyRequest', () => {
  describe('sync', () => {
    const cases: [string, string[]][] = [
      ['sync', ['r0', 'v3']],
      ['events', ['api/v1', 'r0', 'v3']],
      ['initialSync', ['api/v1', 'r0', 'v3']],
      ['rooms/!a:hs.test/initialSync', ['api/v1', 'r0', 'v3']],
    ]
    for (const [tail, prefixes] of cases) {
      it(`should classify ${tail} under ${prefixes.join('|')} as sync, and not under the other prefixes`, () => {
        for (const prefix of allPrefixes) {
          const route = classifyRequest('GET', `/_matrix/client/${prefix}/${tail}?since=s1&timeout=30000`)
          expect(route, `${prefix}/${tail}`).to.deep.equal(prefixes.includes(prefix) ? { kind: 'sync' } : { kind: 'any' })
        }
      })
    }

    it('should classify sliding sync (MSC4186) as sync: its connections live in one api worker', () => {
      expect(classifyRequest('POST', '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos=1_2&timeout=30000')).to.deep.equal({ kind: 'sync' })
      expect(classifyRequest('POST', '/_matrix/client/unstable/orgXmatrix.simplified_msc3575/sync')).to.deep.equal({ kind: 'any' })
      expect(classifyRequest('POST', '/_matrix/client/v3/org.matrix.simplified_msc3575/sync')).to.deep.equal({ kind: 'any' })
    })

    it('should not classify look-alikes as sync', () => {
      for (const path of ['/_matrix/client/v3/sync/', '/_matrix/client/v3/syncx', '/_matrix/client/v3/rooms/!a/b/initialSync', '/_matrix/client/v3/user/x/events', '/_matrix/client/v3/rooms/!a:hs/events']) {
        expect(classifyRequest('GET', path), path).to.deep.equal({ kind: 'any' })
      }
    })
  })

  describe('room writes', () => {
    it('should route sends, state, redactions and membership by their decoded room ID', () => {
      const room = '!abc:hs.test'
      const encoded = encodeURIComponent(room)
      const writes: [string, string][] = [
        ['PUT', `rooms/${encoded}/send/m.room.message/txn1`],
        ['POST', `rooms/${encoded}/send/m.room.message`],
        ['PUT', `rooms/${encoded}/state/m.room.name`],
        ['PUT', `rooms/${encoded}/state/m.room.member/%40u%3Ahs.test`],
        ['PUT', `rooms/${encoded}/redact/%24ev/txn2`],
        ['POST', `rooms/${encoded}/redact/%24ev`],
        ...['join', 'invite', 'leave', 'ban', 'unban', 'kick'].map((m): [string, string] => ['POST', `rooms/${room}/${m}`]),
        ['POST', `join/${encoded}`],
        ['POST', `knock/${room}`],
      ]
      for (const prefix of allPrefixes) {
        for (const [method, tail] of writes) {
          expect(classifyRequest(method, `/_matrix/client/${prefix}/${tail}`), `${method} ${prefix}/${tail}`).to.deep.equal({ kind: 'room-write', roomId: room })
        }
      }
      expect(classifyRequest('put', `/_matrix/client/v3/rooms/${encoded}/send/m.room.message/t?ts=1`)).to.deep.equal({ kind: 'room-write', roomId: room })
    })

    it('should leave reads, aliases, malformed IDs and unrelated room paths to round robin', () => {
      const any: [string, string][] = [
        ['GET', '/_matrix/client/v3/rooms/!a:hs.test/state/m.room.name'],
        ['GET', '/_matrix/client/v3/rooms/!a:hs.test/state'],
        ['OPTIONS', '/_matrix/client/v3/rooms/!a:hs.test/send/m.room.message/t'],
        ['GET', '/_matrix/client/v3/rooms/!a:hs.test/messages'],
        ['POST', '/_matrix/client/v3/rooms/!a:hs.test/receipt/m.read/%24e'],
        ['POST', '/_matrix/client/v3/rooms/!a:hs.test/forget'],
        ['PUT', '/_matrix/client/v3/rooms/!a:hs.test/sendx/t'],
        ['POST', '/_matrix/client/v3/join/%23alias%3Ahs.test'],
        ['PUT', '/_matrix/client/v3/rooms/%23alias%3Ahs.test/send/m.room.message/t'],
        ['PUT', '/_matrix/client/v3/rooms/%E0%A4%A/send/m.room.message/t'],
        ['PUT', '/_matrix/client/v4/rooms/!a:hs.test/send/m.room.message/t'],
        ['PUT', '/_matrix/media/v3/rooms/!a:hs.test/send/x/t'],
        ['POST', '/_matrix/client/v3/createRoom'],
      ]
      for (const [method, path] of any) expect(classifyRequest(method, path), `${method} ${path}`).to.deep.equal({ kind: 'any' })
    })

    it('should recover any room ID from its percent-encoded path segment', () => {
      fc.assert(
        fc.property(fc.string({ unit: 'grapheme', minLength: 1 }), fc.constantFrom(...allPrefixes), fc.constantFrom('send/m.room.message/t1', 'state/m.room.topic/', 'redact/%24e/t'), (opaque, prefix, tail) => {
          const room = `!${opaque}:hs.test`
          const route = classifyRequest('PUT', `/_matrix/client/${prefix}/rooms/${encodeURIComponent(room)}/${tail}`)
          expect(route).to.deep.equal({ kind: 'room-write', roomId: room })
        }),
      )
    })
  })

  it('should classify every request without throwing, whatever the path', () => {
    fc.assert(
      fc.property(fc.constantFrom('GET', 'PUT', 'POST', 'DELETE'), fc.string(), fc.string({ unit: 'binary' }), (method, a, b) => {
        for (const path of [a, `/_matrix/client/v3/rooms/${a}/send/${b}`, `/_matrix/client/r0/join/${b}`]) {
          expect(['sync', 'room-write', 'any']).to.include(classifyRequest(method, path).kind)
        }
      }),
    )
  })
})
