import { createServer } from 'node:net'
import { expect } from 'chai'
import fc from 'fast-check'
import { clusterPorts } from '../../../../api/cli/cluster-command.js'
import { freePorts } from '../../../../api/cli/ports.js'

describe('cluster ports', () => {
  it('should hand out distinct ports that are free to bind', async () => {
    const ports = await freePorts(40)
    expect(new Set(ports).size).to.equal(40)
    for (const port of ports.slice(0, 5)) {
      const server = createServer()
      await new Promise<void>((resolve, reject) => server.once('error', reject).listen(port, '127.0.0.1', () => resolve()))
      await new Promise((resolve) => server.close(resolve))
    }
  })

  it('should give every process of a cluster its own port, even when each allocation reuses the ports of the last', async () => {
    // Like the kernel handing a just-released port out again: every call starts from the same ports.
    const reusing = async (n: number) => Array.from({ length: n }, (_, i) => 40_000 + i)
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 4 }),
        fc.oneof(fc.constant(0), fc.constant(8008), fc.integer({ min: 40_000, max: 40_013 })),
        async (persisters, apiWorkers, port) => {
          const got = await clusterPorts({ persisters, apiWorkers, port }, reusing)
          const all = [...got.persisters, ...got.apiWorkers, got.router, got.routerMetrics]
          expect(got.persisters).to.have.length(persisters)
          expect(got.apiWorkers).to.have.length(apiWorkers)
          expect(new Set(all).size, JSON.stringify(got)).to.equal(all.length)
          if (port !== 0) expect(got.router).to.equal(port)
        },
      ),
    )
  })
})
