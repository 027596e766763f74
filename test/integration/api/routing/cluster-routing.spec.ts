import { fileURLToPath } from 'node:url'
import { expect } from 'chai'
import { createRouter, upstreamsFromProcesses, type Router } from '../../../../api/routing/router.js'
import { createSupervisor, type Supervisor } from '../../../../api/routing/supervisor.js'
import { createShardMap } from '../../../../persisters/shard-map.js'
import { silentLogger } from '../../../../storage/logger.js'

const fakeChild = fileURLToPath(new URL('./fixtures/fake-child.mjs', import.meta.url))

describe('supervisor and router together', function () {
  this.timeout(30_000)
  let supervisor: Supervisor
  let router: Router

  afterEach(async () => {
    await router?.close(100)
    await supervisor?.stop(2000)
  })

  it('should keep serving while a crashed api worker restarts, then use its new port', async () => {
    const names = ['api1', 'api2', 'persister1']
    supervisor = createSupervisor({
      children: names.map((name) => ({ name, role: name.startsWith('api') ? 'api' : 'persister', command: process.execPath, args: [fakeChild], env: { FAKE_NAME: name } })),
      log: silentLogger(),
      onOutput: () => {},
      initialBackoffMs: 200,
      onReady: () => router?.setUpstreams(upstreamsFromProcesses(supervisor.processes())),
    })
    const processes = await supervisor.start()
    router = createRouter({ upstreams: upstreamsFromProcesses(processes), shardMap: createShardMap({ writers: ['persister1'] }), log: silentLogger() })
    const { port } = await router.listen(0)
    const base = `http://127.0.0.1:${port}`

    const send = await fetch(`${base}/_matrix/client/v3/rooms/!a:hs.test/send/m.room.message/t1`, { method: 'PUT', body: '{}' })
    expect(((await send.json()) as { name: string }).name).to.equal('persister1')

    const api1 = processes.find((p) => p.name === 'api1')!
    await fetch(`http://127.0.0.1:${api1.port}/crash`).catch(() => undefined)
    const served = new Map<string, number>()
    const deadline = Date.now() + 10_000
    while (supervisor.processes()[0]!.restarts === 0 || supervisor.processes()[0]!.port === null || !served.has('api1')) {
      expect(Date.now()).to.be.below(deadline)
      const response = await fetch(`${base}/_matrix/client/versions`)
      expect(response.status).to.equal(200)
      const { name } = (await response.json()) as { name: string }
      served.set(name, (served.get(name) ?? 0) + 1)
      await new Promise((r) => setTimeout(r, 10))
    }
    const restarted = supervisor.processes()[0]!
    expect(restarted.port).to.not.equal(api1.port)
    expect(router.upstreams().api.find((u) => u.name === 'api1')?.port).to.equal(restarted.port)
    expect(served.get('api2')).to.be.greaterThan(0)
  })
})
