import { expect } from 'chai'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { runMyelin } from '../../support/cli.js'

describe('myelin config check / run with a broken config', function () {
  this.timeout(30_000)

  async function file(name: string, text: string): Promise<string> {
    const path = join(await mkdtemp(join(tmpdir(), 'myelin-config-')), name)
    await writeFile(path, text)
    return path
  }

  it('should list all three mistakes at once, one line each, and exit 2', async () => {
    const shared = await file(
      'shared.yaml',
      ['server_name: "bad name!"', 'database: { url: "mysql://nope" }', 'replication_secret: short', 'signing_key: "ed25519 a1 AAAA"'].join('\n'),
    )
    for (const command of [['config', 'check'], ['run']]) {
      const res = await runMyelin([...command, '--config', shared])
      expect(res.code, res.stderr).to.equal(2)
      const problems = res.stderr.split('\n').filter((l) => l.startsWith('  - '))
      expect(problems.map((p) => p.split(':')[0])).to.deep.equal(['  - server_name', '  - database.url', '  - replication_secret'])
    }
  })

  it('should merge a worker file over the shared file and name unknown keys', async () => {
    const shared = await file('shared.yaml', ['server_name: hs.test', 'database: { url: "postgres://x@127.0.0.1/db" }', 'replication_secret: "0123456789abcdef0123"', 'signing_key: "ed25519 a1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="'].join('\n'))
    const worker = await file('api1.yaml', ['worker_name: api1', 'worker_app: api', 'listners: []'].join('\n'))
    const bad = await runMyelin(['config', 'check', '--config', shared, '--config', worker])
    expect(bad.code).to.equal(2)
    expect(bad.stderr).to.include('listners: unknown key')
    const deaf = await file('api3.yaml', ['worker_name: api3', 'worker_app: api'].join('\n'))
    const noListener = await runMyelin(['config', 'check', shared, deaf])
    expect([noListener.code, noListener.stderr]).to.deep.equal([2, 'myelin: invalid configuration:\n  - listeners: api worker "api3" has no listener with the client resource\n'])
    const good = await file('api2.yaml', ['worker_name: api2', 'worker_app: api', 'listeners: [{ port: 8081, resources: [client, metrics] }]'].join('\n'))
    const ok = await runMyelin(['config', 'check', shared, good])
    expect(ok.code, ok.stderr).to.equal(0)
    expect(ok.stdout).to.include('worker api2 (api) of hs.test')
  })

  it('should reject unknown flags with a clear error', async () => {
    const res = await runMyelin(['cluster', '--persisters', 'many', '--embedded'])
    expect(res.code).to.equal(2)
    expect(res.stderr).to.include('--persisters must be an integer')
  })
})
