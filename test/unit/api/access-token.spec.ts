import { expect } from 'chai'
import fc from 'fast-check'
import { userKeyFromToken } from '../../../api/routing/user-key.js'
import { generateAccessToken, hashAccessToken, passesTokenCheck } from '../../../storage/access-token.js'

describe('access tokens (storage/access-token.ts)', () => {
  it("should have Synapse's shape syt_<base64url localpart>_<20 random>_<6 check>", () => {
    const token = generateAccessToken('alice')
    expect(token).to.match(/^syt_YWxpY2U_[A-Za-z0-9]{20}_[A-Za-z0-9]{6}$/)
    expect(generateAccessToken('alice')).to.not.equal(token)
  })

  it('should give the routing key (base64url localpart) for any localpart, so one user stays on one worker', () => {
    fc.assert(
      fc.property(fc.string({ minLength: 1, maxLength: 40 }), (localpart) => {
        const key = userKeyFromToken(generateAccessToken(localpart))
        expect(Buffer.from(key, 'base64url').toString('utf8')).to.equal(Buffer.from(localpart, 'utf8').toString('utf8'))
        expect(userKeyFromToken(generateAccessToken(localpart))).to.equal(key)
      }),
    )
  })

  it('should pass its own check and fail when any character of the random or check part changes', () => {
    const token = generateAccessToken('bob')
    expect(passesTokenCheck(token)).to.equal(true)
    const randomStart = token.indexOf('_', 4) + 1
    for (let i = randomStart; i < token.length; i++) {
      if (token[i] === '_') continue
      const changed = token.slice(0, i) + (token[i] === 'a' ? 'b' : 'a') + token.slice(i + 1)
      expect(passesTokenCheck(changed), changed).to.equal(false)
    }
  })

  it('should leave tokens of other shapes to the database', () => {
    expect(passesTokenCheck('opaque-token')).to.equal(true)
    expect(passesTokenCheck('syt_')).to.equal(false)
    expect(passesTokenCheck('syt_x_y')).to.equal(false)
  })

  it('should hash with SHA-256 (32 bytes, deterministic, token-specific)', () => {
    const token = generateAccessToken('carol')
    expect(hashAccessToken(token)).to.have.length(32)
    expect(hashAccessToken(token).equals(hashAccessToken(token))).to.equal(true)
    expect(hashAccessToken(token).equals(hashAccessToken(`${token}x`))).to.equal(false)
    expect(hashAccessToken('abc').toString('hex')).to.equal('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad')
  })
})
