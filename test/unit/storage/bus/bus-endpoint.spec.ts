import { expect } from 'chai'
import { pino } from 'pino'
import { BusEndpoint, reconnectBackoff } from '../../../../storage/bus/bus-endpoint.js'
import type { BusState } from '../../../../storage/bus/bus.js'
import type { BusMessage } from '../../../../storage/bus/bus-message.js'
import { isStorageError, StorageError } from '../../../../storage/errors.js'

function capturingLogger(): { log: pino.Logger; lines: Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = []
  const log = pino({ level: 'debug' }, { write: (line: string) => void lines.push(JSON.parse(line)) })
  return { log, lines }
}

describe('BusEndpoint', () => {
  it('should deliver decoded lines to every handler in registration order', () => {
    const { log } = capturingLogger()
    const endpoint = new BusEndpoint(log)
    const seen: string[] = []
    endpoint.subscribe((m) => seen.push(`a:${m.type}`))
    endpoint.subscribe((m) => seen.push(`b:${m.type}`))
    endpoint.deliverLine('REPLICATE api1')
    endpoint.deliverLine('POSITION events p1 1 2')
    expect(seen).to.deep.equal(['a:REPLICATE', 'b:REPLICATE', 'a:POSITION', 'b:POSITION'])
  })

  it('should log and drop malformed lines without calling handlers', () => {
    const { log, lines } = capturingLogger()
    const endpoint = new BusEndpoint(log)
    const seen: BusMessage[] = []
    endpoint.subscribe((m) => seen.push(m))
    endpoint.deliverLine('POSITION events p1 5 3')
    endpoint.deliverLine(undefined)
    expect(seen).to.deep.equal([])
    const warnings = lines.filter((l) => l.msg === 'malformed bus message dropped')
    expect(warnings).to.have.length(2)
    expect(warnings[0]).to.include({ line: 'POSITION events p1 5 3', reason: 'prev 5 is after next 3' })
  })

  it('should keep delivering when a handler throws, and log the failure', () => {
    const { log, lines } = capturingLogger()
    const endpoint = new BusEndpoint(log)
    const seen: string[] = []
    endpoint.subscribe(() => {
      throw new Error('boom')
    })
    endpoint.subscribe((m) => seen.push(m.type))
    endpoint.deliverLine('REPLICATE a')
    endpoint.deliverLine('REPLICATE b')
    expect(seen).to.deep.equal(['REPLICATE', 'REPLICATE'])
    expect(lines.filter((l) => l.msg === 'bus message handler failed')).to.have.length(2)
  })

  it('should remove only the unsubscribed registration, without disturbing a delivery in progress', () => {
    const endpoint = new BusEndpoint(capturingLogger().log)
    const seen: string[] = []
    const handler = (m: BusMessage): void => void seen.push(`shared:${m.type}`)
    const first = endpoint.subscribe(handler)
    endpoint.subscribe(handler)
    let stopLast: () => void = () => undefined
    endpoint.subscribe(() => {
      seen.push('unsubscriber')
      stopLast()
    })
    stopLast = endpoint.subscribe(() => seen.push('last'))
    first()
    endpoint.deliverLine('REPLICATE a')
    // `last` was removed during this delivery but still gets this message, not the next one.
    endpoint.deliverLine('REPLICATE b')
    expect(seen).to.deep.equal(['shared:REPLICATE', 'unsubscriber', 'last', 'shared:REPLICATE', 'unsubscriber'])
  })

  it('should report state changes only, and none after close', () => {
    const endpoint = new BusEndpoint(capturingLogger().log)
    const states: BusState[] = []
    endpoint.onStateChange((s) => states.push(s))
    endpoint.onStateChange(() => {
      throw new Error('state handler failure must not stop others')
    })
    expect(endpoint.state).to.equal('down')
    endpoint.setState('down')
    endpoint.setState('up')
    endpoint.setState('up')
    endpoint.setState('down')
    endpoint.setState('up')
    expect(states).to.deep.equal(['up', 'down', 'up'])
    endpoint.close()
    endpoint.setState('down')
    expect(states).to.deep.equal(['up', 'down', 'up'])
    expect(endpoint.state).to.equal('down')
  })

  it('should resolve waitUntilUp at the next up, and reject on timeout or close', async () => {
    const fail = (reason: string): Error => new StorageError('ES_UNAVAILABLE', reason)
    const endpoint = new BusEndpoint(capturingLogger().log)
    const waiting = endpoint.waitUntilUp(10_000, fail)
    endpoint.setState('up')
    await waiting
    await endpoint.waitUntilUp(0, fail)

    const other = new BusEndpoint(capturingLogger().log)
    const timedOut = await other.waitUntilUp(5, fail).catch((err: unknown) => err)
    expect(isStorageError(timedOut, 'ES_UNAVAILABLE') && timedOut.message).to.equal('timeout')

    const closing = other.waitUntilUp(10_000, fail).catch((err: unknown) => err)
    other.close()
    const closed = await closing
    expect(isStorageError(closed) && closed.message).to.equal('closed')
  })

  it('should connect once however often start is called, and publish only between start and close', async () => {
    const endpoint = new BusEndpoint(capturingLogger().log)
    const message: BusMessage = { type: 'REPLICATE', from: 'api1' }
    const notStarted = (() => {
      try {
        return endpoint.encodeForPublish(message)
      } catch (err) {
        return err
      }
    })()
    expect(isStorageError(notStarted, 'ES_UNAVAILABLE') && notStarted.message).to.equal('the bus is not started')

    let connects = 0
    const first = endpoint.start(() => void connects++, 10_000, 'not up')
    const second = endpoint.start(() => void connects++, 10_000, 'not up')
    expect(second).to.equal(first)
    endpoint.setState('up')
    await first
    expect(connects).to.equal(1)
    expect(endpoint.encodeForPublish(message)).to.equal('REPLICATE api1')

    endpoint.close()
    expect(() => endpoint.encodeForPublish(message)).to.throw(StorageError, 'the bus is closed')
    const refused = await endpoint.start(() => void connects++, 10_000, 'not up').catch((err: unknown) => err)
    expect(isStorageError(refused, 'ES_UNAVAILABLE') && refused.message).to.equal('the bus is closed')
    expect(connects).to.equal(1)
  })

  it('should reject a start not up in time with its reason, and one closed meanwhile', async () => {
    const slow = new BusEndpoint(capturingLogger().log)
    const timedOut = await slow.start(() => {}, 5, 'still reconnecting').catch((err: unknown) => err)
    expect(isStorageError(timedOut, 'ES_UNAVAILABLE') && timedOut.message).to.equal('still reconnecting')

    const closing = new BusEndpoint(capturingLogger().log)
    const waiting = closing.start(() => {}, 10_000, 'still reconnecting').catch((err: unknown) => err)
    closing.close()
    const closed = await waiting
    expect(isStorageError(closed, 'ES_UNAVAILABLE') && closed.message).to.equal('the bus was closed while starting')
  })

  it('should back off from 50 ms, doubling up to the cap', () => {
    const backoff = reconnectBackoff(2000)
    expect([0, 1, 2, 5, 6, 40].map(backoff)).to.deep.equal([50, 100, 200, 1600, 2000, 2000])
  })

  it('should deliver nothing after close', () => {
    const endpoint = new BusEndpoint(capturingLogger().log)
    const seen: BusMessage[] = []
    endpoint.subscribe((m) => seen.push(m))
    endpoint.close()
    endpoint.deliverLine('REPLICATE a')
    expect(seen).to.deep.equal([])
  })

  it('should log dropped hints: at debug when too large, at warn when a room ID is invalid', () => {
    const { log, lines } = capturingLogger()
    const endpoint = new BusEndpoint(log)
    const line = endpoint.encode({ type: 'POSITION', stream: 's', writer: 'w', prev: 1n, next: 1n, rooms: ['!a b'] })
    expect(line).to.equal('POSITION s w 1 1')
    endpoint.encode({ type: 'POSITION', stream: 's', writer: 'w', prev: 1n, next: 1n, rooms: Array(2000).fill('!abc:hs') })
    const dropped = lines.filter((l) => l.msg === 'room hint dropped from bus message')
    expect(dropped.map((l) => [l.level, l.droppedHint])).to.deep.equal([
      [40, 'invalid-room'],
      [20, 'too-large'],
    ])
  })
})
