import { expect } from 'chai'
import fc from 'fast-check'
import { BodyTracker, headLength, HttpParseError, maxHeadBytes, parseRequestHead, parseResponseHead, serializeHead } from '../../../../api/routing/http1.js'

const request = (text: string) => {
  const buffer = Buffer.from(text, 'latin1')
  return parseRequestHead(buffer, headLength(buffer))
}

const parseError = (fn: () => unknown): HttpParseError => {
  try {
    fn()
  } catch (err) {
    expect(err).to.be.instanceOf(HttpParseError)
    return err as HttpParseError
  }
  throw new Error('expected an HttpParseError')
}

/** `body` in chunked framing, cut into chunks of the given sizes (the rest in one), with a trailer. */
function chunked(body: Buffer, sizes: number[], trailer: string): Buffer {
  const parts: Buffer[] = []
  let at = 0
  for (const size of [...sizes, body.length]) {
    const n = Math.min(size, body.length - at)
    if (n <= 0) continue
    parts.push(Buffer.from(`${n.toString(16)};ext=1\r\n`), body.subarray(at, at + n), Buffer.from('\r\n'))
    at += n
  }
  parts.push(Buffer.from(`0\r\n${trailer}\r\n`))
  return Buffer.concat(parts)
}

/** Feeds `bytes` to a tracker in pieces cut at `cuts`; returns where the body ended, or -1. */
function endOf(tracker: BodyTracker, bytes: Buffer, cuts: number[]): number {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b)
  let from = 0
  for (const to of [...points, bytes.length]) {
    if (to < from) continue
    const { used, done } = tracker.take(bytes.subarray(from, to))
    if (done) return from + used
    expect(used).to.equal(to - from)
    from = to
  }
  return -1
}

