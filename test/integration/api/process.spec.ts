import { expect } from 'chai'
import { randomUUID } from 'node:crypto'
import { startApi, type ApiHarness } from './api-harness.js'
import { createRoomEvents, newRoomId, user } from '../persisters/harness.js'

describe('api/process: a monolith composed from its config', function () {
  this.timeout(20_000)
  let h: ApiHarness

  beforeEach(async () => {
    h = await startApi({ roomRoutes: () => [] })
  })
  afterEach(async () => {
    await h.close()
  })

  it('should persist through the direct sender and answer only once its own tracker covers the events', async () => {
    const services = h.process!.services!
    const roomId = newRoomId()
    const persisted = await services.sender.send({ requestId: randomUUID(), roomId, events: createRoomEvents(user('alice')) })
    expect(persisted).to.have.length(5)
    const last = persisted.at(-1)!.stream_ordering
    expect(services.tracker.linearPosition() >= last, 'tracker covers the last event').to.equal(true)
    expect(h.process!.persister!.writer).to.equal('main')
  })

  it('should not serve the metrics and health routes before listening on a listener that asks for them', async () => {
    const res = await h.call('GET', '/metrics')
    expect(res.statusCode).to.equal(404)
  })

  it('should serve /health and /metrics with persister and HTTP metrics on its listener', async () => {
    await h.process!.services!.sender.send({ requestId: randomUUID(), roomId: newRoomId(), events: createRoomEvents(user('bob')) })
    const proc = h.process!
    const [port] = await proc.listen([{ port: 0, bind_address: '127.0.0.1', resources: ['client', 'metrics', 'health'] }])
    const health = await fetch(`http://127.0.0.1:${port}/health`)
    expect(await health.text()).to.equal('OK')
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    expect(metrics).to.match(/myelin_events_persisted_total\{[^}]*\} 5/)
    expect(metrics).to.include('myelin_http_request_duration_seconds')
    expect(metrics).to.match(/myelin_bus_up\{[^}]*transport="memory"[^}]*\} 1/)
    expect(metrics).to.match(/myelin_writer_position\{[^}]*stream="events",writer="main"[^}]*\} [1-9]/)
    expect(metrics).to.match(/myelin_stream_position\{[^}]*writer="main"[^}]*\} [1-9]/)
    expect(metrics).to.match(/myelin_replication_lag_ids\{[^}]*\} 0/)
  })
})
