import { randomBytes } from 'node:crypto'
import { expect } from 'chai'
import fc from 'fast-check'
import { startApi, type ApiHarness, type Session } from './api-harness.js'

const media = '/_matrix/client/v1/media'

describe('api content repository (upload, authenticated download and thumbnails)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  before(async () => {
    h = await startApi({ config: { media: { max_upload_bytes: 64 * 1024 } } })
    alice = await h.register('alice')
    bob = await h.register('bob')
  })
  after(() => h.close())

  const upload = (session: Session | undefined, body: Buffer | string, contentType?: string, filename?: string) =>
    h.app.inject({
      method: 'POST',
      url: `/_matrix/media/v3/upload${filename === undefined ? '' : `?filename=${encodeURIComponent(filename)}`}`,
      headers: { ...(session && { authorization: `Bearer ${session.access_token}` }), ...(contentType !== undefined && { 'content-type': contentType }) },
      payload: body,
    })
  const get = (session: Session | undefined, url: string) => h.app.inject({ method: 'GET', url, headers: session ? { authorization: `Bearer ${session.access_token}` } : {} })
  const idOf = (contentUri: string) => {
    const match = /^mxc:\/\/hs\.test\/([A-Za-z0-9_-]+)$/.exec(contentUri)
    expect(match, contentUri).to.not.equal(null)
    return match![1]!
  }

  it('should give back exactly the bytes uploaded, with their type and name, to any signed-in user', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 4096 }), fc.constantFrom('application/octet-stream', 'image/png', 'application/json', 'text/plain; charset=utf-8'), async (bytes, type) => {
        const up = await upload(alice, Buffer.from(bytes), type, 'ünï cöde (1).bin')
        expect(up.statusCode, up.body).to.equal(200)
        const mediaId = idOf(up.json().content_uri)
        const down = await get(bob, `${media}/download/hs.test/${mediaId}`)
        expect(down.statusCode).to.equal(200)
        expect(Buffer.compare(down.rawPayload, Buffer.from(bytes))).to.equal(0)
        expect(down.headers['content-type']).to.equal(type)
        expect(down.headers['content-disposition']).to.match(/filename\*=utf-8''%C3%BCn%C3%AF%20c%C3%B6de%20%281%29\.bin$/)
      }),
      { numRuns: 25 },
    )
    // A name in the path wins; a JSON file is a file, not a request body.
    const up = await upload(alice, '{"not": "parsed"', 'application/json')
    const mediaId = idOf(up.json().content_uri)
    const named = await get(alice, `${media}/download/hs.test/${mediaId}/data.json`)
    expect(named.body).to.equal('{"not": "parsed"')
    expect(named.headers['content-disposition']).to.equal("inline; filename*=utf-8''data.json")
  })

  it('should serve files safely: attachment unless a browser shows the type harmlessly, sandboxed, not sniffed', async () => {
    const html = idOf((await upload(alice, '<script>alert(1)</script>', 'text/html', 'x.html')).json().content_uri)
    const svg = idOf((await upload(alice, '<svg xmlns="http://www.w3.org/2000/svg"/>', 'image/svg+xml')).json().content_uri)
    const png = idOf((await upload(alice, randomBytes(100), 'image/png')).json().content_uri)
    const h1 = (await get(alice, `${media}/download/hs.test/${html}`)).headers
    expect(h1['content-disposition']).to.equal("attachment; filename*=utf-8''x.html")
    expect(h1['content-security-policy']).to.match(/^sandbox; default-src 'none'; script-src 'none'/)
    expect(h1['x-content-type-options']).to.equal('nosniff')
    expect((await get(alice, `${media}/download/hs.test/${svg}`)).headers['content-disposition']).to.equal('attachment')
    expect((await get(alice, `${media}/download/hs.test/${png}`)).headers['content-disposition']).to.equal('inline')
    // Thumbnails: an image is its own; other files have none.
    const thumb = await get(alice, `${media}/thumbnail/hs.test/${png}?width=32&height=32&method=scale`)
    expect([thumb.statusCode, thumb.headers['content-type'], thumb.rawPayload.length]).to.deep.equal([200, 'image/png', 100])
    expect((await get(alice, `${media}/thumbnail/hs.test/${html}?width=32&height=32`)).statusCode).to.equal(404)
  })

  it('should refuse what it must with Matrix errors: no token, unknown or foreign media, too large, legacy unauthenticated reads', async () => {
    const mediaId = idOf((await upload(alice, 'hello', 'text/plain')).json().content_uri)
    const status = (res: { statusCode: number; json: () => { errcode?: string } }) => [res.statusCode, res.json().errcode]
    expect(status(await upload(undefined, 'x', 'text/plain'))).to.deep.equal([401, 'M_MISSING_TOKEN'])
    expect(status(await get(undefined, `${media}/download/hs.test/${mediaId}`))).to.deep.equal([401, 'M_MISSING_TOKEN'])
    expect(status(await get(alice, `${media}/download/hs.test/nope`))).to.deep.equal([404, 'M_NOT_FOUND'])
    expect(status(await get(alice, `${media}/download/other.server/${mediaId}`))).to.deep.equal([404, 'M_NOT_FOUND'])
    expect(status(await get(undefined, `/_matrix/media/v3/download/hs.test/${mediaId}`))).to.deep.equal([404, 'M_NOT_FOUND'])
    expect(status(await get(alice, `/_matrix/media/v3/thumbnail/hs.test/${mediaId}?width=1&height=1`))).to.deep.equal([404, 'M_NOT_FOUND'])
    expect(status(await upload(alice, randomBytes(64 * 1024 + 1), 'application/octet-stream'))).to.deep.equal([413, 'M_TOO_LARGE'])
    expect((await upload(alice, randomBytes(64 * 1024), 'application/octet-stream')).statusCode).to.equal(200)
    expect(status(await get(alice, `${media}/thumbnail/hs.test/${mediaId}?width=abc`))).to.deep.equal([400, 'M_INVALID_PARAM'])
    for (const url of [`${media}/config`, '/_matrix/media/v3/config']) {
      const config = await get(alice, url)
      expect([config.statusCode, config.json()]).to.deep.equal([200, { 'm.upload.size': 64 * 1024 }])
    }
    // Nothing of the refused uploads was stored.
    const sizes = (await h.t.db.selectFrom('media').select('size').execute()).map((r) => Number(r.size))
    expect(sizes.every((size) => size <= 64 * 1024)).to.equal(true)
  })

  it('should create media IDs to upload to later: creator only, once, with waiting downloads and a cap on unused ones', async () => {
    const create = (session: Session) => h.app.inject({ method: 'POST', url: '/_matrix/media/v1/create', headers: { authorization: `Bearer ${session.access_token}` } })
    const put = (session: Session, mediaId: string, body: Buffer | string, contentType = 'text/plain') =>
      h.app.inject({ method: 'PUT', url: `/_matrix/media/v3/upload/hs.test/${mediaId}?filename=later.txt`, headers: { authorization: `Bearer ${session.access_token}`, 'content-type': contentType }, payload: body })
    const status = (res: { statusCode: number; json: () => { errcode?: string } }) => [res.statusCode, res.json().errcode]

    const created = await create(bob)
    expect(created.statusCode).to.equal(200)
    expect(created.json().unused_expires_at).to.be.above(Date.now())
    const mediaId = idOf(created.json().content_uri)
    // Not uploaded yet: a short wait ends in 504; a long one ends when the upload comes.
    expect(status(await get(alice, `${media}/download/hs.test/${mediaId}?timeout_ms=50`))).to.deep.equal([504, 'M_NOT_YET_UPLOADED'])
    const waiting = get(alice, `${media}/download/hs.test/${mediaId}?timeout_ms=10000`)
    await new Promise((resolve) => setTimeout(resolve, 150))
    expect(status(await put(alice, mediaId, 'not mine'))).to.deep.equal([403, 'M_FORBIDDEN'])
    expect((await put(bob, mediaId, 'uploaded later')).statusCode).to.equal(200)
    const got = await waiting
    expect([got.statusCode, got.body, got.headers['content-disposition']]).to.deep.equal([200, 'uploaded later', "inline; filename*=utf-8''later.txt"])
    expect(status(await put(bob, mediaId, 'again'))).to.deep.equal([409, 'M_CANNOT_OVERWRITE_MEDIA'])
    expect(status(await put(bob, 'unknownmediaid', 'x'))).to.deep.equal([404, 'M_NOT_FOUND'])

    // At most 5 unused at once; an expired one frees its place and can no longer be filled.
    const unused: string[] = []
    for (let i = 0; i < 5; i++) unused.push(idOf((await create(bob)).json().content_uri))
    expect(status(await create(bob))).to.deep.equal([429, 'M_LIMIT_EXCEEDED'])
    await h.t.db.updateTable('media').set({ expires_ts: Date.now() - 1 }).where('media_id', '=', unused[0]!).execute()
    expect((await create(bob)).statusCode).to.equal(200)
    expect(status(await put(bob, unused[0]!, 'too late'))).to.deep.equal([404, 'M_NOT_FOUND'])
    expect(status(await get(alice, `${media}/download/hs.test/${unused[0]}?timeout_ms=50`))).to.deep.equal([404, 'M_NOT_FOUND'])
  })
})
