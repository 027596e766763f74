import { expect } from 'chai'
import { jsonProblem, maxJsonDepth } from '../../../api/json-body.js'
import { createRateLimiter } from '../../../api/rate-limiter.js'
import { redactUrl } from '../../../api/request-logging.js'
import { createTtlCache } from '../../../api/ttl-cache.js'
import { createUserWaiters } from '../../../api/user-waiters.js'
import { checkLocalpart, loginUserId } from '../../../api/user-ids.js'

describe('api small parts', () => {
  describe('createUserWaiters', () => {
    it('should wake the chosen waiters of a user only, time out or abort the others, and report when empty', async () => {
      let emptied = 0
      const waiters = createUserWaiters<number>({ onEmpty: () => emptied++ })
      const abort = new AbortController()
      const early = waiters.wait('@a:hs', 1, 5000, new AbortController().signal)
      const late = waiters.wait('@a:hs', 9, 5000, new AbortController().signal)
      const other = waiters.wait('@b:hs', 1, 30, new AbortController().signal)
      const aborted = waiters.wait('@c:hs', 1, 5000, abort.signal)
      expect(waiters.size).to.equal(3)
      waiters.wake('@a:hs', (after) => 5 > after)
      abort.abort()
      expect(await early).to.equal('advanced')
      expect(await aborted).to.equal('aborted')
      expect(await other).to.equal('timeout')
      expect(waiters.size, '@a:hs still has its late waiter').to.equal(1)
      expect(emptied).to.equal(0)
      waiters.wake('@a:hs')
      expect(await late).to.equal('advanced')
      expect([waiters.size, emptied]).to.deep.equal([0, 1])
    })

    it('should wake a waiter of several keys through any one of them, once, and unregister it from all', async () => {
      let emptied = 0
      const waiters = createUserWaiters<number>({ onEmpty: () => emptied++ })
      const rooms = waiters.wait(['!a:hs', '!b:hs', '!a:hs'], 4, 5000, new AbortController().signal)
      const onlyB = waiters.wait(['!b:hs'], 4, 5000, new AbortController().signal)
      const none = waiters.wait([], 4, 20, new AbortController().signal)
      expect(waiters.size).to.equal(2)
      waiters.wake('!a:hs', (after) => 3 > after)
      waiters.wake('!a:hs', (after) => 7 > after)
      expect(await rooms).to.equal('advanced')
      expect(waiters.size, '!b:hs keeps only its own waiter').to.equal(1)
      expect(await none).to.equal('timeout')
      expect(emptied).to.equal(0)
      waiters.wake('!b:hs')
      expect(await onlyB).to.equal('advanced')
      expect([waiters.size, emptied]).to.deep.equal([0, 1])
    })
  })

  describe('createTtlCache', () => {
    it('should remember a value for its TTL only, per key, and drop the oldest beyond its size', () => {
      let now = 1_000
      const cache = createTtlCache<true>({ ttlMs: 100, maxEntries: 2, clock: () => now })
      cache.set('!a:hs @u:hs', true)
      expect(cache.get('!a:hs @u:hs')).to.equal(true)
      expect(cache.get('!a:hs @v:hs')).to.equal(undefined)
      expect(cache.get('!b:hs @u:hs')).to.equal(undefined)
      now += 100
      expect(cache.get('!a:hs @u:hs'), 'expired').to.equal(undefined)
      cache.set('!a:hs @u:hs', true)
      cache.set('!b:hs @u:hs', true)
      cache.set('!c:hs @u:hs', true)
      expect([cache.get('!a:hs @u:hs'), cache.get('!b:hs @u:hs'), cache.get('!c:hs @u:hs')]).to.deep.equal([undefined, true, true])
    })

    it('should drop the entries whose value matches', () => {
      const cache = createTtlCache<{ user: string }>({ ttlMs: 1000, maxEntries: 10, clock: () => 0 })
      cache.set('t1', { user: 'a' })
      cache.set('t2', { user: 'b' })
      cache.set('t3', { user: 'a' })
      cache.deleteWhere((v) => v.user === 'a')
      expect([cache.get('t1'), cache.get('t2'), cache.get('t3'), cache.size]).to.deep.equal([undefined, { user: 'b' }, undefined, 1])
    })
  })

  describe('jsonProblem', () => {
    it('should find U+0000 in strings and keys at any depth', () => {
      expect(jsonProblem({ a: [{ b: 'ok' }] })).to.equal(undefined)
      expect(jsonProblem({ a: [{ b: 'no\u0000' }] })).to.include('U+0000')
      expect(jsonProblem({ a: { 'k\u0000': 1 } })).to.include('U+0000')
      expect(jsonProblem('\u0000')).to.include('U+0000')
    })

    it('should refuse nesting deeper than maxJsonDepth without overflowing the stack', () => {
      const nest = (n: number) => JSON.parse('['.repeat(n) + ']'.repeat(n))
      expect(jsonProblem(nest(maxJsonDepth))).to.equal(undefined)
      expect(jsonProblem(nest(maxJsonDepth + 1))).to.include('deeper')
      expect(jsonProblem(nest(5000))).to.include('deeper')
    })
  })

  describe('redactUrl', () => {
    it('should replace every access_token value and keep the rest', () => {
      expect(redactUrl('/a?access_token=syt_x_y_z')).to.equal('/a?access_token=[redacted]')
      expect(redactUrl('/a?since=1&access_token=abc&x=2')).to.equal('/a?since=1&access_token=[redacted]&x=2')
      expect(redactUrl('/a?access_token=a&access_token=b')).to.equal('/a?access_token=[redacted]&access_token=[redacted]')
      expect(redactUrl('/a?ACCESS_TOKEN=a')).to.equal('/a?ACCESS_TOKEN=[redacted]')
      expect(redactUrl('/a?access%5Ftoken=a')).to.equal('/a?access%5Ftoken=[redacted]')
      expect(redactUrl('/access_token=a')).to.equal('/access_token=a')
    })
  })

  describe('createRateLimiter', () => {
    it('should allow a burst, then ask to wait until a token is regained', () => {
      let now = 0
      const limiter = createRateLimiter({ burst: 2, perSecond: 0.5, clock: () => now })
      expect(limiter.retryAfterMs('u')).to.equal(0)
      limiter.record('u')
      limiter.record('u')
      expect(limiter.retryAfterMs('u')).to.equal(2000)
      expect(limiter.retryAfterMs('other')).to.equal(0)
      now = 1000
      expect(limiter.retryAfterMs('u')).to.equal(1000)
      now = 2000
      expect(limiter.retryAfterMs('u')).to.equal(0)
    })
  })

  describe('user IDs', () => {
    it('should accept lowercase localparts and refuse the rest with M_INVALID_USERNAME', () => {
      for (const ok of ['alice', 'a.b-c_d=e/f+g', '1a']) expect(() => checkLocalpart(ok, 'hs.test'), ok).to.not.throw()
      for (const bad of ['', 'Alice', 'a b', '_x', '123', 'a:b', '@a', 'x'.repeat(250)]) {
        expect(() => checkLocalpart(bad, 'hs.test'), bad).to.throw().with.property('errcode', 'M_INVALID_USERNAME')
      }
    })

    it('should resolve login names case-insensitively and refuse other servers', () => {
      expect(loginUserId('Alice', 'hs.test')).to.equal('@alice:hs.test')
      expect(loginUserId('@ALICE:hs.test', 'hs.test')).to.equal('@alice:hs.test')
      expect(loginUserId('@alice:other.test', 'hs.test')).to.equal(undefined)
      expect(loginUserId('@alice', 'hs.test')).to.equal(undefined)
    })
  })
})
