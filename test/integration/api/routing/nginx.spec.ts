import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { freePort } from '../../../../api/cli/ports.js'
import { renderNginxConfig } from '../../../../api/routing/nginx.js'
import { parseConfig } from '../../../../storage/config.js'
import { patternBytes, sha256, startEchoUpstream, sytToken, type Echo, type EchoUpstream } from './echo-upstream.js'

const nginxBinary = '/usr/sbin/nginx'
const client = '/_matrix/client/v3'
const pinnedRoom = '!hot:hs.test'

describe('nginx config from renderNginxConfig (real nginx)', function () {
  this.timeout(30_000)
  let dir: string
  let nginx: ChildProcess
  let nginxLog = ''
  let base: string
  const upstreams = new Map<string, EchoUpstream>()

  before(async () => {
    if (!existsSync(nginxBinary)) throw new Error(`${nginxBinary} is missing: run the tests through scripts/test-services.sh (installs Debian's nginx)`)
    for (const name of ['api1', 'api2', 'api3', 'persister1', 'persister2']) upstreams.set(name, await startEchoUpstream(name))
    const config = parseConfig({
      server_name: 'hs.test',
      database: { url: 'postgres://myelin@127.0.0.1/myelin' },
      replication_secret: 'a-replication-secret',
      signing_key: 'ed25519 a_1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
      instance_map: { persister1: { host: '127.0.0.1', port: 9101 }, persister2: { host: '127.0.0.1', port: 9102 } },
      stream_writers: { events: ['persister1', 'persister2'] },
      room_pins: { [pinnedRoom]: 'persister2' },
    })
    const listenPort = await freePort()
    dir = await mkdtemp(join(tmpdir(), 'myelin-nginx-'))
    await mkdir(join(dir, 'tmp'))
    const text = renderNginxConfig(config, {
      listenPort,
      listenAddress: '127.0.0.1',
      workers: [...upstreams.values()].map((u) => ({ name: u.name, role: u.name.startsWith('api') ? 'api' : 'persister', host: '127.0.0.1', port: u.port })),
      main: { ...(process.getuid?.() === 0 ? { user: 'root' } : {}), pidFile: 'nginx.pid', foreground: true, tempDir: 'tmp' },
    })
    await writeFile(join(dir, 'nginx.conf'), text)
    nginx = spawn(nginxBinary, ['-e', 'stderr', '-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'pipe', 'pipe'] })
    nginx.stdout?.on('data', (d: Buffer) => (nginxLog += d.toString()))
    nginx.stderr?.on('data', (d: Buffer) => (nginxLog += d.toString()))
    base = `http://127.0.0.1:${listenPort}`
    for (let i = 0; ; i++) {
      if (nginx.exitCode !== null) throw new Error(`nginx exited: ${nginxLog}`)
      try {
        await fetch(`${base}/_matrix/client/versions`)
        break
      } catch {
        if (i > 100) throw new Error(`nginx did not start: ${nginxLog}`)
        await new Promise((r) => setTimeout(r, 50))
      }
    }
  })

  after(async () => {
    if (nginx && nginx.exitCode === null) {
      const exited = new Promise((resolve) => nginx.once('exit', resolve))
      nginx.kill('SIGTERM')
      await exited
    }
    for (const u of upstreams.values()) await u.close()
    if (dir) await rm(dir, { recursive: true, force: true })
  })

  async function send(method: string, path: string, init: { headers?: Record<string, string>; body?: Buffer } = {}): Promise<Echo> {
    const response = await fetch(`${base}${path}`, { method, headers: init.headers, body: init.body })
    expect(response.status, `${method} ${path}: ${nginxLog}`).to.equal(200)
    return (await response.json()) as Echo
  }

  it('should route every /sync of one user to the same api worker, whatever the device or token placement', async () => {
    const localparts = ['alice', 'bob', 'carol', 'dave', 'erin', 'ÿÿÿ_x', 'mallory', 'oscar', 'peggy', 'trent', 'victor', 'walter']
    const chosen = new Map<string, string>()
    for (const localpart of localparts) {
      for (const device of ['phone', 'laptop']) {
        const token = sytToken(localpart, `${localpart}/${device}`)
        for (const path of [`${client}/sync?since=s1`, '/_matrix/client/r0/sync', `${client}/events`, `${client}/initialSync`, '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync?pos=a_1']) {
          const method = path.includes('simplified_msc3575') ? 'POST' : 'GET'
          const byHeader = await send(method, path, { headers: { authorization: `Bearer ${token}` } })
          const byParam = await send(method, `${path}${path.includes('?') ? '&' : '?'}access_token=${token}`)
          for (const echo of [byHeader, byParam]) {
            expect(echo.upstream, `${localpart} ${path}`).to.match(/^api/)
            expect(chosen.get(localpart) ?? echo.upstream, `${localpart} ${path}`).to.equal(echo.upstream)
            chosen.set(localpart, echo.upstream)
          }
        }
      }
    }
    expect(new Set(chosen.values()).size, 'users spread over the api workers').to.be.greaterThan(1)
  })

  it('should send writes to a pinned room to its persister, decoded or not, and other room writes by room to api workers', async () => {
    const encoded = encodeURIComponent(pinnedRoom)
    expect((await send('PUT', `${client}/rooms/${pinnedRoom}/send/m.room.message/t1`, { body: Buffer.from('{}') })).upstream).to.equal('persister2')
    expect((await send('PUT', `${client}/rooms/${encoded}/send/m.room.message/t2`, { body: Buffer.from('{}') })).upstream).to.equal('persister2')
    expect((await send('PUT', `/_matrix/client/r0/rooms/${encoded}/state/m.room.name/`, { body: Buffer.from('{}') })).upstream).to.equal('persister2')
    expect((await send('POST', `${client}/rooms/${encoded}/invite`, { body: Buffer.from('{}') })).upstream).to.equal('persister2')
    expect((await send('POST', `${client}/join/${encoded}`, { body: Buffer.from('{}') })).upstream).to.equal('persister2')
    const echo = await send('PUT', `${client}/rooms/${encoded}/send/m.room.message/t3`, { body: Buffer.from('{}') })
    expect(echo.url, 'the original URI is forwarded').to.equal(`${client}/rooms/${encoded}/send/m.room.message/t3`)
    expect(echo.headers['x-forwarded-for']).to.equal('127.0.0.1')

    // Reads of the pinned room, joins by alias: not room writes.
    expect((await send('GET', `${client}/rooms/${encoded}/state/m.room.name/`)).upstream).to.match(/^api/)
    expect((await send('GET', `${client}/rooms/${encoded}/messages`)).upstream).to.match(/^api/)
    expect((await send('POST', `${client}/join/${encodeURIComponent('#alias:hs.test')}`, { body: Buffer.from('{}') })).upstream).to.match(/^api/)

    const perRoom = new Map<string, Set<string>>()
    for (let i = 0; i < 12; i++) {
      for (let txn = 0; txn < 3; txn++) {
        const room = `!room${i}:hs.test`
        const { upstream } = await send('PUT', `${client}/rooms/${encodeURIComponent(room)}/send/m.room.message/t${txn}`, { body: Buffer.from('{}') })
        perRoom.set(room, (perRoom.get(room) ?? new Set()).add(upstream))
      }
    }
    for (const [room, set] of perRoom) {
      expect([...set], room).to.have.length(1)
      expect([...set][0], room).to.match(/^api/)
    }
    expect(new Set([...perRoom.values()].flatMap((s) => [...s])).size, 'rooms spread over the api workers').to.be.greaterThan(1)
  })

  it('should spread other requests round robin over the api workers only', async () => {
    const counts = new Map<string, number>()
    for (let i = 0; i < 9; i++) {
      const { upstream } = await send('GET', `${client}/rooms/!r:hs.test/messages?dir=b`)
      counts.set(upstream, (counts.get(upstream) ?? 0) + 1)
    }
    expect(Object.fromEntries(counts)).to.deep.equal({ api1: 3, api2: 3, api3: 3 })
  })

  it('should pass large request and response bodies through unchanged', async () => {
    const big = patternBytes(8 * 1024 * 1024 + 17)
    const upload = await send('POST', '/_matrix/media/v3/upload?filename=big.bin', { headers: { 'content-type': 'application/octet-stream' }, body: big })
    expect(upload.bodyBytes).to.equal(big.length)
    expect(upload.bodySha256).to.equal(sha256(big))
    const pinned = await send('PUT', `${client}/rooms/${encodeURIComponent(pinnedRoom)}/send/m.room.message/big`, { body: big })
    expect([pinned.upstream, pinned.bodyBytes, pinned.bodySha256]).to.deep.equal(['persister2', big.length, sha256(big)])

    const bytes = 6 * 1024 * 1024 + 5
    const response = await fetch(`${base}/_matrix/media/v3/download/hs.test/x?bytes=${bytes}`)
    expect(response.status).to.equal(200)
    const data = Buffer.from(await response.arrayBuffer())
    expect(sha256(data)).to.equal(sha256(patternBytes(bytes)))
  })
})
