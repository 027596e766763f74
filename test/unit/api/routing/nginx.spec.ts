import { expect } from 'chai'
import { renderNginxConfig, type NginxWorker } from '../../../../api/routing/nginx.js'
import { parseConfig } from '../../../../storage/config.js'
import { expectStorageError } from '../../../support/expect-error.js'

function config(extra: Record<string, unknown> = {}) {
  return parseConfig({
    server_name: 'hs.test',
    database: { url: 'postgres://myelin@127.0.0.1/myelin' },
    replication_secret: 'a-replication-secret',
    signing_key: 'ed25519 a_1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA',
    ...extra,
  }, {})
}

const sharded = () =>
  config({
    instance_map: { persister1: { host: '127.0.0.1', port: 9101 }, persister2: { host: '127.0.0.1', port: 9102 } },
    stream_writers: { events: ['persister1', 'persister2'] },
    room_pins: { '!hot:hs.test': 'persister2', '!warm:hs.test': 'persister1' },
  })

const workers: NginxWorker[] = [
  { name: 'api1', role: 'api', host: '127.0.0.1', port: 8081 },
  { name: 'api2', role: 'api', host: '10.0.0.2', port: 8082 },
  { name: 'persister1', role: 'persister', host: '127.0.0.1', port: 8091 },
  { name: 'persister2', role: 'persister', host: '127.0.0.1', port: 8092 },
  { name: 'background', role: 'background', host: '127.0.0.1', port: 8099 },
]

/** The server lines of one upstream block. */
function upstreamServers(text: string, name: string): string[] {
  const block = new RegExp(`upstream ${name} \\{([^}]*)\\}`).exec(text)?.[1]
  if (block === undefined) throw new Error(`no upstream ${name}`)
  return [...block.matchAll(/server (\S+);/g)].map((m) => m[1]!)
}

const expectConfigError = (fn: () => unknown, pattern: RegExp) => expectStorageError(fn, 'ES_CONFIG_INVALID', pattern)

describe('renderNginxConfig', () => {
  it('should hash syncs by user and room writes by room over the api workers, the rest round robin', () => {
    const text = renderNginxConfig(sharded(), { listenPort: 8008, workers })
    for (const name of ['myelin_api', 'myelin_sync', 'myelin_rooms']) expect(upstreamServers(text, name), name).to.deep.equal(['127.0.0.1:8081', '10.0.0.2:8082'])
    expect(text).to.match(/upstream myelin_sync \{\s+hash \$myelin_user consistent;/)
    expect(text).to.match(/upstream myelin_rooms \{\s+hash \$myelin_room consistent;/)
    expect(text).to.match(/upstream myelin_api \{\s+server/)
    expect(text).to.include('listen 0.0.0.0:8008;')
    expect(text).to.include('"~^Bearer syt_(?<myelin_header_user>.+)_[A-Za-z0-9]+_[A-Za-z0-9]+$" $myelin_header_user;')
    expect(text).to.include('location ~ ^/_matrix/client/(r0|v3)/sync$ { proxy_pass http://myelin_sync; }')
    expect(text).to.include('location ~ ^/_matrix/client/unstable/org\\.matrix\\.simplified_msc3575/sync$ { proxy_pass http://myelin_sync; }')
    expect(text).to.include('location / { proxy_pass http://myelin_api; }')
    expect(text).to.not.include('8099')
  })

  it('should send writes to pinned rooms straight to the pinned persister', () => {
    const text = renderNginxConfig(sharded(), { listenPort: 8008, workers })
    expect(text).to.include('"1!hot:hs.test" myelin_persister_persister2;')
    expect(text).to.include('"1!warm:hs.test" myelin_persister_persister1;')
    expect(upstreamServers(text, 'myelin_persister_persister2')).to.deep.equal(['127.0.0.1:8092'])
    // A pin whose persister has no client listener in `workers` falls back to the api workers.
    const without1 = renderNginxConfig(sharded(), { listenPort: 8008, workers: workers.filter((w) => w.name !== 'persister1') })
    expect(without1).to.not.include('!warm:hs.test')
    expect(without1).to.not.include('upstream myelin_persister_persister1')
  })

  it('should route a monolith (no api worker) to the main process', () => {
    const text = renderNginxConfig(config(), { listenPort: 80, workers: [{ name: 'main', role: 'main', host: '::1', port: 8008 }] })
    expect(upstreamServers(text, 'myelin_api')).to.deep.equal(['[::1]:8008'])
  })

  it('should write the main-context settings it is given', () => {
    const text = renderNginxConfig(config(), {
      listenPort: 8448,
      listenAddress: '127.0.0.1',
      workers,
      main: { user: 'nobody', workerProcesses: 'auto', pidFile: 'nginx.pid', errorLog: 'logs/error.log', accessLog: 'logs/access.log', foreground: true, tempDir: 'tmp' },
    })
    for (const line of ['user nobody;', 'worker_processes auto;', 'daemon off;', 'pid nginx.pid;', 'error_log logs/error.log warn;', 'access_log logs/access.log;', 'client_body_temp_path tmp/client_body;', 'listen 127.0.0.1:8448;']) {
      expect(text).to.include(line)
    }
    const plain = renderNginxConfig(config(), { listenPort: 8448, workers })
    expect(plain).to.not.match(/^(user|daemon|pid) /m)
    expect(plain).to.include('error_log stderr warn;')
  })

  it('should refuse input it cannot write safely, listing every problem', () => {
    expectConfigError(() => renderNginxConfig(config(), { listenPort: 8008, workers: [workers[2]!] }), /no worker with role api or main/)
    expectConfigError(
      () => renderNginxConfig(config(), { listenPort: 8008, workers: [{ name: 'api 1;', role: 'api', host: 'h}', port: 70000 }] }),
      /worker name "api 1;".*host "h}".*port 70000/,
    )
    const badPin = config({ instance_map: { p: { host: 'h', port: 1 } }, stream_writers: { events: ['p'] }, room_pins: { '!a";b:hs.test': 'p' } })
    expectConfigError(() => renderNginxConfig(badPin, { listenPort: 8008, workers: [workers[0]!, { name: 'p', role: 'persister', host: 'h', port: 2 }] }), /pinned room/)
  })
})