describe('http1', () => {
  describe('parseRequestHead', () => {
    it('should read method, target, headers and framing', () => {
      const head = request('PUT /_matrix/client/v3/rooms/!a/send/m/1 HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nX-A:  b \r\n\r\n')
      expect([head.method, head.target, head.version, head.close, head.expectContinue]).to.deep.equal(['PUT', '/_matrix/client/v3/rooms/!a/send/m/1', 'HTTP/1.1', false, false])
      expect(head.framing).to.deep.equal({ kind: 'length', bytes: 12 })
      expect(head.headers.map((h) => [h.name, h.value])).to.deep.equal([['Host', 'x'], ['Content-Length', '12'], ['X-A', 'b']])
      expect(request('POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n')).to.deep.include({ framing: { kind: 'chunked' }, close: true, expectContinue: true })
      expect(request('GET / HTTP/1.0\r\n\r\n').close).to.equal(true)
      expect(request('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n').close).to.equal(false)
      expect(request('GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n').framing).to.deep.equal({ kind: 'none' })
    })

    it('should refuse what could be read two ways, or not at all, with 400', () => {
      for (const text of [
        'GET / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n',
        'GET / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n',
        'GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n',
        'GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n',
        'GET / HTTP/1.1\r\nX: a\nInjected: b\r\n\r\n',
        'GET / HTTP/1.1\r\n folded\r\n\r\n',
        'GET / HTTP/1.1\r\nBad Name: x\r\n\r\n',
        'GET /  HTTP/1.1\r\n\r\n',
        'GET / HTTP/2.0\r\n\r\n',
        'G(T / HTTP/1.1\r\n\r\n',
      ]) {
        expect(parseError(() => request(text)).status, JSON.stringify(text)).to.equal(400)
      }
      // The same length repeated is one length.
      expect(request('GET / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n').framing).to.deep.equal({ kind: 'length', bytes: 3 })
    })

    it('should answer 431 for a head over the limit, complete or not', () => {
      const big = `GET / HTTP/1.1\r\nX: ${'a'.repeat(maxHeadBytes)}`
      expect(parseError(() => headLength(Buffer.from(big))).status).to.equal(431)
      expect(parseError(() => headLength(Buffer.from(`${big}\r\n\r\n`))).status).to.equal(431)
      expect(headLength(Buffer.from('GET / HTTP/1.1\r\nX: a\r\n'))).to.equal(-1)
    })
  })

  describe('parseResponseHead', () => {
    it('should tell bodiless answers, lengths, chunking and read-to-close apart', () => {
      const response = (text: string, method = 'GET') => {
        const buffer = Buffer.from(text)
        return parseResponseHead(buffer, headLength(buffer), method)
      }
      expect(response('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n')).to.deep.include({ status: 200, framing: { kind: 'length', bytes: 5 }, close: false })
      expect(response('HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n', 'HEAD').framing).to.deep.equal({ kind: 'none' })
      expect(response('HTTP/1.1 204 No Content\r\n\r\n').framing).to.deep.equal({ kind: 'none' })
      expect(response('HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n').framing).to.deep.equal({ kind: 'none' })
      expect(response('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n').framing).to.deep.equal({ kind: 'chunked' })
      expect(response('HTTP/1.1 200 OK\r\n\r\n')).to.deep.include({ framing: { kind: 'close' }, close: true })
      expect(response('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n').close).to.equal(true)
      expect(parseError(() => response('HTTP/1.1 OK\r\n\r\n')).status).to.equal(502)
    })
  })

  describe('serializeHead', () => {
    it('should drop hop-by-hop headers and those Connection names, keep the rest in order and case', () => {
      const buffer = Buffer.from('GET / HTTP/1.1\r\nHost: h\r\nConnection: X-Hop, keep-alive\r\nX-Hop: 1\r\nKeep-Alive: 5\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\n')
      const head = parseRequestHead(buffer, headLength(buffer))
      expect(serializeHead('GET / HTTP/1.1', head.headers, ['x-forwarded-proto: http']).toString()).to.equal('GET / HTTP/1.1\r\nHost: h\r\nSet-Cookie: a\r\nSet-Cookie: b\r\nx-forwarded-proto: http\r\n\r\n')
      expect(serializeHead('GET / HTTP/1.1', head.headers, [], new Set(['transfer-encoding'])).toString()).to.include('Transfer-Encoding: chunked\r\n')
    })
  })

  describe('BodyTracker', () => {
    it('should end a chunked body exactly after its trailer, however the bytes are cut', () => {
      fc.assert(
        fc.property(
          fc.uint8Array({ maxLength: 300 }),
          fc.array(fc.integer({ min: 1, max: 80 }), { maxLength: 8 }),
          fc.array(fc.nat(), { maxLength: 12 }),
          fc.constantFrom('', 'X-Checksum: 1\r\n'),
          fc.uint8Array({ maxLength: 20 }),
          (body, sizes, cuts, trailer, next) => {
            const framed = chunked(Buffer.from(body), sizes, trailer)
            const end = endOf(new BodyTracker({ kind: 'chunked' }), Buffer.concat([framed, Buffer.from(next)]), cuts)
            expect(end).to.equal(framed.length)
          },
        ),
      )
    })

    it('should end a Content-Length body after exactly that many bytes', () => {
      fc.assert(
        fc.property(fc.integer({ min: 1, max: 500 }), fc.integer({ min: 0, max: 50 }), fc.array(fc.nat(), { maxLength: 12 }), (length, extra, cuts) => {
          expect(endOf(new BodyTracker({ kind: 'length', bytes: length }), Buffer.alloc(length + extra), cuts)).to.equal(length)
        }),
      )
    })

    it('should refuse broken chunked framing', () => {
      for (const text of ['zz\r\n', '3\r\nabcd\r\n', '3\nabc\r\n', `${'1'.repeat(13)}\r\n`]) {
        expect(() => new BodyTracker({ kind: 'chunked' }).take(Buffer.from(text)), text).to.throw(HttpParseError)
      }
    })

    it('should never end a body that runs to the close of the connection', () => {
      const tracker = new BodyTracker({ kind: 'close' })
      expect(tracker.take(Buffer.alloc(100))).to.deep.equal({ used: 100, done: false })
    })
  })
})
