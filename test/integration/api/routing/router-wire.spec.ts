import { createServer, type Server } from 'node:http'
import { connect, type AddressInfo, type Socket } from 'node:net'
import { expect } from 'chai'
import { createRouter, type Router } from '../../../../api/routing/router.js'
import { createShardMap } from '../../../../persisters/shard-map.js'
import { silentLogger } from '../../../../storage/logger.js'
import { patternBytes, sha256, startEchoUpstream, type Echo, type EchoUpstream } from './echo-upstream.js'

/**
 * The router on the wire: what raw HTTP/1.1 clients send (pipelining, chunked bodies, Expect,
 * malformed heads) and what upstreams answer (chunked, read-to-close), byte for byte.
 */
describe('createRouter on the wire', function () {
  this.timeout(20_000)
  let echo: EchoUpstream
  let chunky: Server
  let router: Router
  let port: number

  before(async () => {
    echo = await startEchoUpstream('api1')
    // Answers in pieces without a length (chunked), or with neither length nor chunking (read to close).
    chunky = createServer((req, res) => {
      req.resume()
      req.on('end', () => {
        if (req.url?.includes('close')) {
          res.socket?.write('HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil-')
          res.socket?.end('close')
          return
        }
        res.writeHead(200, { 'content-type': 'text/plain', trailer: 'x-sum' })
        res.write('part1-')
        setTimeout(() => {
          res.addTrailers({ 'x-sum': '2' })
          res.end('part2')
        }, 20)
      })
    })
    await new Promise<void>((resolve) => chunky.listen(0, '127.0.0.1', () => resolve()))
  })
  after(async () => {
    await echo.close()
    await new Promise<void>((resolve) => chunky.close(() => resolve()))
  })
  beforeEach(async () => {
    router = createRouter({
      upstreams: { api: [{ name: 'api1', host: '127.0.0.1', port: echo.port }], persisters: new Map([['persister1', { name: 'chunky', host: '127.0.0.1', port: (chunky.address() as AddressInfo).port }]]) },
      shardMap: createShardMap({ writers: ['persister1'] }),
      log: silentLogger(),
    })
    port = (await router.listen(0)).port
  })
  afterEach(() => router.close(100))

  /** A raw connection that collects everything the router sends back. */
  async function open(): Promise<{ socket: Socket; received: () => string; closed: Promise<void>; waitFor: (n: number) => Promise<string[]> }> {
    const socket = connect(port, '127.0.0.1')
    await new Promise<void>((resolve) => socket.once('connect', () => resolve()))
    let data = ''
    socket.on('data', (chunk: Buffer) => (data += chunk.toString('latin1')))
    const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()))
    const responses = () => data.split(/(?=HTTP\/1\.1 \d{3} )/).filter((s) => s.length > 0)
    return {
      socket,
      received: () => data,
      closed,
      async waitFor(n) {
        for (let i = 0; i < 200; i++) {
          const all = responses()
          if (all.length >= n && /\r\n\r\n/.test(all[n - 1] as string)) {
            await new Promise((r) => setTimeout(r, 30))
            return responses()
          }
          await new Promise((r) => setTimeout(r, 10))
        }
        throw new Error(`expected ${n} responses, got: ${data.slice(0, 500)}`)
      },
    }
  }

  const rawBodyOf = (response: string): string => response.slice(response.indexOf('\r\n\r\n') + 4)
  /** The body of a response, unchunked when it came chunked. */
  const bodyOf = (response: string): string => {
    const raw = rawBodyOf(response)
    if (!/\r\ntransfer-encoding: chunked\r\n/i.test(response.slice(0, response.indexOf('\r\n\r\n') + 2))) return raw
    let out = ''
    for (let at = 0; ; ) {
      const eol = raw.indexOf('\r\n', at)
      const size = parseInt(raw.slice(at, eol), 16)
      if (size === 0) return out
      out += raw.slice(eol + 2, eol + 2 + size)
      at = eol + 2 + size + 2
    }
  }

  it('should answer pipelined requests in order on one connection', async () => {
    const conn = await open()
    const paths = ['/_matrix/client/versions?n=1', '/_matrix/client/v3/rooms/!r:hs/messages?n=2', '/_matrix/client/versions?n=3']
    conn.socket.write(paths.map((p) => `GET ${p} HTTP/1.1\r\nHost: h\r\n\r\n`).join(''))
    const responses = await conn.waitFor(3)
    expect(responses.map((r) => (JSON.parse(bodyOf(r)) as Echo).url)).to.deep.equal(paths)
    conn.socket.destroy()
  })

  it('should stream a chunked request body to the upstream byte for byte, and answer Expect: 100-continue', async () => {
    const conn = await open()
    const body = patternBytes(70_000)
    conn.socket.write('POST /_matrix/media/v3/upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n')
    await new Promise((r) => setTimeout(r, 50))
    expect(conn.received()).to.equal('HTTP/1.1 100 Continue\r\n\r\n')
    for (let at = 0; at < body.length; at += 30_000) {
      const part = body.subarray(at, at + 30_000)
      conn.socket.write(`${part.length.toString(16)}\r\n`)
      conn.socket.write(part)
      conn.socket.write('\r\n')
    }
    conn.socket.write('0\r\n\r\n')
    const [, response] = await conn.waitFor(2)
    const seen = JSON.parse(bodyOf(response as string)) as Echo
    expect([seen.bodyBytes, seen.bodySha256]).to.deep.equal([body.length, sha256(body)])
    expect(seen.headers.expect).to.equal(undefined)
    conn.socket.destroy()
  })

  it('should relay a chunked response with its trailer, and a response that runs to close', async () => {
    const conn = await open()
    conn.socket.write('PUT /_matrix/client/v3/rooms/!a:hs/send/m.room.message/t1 HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}')
    const [response] = await conn.waitFor(1)
    expect(response).to.match(/^HTTP\/1\.1 200 OK\r\n/)
    expect(response).to.match(/transfer-encoding: chunked\r\n/i)
    expect(rawBodyOf(response as string)).to.equal('6\r\npart1-\r\n5\r\npart2\r\n0\r\nx-sum: 2\r\n\r\n')
    // The connection stays usable after a chunked answer.
    conn.socket.write('GET /_matrix/client/versions HTTP/1.1\r\nHost: h\r\n\r\n')
    const [, second] = await conn.waitFor(2)
    expect((JSON.parse(bodyOf(second as string)) as Echo).url).to.equal('/_matrix/client/versions')

    const other = await open()
    other.socket.write('PUT /_matrix/client/v3/rooms/!a:hs/send/m.room.message/close HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}')
    await other.closed
    expect(other.received()).to.match(/^HTTP\/1\.1 200 OK\r\n/)
    expect(other.received()).to.match(/connection: close\r\n/i)
    expect(bodyOf(other.received())).to.equal('until-close')
    conn.socket.destroy()
  })

  it('should answer malformed requests with a Matrix 400 (431 for a huge head) and close, and keep serving', async () => {
    const cases: [string, number][] = [
      ['GET /_matrix/client/versions HTTP/1.1\r\nX: a\nY: b\r\n\r\n', 400],
      ['POST /_matrix/client/v3/createRoom HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}', 400],
      ['NOT HTTP AT ALL\r\n\r\n', 400],
      [`GET /_matrix/client/versions HTTP/1.1\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`, 431],
      ['POST /_matrix/media/v3/upload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 0],
    ]
    for (const [text, status] of cases) {
      const conn = await open()
      conn.socket.write(text)
      await conn.closed
      if (status === 0) {
        expect(conn.received(), text.slice(0, 40)).to.equal('') // broken framing mid-body: the connection just closes
        continue
      }
      expect(conn.received(), text.slice(0, 40)).to.match(new RegExp(`^HTTP/1\\.1 ${status} `))
      expect(JSON.parse(bodyOf(conn.received())), text.slice(0, 40)).to.have.property('errcode', 'M_UNKNOWN')
    }
    const before = echo.seen.length
    const conn = await open()
    conn.socket.write('GET /_matrix/client/versions HTTP/1.1\r\nHost: h\r\n\r\n')
    await conn.waitFor(1)
    expect(echo.seen.length).to.equal(before + 1)
    conn.socket.destroy()
  })

  it('should answer /health and refuse internal paths itself, reading their bodies and keeping the connection', async () => {
    const conn = await open()
    conn.socket.write('POST /metrics HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello')
    conn.socket.write('GET /health HTTP/1.1\r\nHost: h\r\n\r\n')
    conn.socket.write('HEAD /_matrix/client/versions HTTP/1.1\r\nHost: h\r\n\r\n')
    conn.socket.write('GET /_matrix/client/versions HTTP/1.1\r\nHost: h\r\n\r\n')
    const [notFound, health, head, get] = await conn.waitFor(4)
    expect(notFound).to.match(/^HTTP\/1\.1 404 /)
    expect(JSON.parse(bodyOf(notFound as string))).to.deep.equal({ errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' })
    expect([health?.split('\r\n')[0], bodyOf(health as string)]).to.deep.equal(['HTTP/1.1 200 OK', 'OK'])
    expect(bodyOf(head as string)).to.equal('')
    expect((JSON.parse(bodyOf(get as string)) as Echo).method).to.equal('GET')
    conn.socket.destroy()
  })
})
