import { expect } from 'chai'
import { parseWorkerFlag, proxyWorkers } from '../../../../api/cli/proxy-config-command.js'
import { parseConfig } from '../../../../storage/config.js'
import { generateSigningKey } from '../../../../storage/events/signing.js'

describe('myelin proxy-config: the workers nginx routes to', () => {
  const config = parseConfig(
    {
      server_name: 'example.org',
      database: { url: 'postgres://127.0.0.1/myelin' },
      signing_key: generateSigningKey('t'),
      replication_secret: 'a-long-enough-secret-value',
      instance_map: { persister1: { host: '10.0.0.2', port: 9001 }, persister2: { host: '10.0.0.3', port: 9001 }, api9: { host: '10.0.0.9', port: 8081 } },
      stream_writers: { events: ['persister1', 'persister2'] },
    },
    {},
  )
  const summary = (workers: { name: string; role: string; host: string; port: number }[]) => workers.map((w) => `${w.name}=${w.role}@${w.host}:${w.port}`).sort()

  it("should take instance_map's writers as persisters and its other entries as api workers", () => {
    expect(summary(proxyWorkers(config))).to.deep.equal(['api9=api@10.0.0.9:8081', 'persister1=persister@10.0.0.2:9001', 'persister2=persister@10.0.0.3:9001'])
  })

  it('should add the --worker flags to them, a flag replacing the entry of the same name', () => {
    const flags = ['api1=api@10.0.0.5:8081', 'persister2=persister@10.0.0.3:8008'].map(parseWorkerFlag)
    expect(summary(proxyWorkers(config, flags))).to.deep.equal([
      'api1=api@10.0.0.5:8081',
      'api9=api@10.0.0.9:8081',
      'persister1=persister@10.0.0.2:9001',
      'persister2=persister@10.0.0.3:8008',
    ])
  })

  it('should refuse a malformed --worker in words', () => {
    for (const bad of ['api1', 'api1=api@host', 'api1=cook@h:1', 'api1=api@h:70000', 'a b=api@h:1']) {
      expect(() => parseWorkerFlag(bad), bad).to.throw(/name=role@host:port|out of range/)
    }
  })
})
