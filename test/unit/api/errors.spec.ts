import { readFile } from 'node:fs/promises'
import { expect } from 'chai'
import { limitExceeded, MatrixError, routePattern, storageErrorStatus, toMatrixResponse } from '../../../api/errors.js'
import { InteractiveAuthRequired } from '../../../api/user-interactive-auth.js'
import { errorCodes, StorageError } from '../../../storage/errors.js'

describe('Matrix errors (api/errors.ts)', () => {
  it('should map every StorageError code, client mistakes to 4xx and retryable ones to 503 with retry_after_ms', () => {
    const clientCodes = ['ES_INVALID_TOKEN', 'ES_INVALID_PARAM', 'ES_EVENT_NOT_FOUND', 'ES_ROOM_NOT_FOUND', 'ES_FORBIDDEN', 'ES_EVENT_TOO_LARGE', 'ES_BAD_EVENT']
    for (const code of errorCodes) {
      const response = toMatrixResponse(new StorageError(code, `detail of ${code}`), false)
      expect(response.status, code).to.equal(storageErrorStatus[code].status)
      if (clientCodes.includes(code)) {
        expect(response.status, code).to.be.within(400, 499)
        expect(response.body.error).to.equal(`detail of ${code}`)
      }
      if (response.status === 503) expect(response.body.retry_after_ms, code).to.be.a('number')
      if (response.status >= 500) expect(response.body.error, code).to.not.include('detail')
    }
  })

  it('should pass MatrixErrors through with their extra fields', () => {
    expect(toMatrixResponse(limitExceeded(1234.2), false)).to.deep.include({ status: 429, body: { errcode: 'M_LIMIT_EXCEEDED', error: 'Too many requests', retry_after_ms: 1235 } })
    const custom = new MatrixError(401, 'M_UNKNOWN_TOKEN', 'gone', { soft_logout: false })
    expect(toMatrixResponse(custom, false).body).to.deep.equal({ errcode: 'M_UNKNOWN_TOKEN', error: 'gone', soft_logout: false })
  })

  it('should tell a missing body (M_NOT_JSON) from a schema failure (M_BAD_JSON) and query problems (M_INVALID_PARAM)', () => {
    const bodyError = Object.assign(new Error('body/x must be string'), { validation: [{}], validationContext: 'body' })
    expect(toMatrixResponse(bodyError, true).body.errcode).to.equal('M_NOT_JSON')
    expect(toMatrixResponse(bodyError, false).body).to.deep.equal({ errcode: 'M_BAD_JSON', error: 'body/x must be string' })
    const queryError = Object.assign(new Error('querystring/limit must match pattern'), { validation: [{}], validationContext: 'querystring' })
    expect(toMatrixResponse(queryError, false).body.errcode).to.equal('M_INVALID_PARAM')
  })

  it('should answer database trouble with 503, client-caused data errors with 4xx and bugs with a bare 500', () => {
    expect(toMatrixResponse(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), false).status).to.equal(503)
    expect(toMatrixResponse(new Error('timeout exceeded when trying to connect'), false).status).to.equal(503)
    expect(toMatrixResponse(Object.assign(new Error('invalid byte sequence'), { code: '22021' }), false).status).to.equal(400)
    expect(toMatrixResponse(Object.assign(new Error('index row size exceeds'), { code: '54000' }), false).status).to.equal(413)
    expect(toMatrixResponse(Object.assign(new Error('body too large'), { code: 'FST_ERR_CTP_BODY_TOO_LARGE', statusCode: 413 }), false).body.errcode).to.equal('M_TOO_LARGE')
    const bug = toMatrixResponse(new TypeError('x is undefined at handler.ts:12'), false)
    expect(bug).to.deep.equal({ status: 500, body: { errcode: 'M_UNKNOWN', error: 'Internal server error' }, level: 'error' })
    expect(toMatrixResponse('a thrown string', false).status).to.equal(500)
  })

  it('should give user-interactive auth bodies flows and a session, and an errcode only after a failure', () => {
    const first = new InteractiveAuthRequired(['m.login.password'], 'S1')
    expect(toMatrixResponse(first, false)).to.deep.include({ status: 401, body: { flows: [{ stages: ['m.login.password'] }], params: {}, session: 'S1', completed: [] } })
    const failed = new InteractiveAuthRequired(['m.login.password'], 'S1', { errcode: 'M_FORBIDDEN', error: 'Invalid password' })
    expect(failed.body()).to.include({ errcode: 'M_FORBIDDEN', error: 'Invalid password', session: 'S1' })
  })

  it('should match route URLs as fastify does (params are one segment, trailing slash optional)', () => {
    const p = routePattern('/_matrix/client/v3/devices/:deviceId')
    expect(p.test('/_matrix/client/v3/devices/ABC')).to.equal(true)
    expect(p.test('/_matrix/client/v3/devices/ABC/')).to.equal(true)
    expect(p.test('/_matrix/client/v3/devices/ABC/x')).to.equal(false)
    expect(p.test('/_matrix/client/v3/devices')).to.equal(false)
    expect(routePattern('/_matrix/client/versions').test('/_matrix/client/versionsX')).to.equal(false)
    expect(routePattern('/a/*').test('/a/b/c')).to.equal(true)
  })

  it('should have every errcode and status the API answers listed in api/README.md', async () => {
    const readme = await readFile(new URL('../../../api/README.md', import.meta.url), 'utf8')
    const errcodes = new Set(['M_NOT_JSON', 'M_BAD_JSON', 'M_MISSING_TOKEN', 'M_UNKNOWN_TOKEN', 'M_FORBIDDEN', 'M_NOT_FOUND', 'M_UNRECOGNIZED', 'M_TOO_LARGE', 'M_LIMIT_EXCEEDED', 'M_INVALID_PARAM', 'M_MISSING_PARAM', 'M_USER_IN_USE', 'M_INVALID_USERNAME', 'M_GUEST_ACCESS_FORBIDDEN', 'M_USER_DEACTIVATED', 'M_UNKNOWN'])
    for (const { errcode } of Object.values(storageErrorStatus)) errcodes.add(errcode)
    for (const errcode of errcodes) expect(readme, errcode).to.include(errcode)
    for (const code of errorCodes) expect(readme, code).to.include(code)
  })
})
