import { randomBytes } from 'node:crypto'
import { expect } from 'chai'
import fc from 'fast-check'
import { imageSize } from 'image-size'
import { testImage } from '../../support/images.js'
import { startApi, type ApiHarness, type Session } from './api-harness.js'

const media = '/_matrix/client/v1/media'

describe('api content repository (upload, authenticated download and thumbnails)', function () {
  this.timeout(60_000)
  let h: ApiHarness
  let alice: Session
  let bob: Session
  before(async () => {
    h = await startApi({ config: { media: { max_upload_bytes: 256 * 1024 } } })
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
    // Thumbnails: an image that cannot be decoded is its own; other files have none.
    const thumb = await get(alice, `${media}/thumbnail/hs.test/${png}?width=32&height=32&method=scale`)
    expect([thumb.statusCode, thumb.headers['content-type'], thumb.rawPayload.length]).to.deep.equal([200, 'image/png', 100])
    expect((await get(alice, `${media}/thumbnail/hs.test/${html}?width=32&height=32`)).statusCode).to.equal(404)
  })

  it('should make thumbnails at the nearest configured size, keep them, and serve the file itself when it is the best', async () => {
    const thumbnail = async (mediaId: string, query: string) => {
      const res = await get(bob, `${media}/thumbnail/hs.test/${mediaId}?${query}`)
      expect(res.statusCode, res.body).to.equal(200)
      return res
    }
    const dims = (res: { rawPayload: Buffer }) => {
      const { width, height, type } = imageSize(res.rawPayload)
      return `${width}x${height} ${type}`
    }
    const photo = await testImage(1000, 500, 'image/jpeg')
    const photoId = idOf((await upload(alice, photo, 'image/jpeg', 'photo.jpg')).json().content_uri)
    // 100×100 scaled: the smallest configured scale size covering it is 320×240.
    const scaled = await thumbnail(photoId, 'width=100&height=100&method=scale')
    expect([scaled.headers['content-type'], dims(scaled)]).to.deep.equal(['image/jpeg', '320x160 jpg'])
    expect(scaled.headers['content-disposition']).to.equal('inline')
    expect(scaled.headers['content-security-policy']).to.match(/^sandbox;/)
    expect(dims(await thumbnail(photoId, 'width=32&height=32&method=crop'))).to.equal('32x32 jpg')
    expect(dims(await thumbnail(photoId, 'width=2000&height=2000'))).to.equal('800x400 jpg')

    // Kept: served again without the file (its bytes spoiled behind the server's back).
    const kept = await h.t.db.selectFrom('media_thumbnails').select(['width', 'height', 'method', 'content_type']).where('media_id', '=', photoId).orderBy('width').execute()
    expect(kept).to.deep.equal([
      { width: 32, height: 32, method: 'crop', content_type: 'image/jpeg' },
      { width: 320, height: 240, method: 'scale', content_type: 'image/jpeg' },
      { width: 800, height: 600, method: 'scale', content_type: 'image/jpeg' },
    ])
    await h.t.db.updateTable('media').set({ content: Buffer.from('spoiled') }).where('media_id', '=', photoId).execute()
    const again = await thumbnail(photoId, 'width=300&height=200&method=scale')
    expect(Buffer.compare(again.rawPayload, scaled.rawPayload)).to.equal(0)

    // The file is the best thumbnail: already small, or an animated GIF asked for as one.
    const icon = await testImage(24, 24, 'image/png')
    const iconId = idOf((await upload(alice, icon, 'image/png')).json().content_uri)
    const small = await thumbnail(iconId, 'width=96&height=96&method=crop')
    expect(Buffer.compare(small.rawPayload, icon)).to.equal(0)
    const anim = await testImage(200, 100, 'image/gif')
    const animId = idOf((await upload(alice, anim, 'image/gif')).json().content_uri)
    expect(Buffer.compare((await thumbnail(animId, 'width=32&height=32&method=crop&animated=true')).rawPayload, anim)).to.equal(0)
    const still = await thumbnail(animId, 'width=32&height=32&method=crop')
    expect([still.headers['content-type'], dims(still)]).to.deep.equal(['image/png', '32x32 png'])

    // Many asking at once for one not made yet: one row, one image.
    const burstId = idOf((await upload(alice, await testImage(640, 640, 'image/png'), 'image/png')).json().content_uri)
    const burst = await Promise.all(Array.from({ length: 6 }, () => thumbnail(burstId, 'width=96&height=96&method=crop')))
    expect(new Set(burst.map((res) => res.rawPayload.toString('base64'))).size).to.equal(1)
    expect(dims(burst[0]!)).to.equal('96x96 png')
    expect((await h.t.db.selectFrom('media_thumbnails').select('media_id').where('media_id', '=', burstId).execute()).length).to.equal(1)
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
    expect(status(await upload(alice, randomBytes(256 * 1024 + 1), 'application/octet-stream'))).to.deep.equal([413, 'M_TOO_LARGE'])
    expect((await upload(alice, randomBytes(256 * 1024), 'application/octet-stream')).statusCode).to.equal(200)
    expect(status(await get(alice, `${media}/thumbnail/hs.test/${mediaId}?width=abc&height=1`))).to.deep.equal([400, 'M_INVALID_PARAM'])
    expect(status(await get(alice, `${media}/thumbnail/hs.test/${mediaId}?width=32`))).to.deep.equal([400, 'M_INVALID_PARAM'])
    expect(status(await get(alice, `${media}/thumbnail/hs.test/${mediaId}?width=32&height=32&method=fit`))).to.deep.equal([400, 'M_INVALID_PARAM'])
    expect(status(await get(alice, `${media}/thumbnail/hs.test/${mediaId}?width=32&height=32&animated=yes`))).to.deep.equal([400, 'M_INVALID_PARAM'])
    for (const url of [`${media}/config`, '/_matrix/media/v3/config']) {
      const config = await get(alice, url)
      expect([config.statusCode, config.json()]).to.deep.equal([200, { 'm.upload.size': 256 * 1024 }])
    }
    // Nothing of the refused uploads was stored.
    const sizes = (await h.t.db.selectFrom('media').select('size').execute()).map((r) => Number(r.size))
    expect(sizes.every((size) => size <= 256 * 1024)).to.equal(true)
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
