import { expect } from 'chai'
import { formatJson, formatReport, overloadWarnings } from '../../../../persisters/simulator/report.js'
import { runSimulation } from '../../../../persisters/simulator/simulate.js'

describe('simulator report', () => {
  const stable = runSimulation({ distribution: { kind: 'uniform', rooms: 400 }, ratePerS: 300, durationS: 4, persisters: 2, pins: { '!room7:sim': 'persister2' } })

  it('should show one row per persister with its figures', () => {
    const text = formatReport(stable)
    for (const p of stable.persisters) {
      const row = text.split('\n').find((line) => line.trimStart().startsWith(`${p.name} `))
      expect(row, p.name).to.not.equal(undefined)
      expect(row).to.include(p.events.toLocaleString('en-US'))
      expect(row).to.include(`${(p.utilisation * 100).toFixed(1)}%`)
    }
    expect(text).to.include('uniform over 400 rooms')
    expect(text).to.include('pins !room7:sim=persister2')
    expect(text).to.include('!room7:sim (pinned)')
    expect(text).to.include('calibration built-in defaults')
    expect(text).to.not.include('warning:')
    expect(overloadWarnings(stable)).to.deep.equal([])
  })

  it('should align every table row with its header', () => {
    const lines = formatReport(stable).split('\n')
    lines.forEach((line, i) => {
      if (/^ {2}-+( {2}-+)+$/.test(line)) {
        const header = lines[i - 1]!
        const widths = line.trim().split('  ').map((dashes) => dashes.length)
        const total = 2 + widths.reduce((a, b) => a + b, 0) + 2 * (widths.length - 1)
        expect(line.length).to.equal(total)
        expect(header.length).to.be.at.most(total)
      }
    })
  })

  it('should warn about overload and a room near its single-room limit', () => {
    const overloaded = runSimulation({ distribution: { kind: 'zipf', rooms: 100, exponent: 2 }, ratePerS: 4000, durationS: 5, persisters: 2 })
    const warnings = overloadWarnings(overloaded)
    expect(warnings.some((w) => /to drain after arrivals stopped/.test(w))).to.equal(true)
    expect(warnings.some((w) => /!room0:sim receives .* near the single-room limit/.test(w))).to.equal(true)
    expect(formatReport(overloaded)).to.match(/\nwarning: queues took/)
  })

  it('should print JSON that parses back to the result', () => {
    expect(JSON.parse(formatJson(stable))).to.deep.equal(JSON.parse(JSON.stringify(stable)))
    expect(formatJson(stable).endsWith('}\n')).to.equal(true)
  })
})
