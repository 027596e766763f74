import { expect } from 'chai'
import { ConfigError, parseConfig } from '../../../storage/config.js'
import { generateSigningKey } from '../../../storage/events/signing.js'

const minimal = {
  server_name: 'example.org',
  database: { url: 'postgres://127.0.0.1/myelin' },
  signing_key: generateSigningKey('t'),
  replication_secret: 'a-long-enough-secret-value',
}

describe('parseConfig: database and persister tuning', () => {
  it('should default to prepared statements and group commit of up to 4 transactions of at most 1,000 events, a second beside the first only for 100 waiting', () => {
    const config = parseConfig(minimal, {})
    expect(config.database.prepare_statements).to.equal(true)
    expect(config.persister).to.include({ transaction_concurrency: 4, max_transaction_events: 1000, parallel_transaction_events: 100, gather_ms: 4, gather_events: 48, gather_after_events: 4 })
  })

  it('should take prepare_statements: false and persister tuning', () => {
    const config = parseConfig({ ...minimal, database: { ...minimal.database, prepare_statements: false }, persister: { transaction_concurrency: 1, max_transaction_events: 50, parallel_transaction_events: 0 } }, {})
    expect(config.database.prepare_statements).to.equal(false)
    expect(config.persister).to.include({ transaction_concurrency: 1, max_transaction_events: 50, parallel_transaction_events: 0, max_batch: 200 })
  })

  it('should list every bad tuning value at once', () => {
    let thrown: unknown
    try {
      parseConfig({ ...minimal, database: { ...minimal.database, prepare_statements: 'yes' }, persister: { transaction_concurrency: 0, max_transaction_events: 1.5 } }, {})
    } catch (err) {
      thrown = err
    }
    expect(thrown).to.be.instanceOf(ConfigError)
    const problems = (thrown as ConfigError).problems.join('\n')
    expect(problems).to.match(/database\.prepare_statements/)
    expect(problems).to.match(/persister\.transaction_concurrency/)
    expect(problems).to.match(/persister\.max_transaction_events/)
  })

  it('should default the push gateways blocklist to private ranges, and list every bad push setting at once', () => {
    expect(parseConfig(minimal, {}).push.ip_range_blocklist).to.include.members(['127.0.0.0/8', '10.0.0.0/8', '::1/128'])
    expect(parseConfig({ ...minimal, push: { ip_range_blocklist: ['10.1.0.0/16', 'fd00::/8'] } }, {}).push.ip_range_blocklist).to.deep.equal(['10.1.0.0/16', 'fd00::/8'])
    let thrown: unknown
    try {
      parseConfig({ ...minimal, push: { ip_range_blocklist: ['10.0.0.0/33', 'localhost/8', '::1'], retry_initial_ms: 0 } }, {})
    } catch (err) {
      thrown = err
    }
    const problems = (thrown as ConfigError).problems.join('\n')
    expect(problems.match(/push\.ip_range_blocklist/g)).to.have.length(3)
    expect(problems).to.match(/push\.retry_initial_ms/)
  })

  it('should list broken cross-references with the other problems, not only once the rest is valid', () => {
    const problemsOf = (input: Record<string, unknown>): string[] => {
      try {
        parseConfig(input, {})
      } catch (err) {
        if (err instanceof ConfigError) return [...err.problems]
        throw err
      }
      return []
    }
    const crossReferences = {
      instance_map: { persister1: { host: '10.0.0.2', port: 9001 } },
      stream_writers: { events: ['persister1', 'ghost', 'persister1', 7] },
      room_pins: { '!hot:example.org': 'phantom' },
      worker_name: 'persister9',
      worker_app: 'persister',
    }
    const alone = problemsOf({ ...minimal, ...crossReferences })
    const withOthers = problemsOf({ ...minimal, ...crossReferences, server_name: '', persister: { max_batch: 0 } })
    const expected = [
      /^room_pins\.!hot:example\.org: pins to "phantom"/,
      /^stream_writers\.events\[1\]: "ghost" has no instance_map entry/,
      /^stream_writers\.events\[2\]: "persister1" is listed twice/,
      /^worker_name: persister "persister9" is not in stream_writers\.events/,
    ]
    for (const pattern of expected) {
      expect(withOthers.some((p) => pattern.test(p)), `${pattern} in ${withOthers.join(' | ')}`).to.equal(true)
      expect(alone.some((p) => pattern.test(p)), `${pattern} in ${alone.join(' | ')}`).to.equal(true)
    }
    expect(withOthers.some((p) => p.startsWith('server_name'))).to.equal(true)
    expect(withOthers.some((p) => p.startsWith('persister.max_batch'))).to.equal(true)
    expect(withOthers.some((p) => p.startsWith('stream_writers.events[3]'))).to.equal(true)
  })

  it('should refuse an api worker that serves no clients and a persister not listening for replication where instance_map says', () => {
    const problemsOf = (worker: Record<string, unknown>): string[] => {
      try {
        parseConfig({ ...minimal, instance_map: { persister1: { host: '10.0.0.2', port: 9001 } }, stream_writers: { events: ['persister1'] }, ...worker }, {})
      } catch (err) {
        if (err instanceof ConfigError) return [...err.problems]
        throw err
      }
      return []
    }
    const listener = (port: number, resources?: string[]) => ({ port, bind_address: '0.0.0.0', ...(resources && { resources }) })
    const api = (listeners: unknown[]) => problemsOf({ worker_name: 'api1', worker_app: 'api', listeners })
    const persister = (listeners: unknown[]) => problemsOf({ worker_name: 'persister1', worker_app: 'persister', listeners })
    expect(api([listener(8081, ['metrics'])])).to.deep.equal(['listeners: api worker "api1" has no listener with the client resource'])
    expect(api([])).to.have.length(1)
    expect(api([listener(8081, ['client', 'metrics'])])).to.deep.equal([])
    expect(api([listener(8081)]), 'resources default to all').to.deep.equal([])
    const unreachable = ['listeners: persister "persister1" is reached at port 9001 (instance_map) but has no listener there with the replication resource']
    expect(persister([listener(9001, ['client'])])).to.deep.equal(unreachable)
    expect(persister([listener(9002, ['replication'])])).to.deep.equal(unreachable)
    expect(persister([listener(9002, ['client']), listener(9001, ['replication'])])).to.deep.equal([])
    expect(persister([listener(9001)])).to.deep.equal([])
    expect(persister([listener(0)]), 'a port picked at start cannot be checked').to.deep.equal([])
  })
})
