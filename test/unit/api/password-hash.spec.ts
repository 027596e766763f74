import { expect } from 'chai'
import { hashPassword, verifyAgainstDummy, verifyPassword } from '../../../storage/password-hash.js'

describe('password hashing (storage/password-hash.ts)', function () {
  this.timeout(20_000)

  it('should store scrypt$N$r$p$salt$hash with a fresh salt and verify only the right password', async () => {
    const a = await hashPassword('correct horse')
    const b = await hashPassword('correct horse')
    expect(a).to.match(/^scrypt\$32768\$8\$1\$[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}$/)
    expect(a).to.not.equal(b)
    expect(await verifyPassword('correct horse', a)).to.equal(true)
    expect(await verifyPassword('correct horse', b)).to.equal(true)
    expect(await verifyPassword('correct hors', a)).to.equal(false)
    expect(await verifyPassword('', a)).to.equal(false)
  })

  it('should verify hashes made with another cost (the cost lives in the stored string)', async () => {
    const cheap = await hashPassword('pw', { N: 1024, r: 8, p: 1 })
    expect(cheap.startsWith('scrypt$1024$8$1$')).to.equal(true)
    expect(await verifyPassword('pw', cheap)).to.equal(true)
  })

  it('should treat NFKC-equivalent passwords as equal', async () => {
    const stored = await hashPassword('ﬁre', { N: 1024, r: 8, p: 1 })
    expect(await verifyPassword('fire', stored)).to.equal(true)
  })

  it('should never match malformed or hostile stored hashes', async () => {
    for (const stored of ['', 'scrypt', 'bcrypt$1$2$3$4$5', 'scrypt$1000$8$1$c2FsdA==$aGFzaA==', 'scrypt$1073741824$8$1$c2FsdA==$aGFzaA==', 'scrypt$1024$8$1$c2FsdA==$']) {
      expect(await verifyPassword('pw', stored), stored).to.equal(false)
    }
  })

  it('should fail dummy verification', async () => {
    expect(await verifyAgainstDummy('anything')).to.equal(false)
  })
})
