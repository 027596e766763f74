import { expect } from 'chai'
import { pino } from 'pino'
import { createPositionWatch, syncStreams } from '../../../api/position-watch.js'
import { setAccountData } from '../../../storage/account-data.js'
import { updatePresence } from '../../../storage/presence.js'
import { syncPositions } from '../../../storage/sync.js'
import { countingQueries, createTestDatabase, type TestDatabase } from '../../support/db.js'

describe('position watches of the sync streams', function () {
  this.timeout(30_000)
  let t: TestDatabase
  before(async () => {
    t = await createTestDatabase()
  })
  after(() => t.drop())

  const log = pino({ level: 'silent' })

  it('should poll the positions of all the streams with one query per interval, and still wake each stream', async () => {
    const counted = countingQueries(t.db)
    const streams = syncStreams(counted.db)
    const intervalMs = 100
    const watches = Object.values(streams).map((stream) => createPositionWatch({ stream, log, intervalMs }))
    const start = await syncPositions(t.db)
    const stop = new AbortController()
    // Waiters far ahead of every position: each poll reads positions only.
    const idle = watches.map((watch) => watch.wait('@nobody:hs', 1n << 60n, 10_000, stop.signal))
    const t0 = performance.now()
    await new Promise((resolve) => setTimeout(resolve, 1_000))
    const polls = counted.queries
    const intervals = (performance.now() - t0) / intervalMs
    // Shared: about one query per interval for all the watches (a poll per watch would make
    // `watches.length` times as many). A loaded machine's timers drift, hence the margin.
    expect(watches.length).to.be.at.least(4)
    expect(polls, `about one query per interval for all ${watches.length} watches, over ${intervals.toFixed(1)} intervals`).to.be.within(Math.floor(intervals / 2), Math.ceil(intervals * 2))

    // Each stream still wakes its own waiter.
    const accountData = createPositionWatch({ stream: streams.accountData, log, intervalMs })
    const presence = createPositionWatch({ stream: streams.presence, log, intervalMs })
    const woken = [accountData.wait('@alice:hs', start.accountData, 10_000, stop.signal), presence.wait('@bob:hs', start.presence, 10_000, stop.signal)]
    await setAccountData(t.db, { userId: '@alice:hs', type: 'm.direct', content: {} })
    await updatePresence(t.db, '@bob:hs', { kind: 'set', state: 'online' }, Date.now())
    expect(await Promise.all(woken)).to.deep.equal(['advanced', 'advanced'])
    stop.abort()
    expect(await Promise.all(idle)).to.deep.equal(watches.map(() => 'aborted'))
  })
})
