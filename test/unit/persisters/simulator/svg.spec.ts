import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { runSimulation } from '../../../../persisters/simulator/simulate.js'
import { escapeXml, niceTicks, renderSvg } from '../../../../persisters/simulator/svg.js'

/** A rough XML check: balanced and properly nested tags, no stray `<` or bare `&` in text. */
function checkXml(xml: string): { tags: Map<string, number>; texts: string[] } {
  const body = xml.replace(/^<\?xml[^>]*\?>\s*/, '')
  const stack: string[] = []
  const tags = new Map<string, number>()
  const texts: string[] = []
  const tag = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/y
  let i = 0
  while (i < body.length) {
    const lt = body.indexOf('<', i)
    const text = body.slice(i, lt < 0 ? body.length : lt)
    if (/&(?!(amp|lt|gt|quot|apos);)/.test(text)) throw new Error(`bare & in ${JSON.stringify(text)}`)
    if (text.trim() !== '') texts.push(text)
    if (lt < 0) break
    tag.lastIndex = lt
    const m = tag.exec(body)
    if (!m) throw new Error(`malformed tag at ${JSON.stringify(body.slice(lt, lt + 60))}`)
    const [, closing, name, , selfClosing] = m
    if (closing) {
      const open = stack.pop()
      if (open !== name) throw new Error(`</${name}> closes <${open}>`)
    } else {
      tags.set(name!, (tags.get(name!) ?? 0) + 1)
      if (!selfClosing) stack.push(name!)
    }
    i = tag.lastIndex
  }
  if (stack.length > 0) throw new Error(`unclosed ${stack.join(', ')}`)
  return { tags, texts }
}

describe('renderSvg', () => {
  const result = runSimulation({
    distribution: { kind: 'zipf', rooms: 500, exponent: 1 },
    ratePerS: 400,
    durationS: 5,
    persisters: 3,
    pins: { '!room0:sim': 'persister2' },
  })

  it('should write a well-formed SVG with a title, three charts, axes and legends', () => {
    const dir = mkdtempSync(join(tmpdir(), 'myelin-svg-'))
    try {
      const file = join(dir, 'sim.svg')
      writeFileSync(file, renderSvg(result))
      const svg = readFileSync(file, 'utf8')
      expect(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"')).to.equal(true)
      const { tags, texts } = checkXml(svg)
      expect(tags.get('svg')).to.equal(1)
      expect(tags.get('polyline')).to.equal(3)
      expect(tags.get('g')).to.be.at.least(6)
      const all = texts.join('\n')
      for (const title of ['Myelin sharding simulation (seed 1)', 'Load per persister', 'Latency distribution', 'Rooms moved when persisters change']) {
        expect(all).to.include(title)
      }
      for (const label of ['persister1', 'persister3', 'events persisted', 'utilisation', 'commit latency', 'linear-position lag', 'rendezvous', 'modulo', 'expected for uniform hashing', '1 pinned room']) {
        expect(all, label).to.include(label)
      }
      expect(svg).to.not.match(/NaN|Infinity|undefined/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('should escape text taken from the input', () => {
    const rows = [
      { roomId: '!a<b>&"c":x', events: 5 },
      { roomId: '!d:x', events: 1 },
    ]
    const traced = runSimulation({ distribution: { kind: 'trace', rows, source: 'r&d <trace>.csv' }, ratePerS: 50, durationS: 2, persisters: 1 })
    const svg = renderSvg(traced)
    expect(() => checkXml(svg)).to.not.throw()
    expect(svg).to.include('r&amp;d &lt;trace&gt;.csv')
    expect(escapeXml(`<&>"'`)).to.equal('&lt;&amp;&gt;&quot;&apos;')
  })

  it('should have a checker that notices broken markup', () => {
    expect(() => checkXml('<svg><g></svg></g>')).to.throw(/closes/)
    expect(() => checkXml('<svg><text>a & b</text></svg>')).to.throw(/bare &/)
    expect(() => checkXml('<svg><g>')).to.throw(/unclosed/)
  })

  it('should choose round ticks that cover the maximum', () => {
    expect(niceTicks(37)).to.deep.equal([0, 10, 20, 30, 40])
    expect(niceTicks(0.9)).to.deep.equal([0, 0.2, 0.4, 0.6, 0.8, 1])
    expect(niceTicks(120_123)).to.deep.equal([0, 50_000, 100_000, 150_000])
    expect(niceTicks(0)).to.deep.equal([0, 0.2, 0.4, 0.6, 0.8, 1])
  })
})
