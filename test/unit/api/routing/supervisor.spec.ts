import { expect } from 'chai'
import fc from 'fast-check'
import { formatListeningLine, parseListeningLine } from '../../../../api/routing/supervisor.js'

describe('parseListeningLine', () => {
  it('should read back every line formatListeningLine writes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 65535 }), (port) => {
        expect(parseListeningLine(formatListeningLine(port))).to.equal(port)
      }),
    )
    expect(parseListeningLine('  {"port":8081,"listening":true}  ')).to.equal(8081)
  })

  it('should ignore log lines and malformed ready lines', () => {
    for (const line of [
      '',
      'listening on 8081',
      '{"level":30,"msg":"listening","listening":true,"port":8081}',
      '{"listening":true}',
      '{"listening":"true","port":8081}',
      '{"listening":true,"port":"8081"}',
      '{"listening":true,"port":0}',
      '{"listening":true,"port":65536}',
      '{"listening":true,"port":80.5}',
      '{"listening":true,"port":8081',
      '[true,8081]',
      'null',
    ]) {
      expect(parseListeningLine(line), line).to.equal(undefined)
    }
  })

  it('should never throw on arbitrary output', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.json()), (line) => {
        const port = parseListeningLine(line)
        expect(port === undefined || (Number.isInteger(port) && port >= 1 && port <= 65535)).to.equal(true)
      }),
    )
  })
})
