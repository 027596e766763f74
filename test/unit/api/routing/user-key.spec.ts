import { expect } from 'chai'
import fc from 'fast-check'
import { userKeyFromRequest, userKeyFromToken } from '../../../../api/routing/user-key.js'

const alnum = fc.string({ unit: fc.constantFrom(...'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789'), minLength: 1, maxLength: 24 })

describe('userKeyFromToken', () => {
  it('should give every token of a user the same key: the whole base64url localpart, underscores included', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', minLength: 1 }), alnum, alnum, alnum, alnum, (localpart, r1, c1, r2, c2) => {
        const b64 = Buffer.from(localpart, 'utf8').toString('base64url')
        const one = userKeyFromToken(`syt_${b64}_${r1}_${c1}`)
        expect(one).to.equal(b64)
        expect(userKeyFromToken(`syt_${b64}_${r2}_${c2}`)).to.equal(one)
      }),
    )
    expect(userKeyFromToken('syt_w7_Dv8O_X3g_abcDEF123_0a1b2c')).to.equal('w7_Dv8O_X3g')
  })

  it('should use a token of another shape as its own key', () => {
    expect(userKeyFromToken('MDAxOGxvY2F0aW9u')).to.equal('MDAxOGxvY2F0aW9u')
    expect(userKeyFromToken('syt_onlyone')).to.equal('syt_onlyone')
  })
})

describe('userKeyFromRequest', () => {
  const token = 'syt_YWxpY2U_aBcDeFgHiJ_0a1B2c'

  it('should read the Bearer header, then the access_token parameter', () => {
    expect(userKeyFromRequest(`Bearer ${token}`, '/_matrix/client/v3/sync')).to.equal('YWxpY2U')
    expect(userKeyFromRequest(`bearer  ${token} `, '/_matrix/client/v3/sync')).to.equal('YWxpY2U')
    expect(userKeyFromRequest(undefined, `/_matrix/client/v3/sync?since=1&access_token=${token}`)).to.equal('YWxpY2U')
    expect(userKeyFromRequest(`Bearer ${token}`, '/_matrix/client/v3/sync?access_token=syt_Ym9i_x_y')).to.equal('YWxpY2U')
    expect(userKeyFromRequest('Basic dXNlcjpwdw==', '/_matrix/client/v3/sync?access_token=syt_Ym9i_x_y')).to.equal('Ym9i')
  })

  it('should return undefined without a token', () => {
    expect(userKeyFromRequest(undefined, '/_matrix/client/v3/sync')).to.equal(undefined)
    expect(userKeyFromRequest(undefined, '/_matrix/client/v3/sync?access_token=')).to.equal(undefined)
    expect(userKeyFromRequest('Bearer', '/_matrix/client/v3/sync?since=s1')).to.equal(undefined)
  })
})
