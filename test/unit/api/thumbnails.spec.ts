import { expect } from 'chai'
import fc from 'fast-check'
import { imageSize } from 'image-size'
import { silentLogger } from '../../../storage/logger.js'
import { defaultThumbnailSizes } from '../../../storage/config.js'
import { chooseThumbnailSize, renderThumbnail, type ThumbnailSize } from '../../../api/thumbnail-image.js'
import { createThumbnailer } from '../../../api/thumbnailer.js'
import { testImage } from '../../support/images.js'

describe('thumbnails', function () {
  this.timeout(30_000)

  describe('chooseThumbnailSize', () => {
    it('should pick the smallest configured size of the method covering the request, else the largest', () => {
      const pick = (width: number, height: number, method: 'crop' | 'scale') => chooseThumbnailSize(defaultThumbnailSizes, { width, height, method })
      expect(pick(32, 32, 'crop')).to.deep.equal({ width: 32, height: 32, method: 'crop' })
      expect(pick(33, 20, 'crop')).to.deep.equal({ width: 96, height: 96, method: 'crop' })
      expect(pick(1000, 1000, 'crop')).to.deep.equal({ width: 96, height: 96, method: 'crop' })
      expect(pick(100, 100, 'scale')).to.deep.equal({ width: 320, height: 240, method: 'scale' })
      expect(pick(640, 480, 'scale')).to.deep.equal({ width: 640, height: 480, method: 'scale' })
      expect(pick(700, 100, 'scale')).to.deep.equal({ width: 800, height: 600, method: 'scale' })
      // Only one method configured: it serves both.
      expect(chooseThumbnailSize([{ width: 50, height: 50, method: 'scale' }], { width: 10, height: 10, method: 'crop' })).to.deep.equal({ width: 50, height: 50, method: 'scale' })
      expect(chooseThumbnailSize([], { width: 10, height: 10, method: 'crop' })).to.equal(undefined)
    })

    it('should always answer a configured size, covering the request whenever one can', () => {
      const size = fc.record({ width: fc.integer({ min: 1, max: 2000 }), height: fc.integer({ min: 1, max: 2000 }), method: fc.constantFrom<'crop' | 'scale'>('crop', 'scale') })
      fc.assert(
        fc.property(fc.array(size, { minLength: 1, maxLength: 8 }), size, (sizes, want) => {
          const chosen = chooseThumbnailSize(sizes, want) as ThumbnailSize
          expect(sizes).to.deep.include(chosen)
          const sameMethod = sizes.filter((s) => s.method === want.method)
          if (sameMethod.length > 0) expect(chosen.method).to.equal(want.method)
          const pool = sameMethod.length > 0 ? sameMethod : sizes
          const covering = pool.filter((s) => s.width >= want.width && s.height >= want.height)
          if (covering.length > 0) {
            expect(chosen.width >= want.width && chosen.height >= want.height).to.equal(true)
            expect(covering.every((s) => s.width * s.height >= chosen.width * chosen.height)).to.equal(true)
          } else {
            expect(pool.every((s) => s.width * s.height <= chosen.width * chosen.height)).to.equal(true)
          }
        }),
      )
    })
  })

  describe('renderThumbnail', () => {
    const render = (content: Buffer, contentType: string, size: ThumbnailSize, options: { maxPixels?: number; animated?: boolean } = {}) =>
      renderThumbnail({ contentType, content }, size, { maxPixels: options.maxPixels ?? 32_000_000, ...(options.animated !== undefined && { animated: options.animated }) })

    it('should crop to exactly the size and scale to fit inside it, keeping the format family', async () => {
      const photo = await testImage(400, 200, 'image/jpeg')
      const cropped = await render(photo, 'image/jpeg', { width: 96, height: 96, method: 'crop' })
      expect(cropped.kind).to.equal('image')
      if (cropped.kind !== 'image') return
      expect([cropped.contentType, cropped.width, cropped.height]).to.deep.equal(['image/jpeg', 96, 96])
      expect(imageSize(cropped.content)).to.include({ width: 96, height: 96, type: 'jpg' })

      const scaled = await render(await testImage(400, 200, 'image/png'), 'image/png; charset=binary', { width: 320, height: 240, method: 'scale' })
      if (scaled.kind !== 'image') expect.fail(`scaled: ${JSON.stringify(scaled)}`)
      expect(imageSize(scaled.content)).to.include({ width: 320, height: 160, type: 'png' })

      const frame = await render(await testImage(300, 300, 'image/gif'), 'image/gif', { width: 32, height: 32, method: 'crop' })
      if (frame.kind !== 'image') expect.fail(`gif: ${JSON.stringify(frame)}`)
      expect(imageSize(frame.content)).to.include({ width: 32, height: 32, type: 'png' })
    })

    it('should leave the file as its own thumbnail when it is small, animated, undecodable, corrupt or too large', async () => {
      const small = await testImage(20, 30, 'image/png')
      const reason = async (content: Buffer, type: string, options: { maxPixels?: number; animated?: boolean } = {}) => {
        const result = await render(content, type, { width: 96, height: 96, method: 'crop' }, options)
        return result.kind === 'original' ? result.reason : 'image'
      }
      expect(await reason(small, 'image/png')).to.equal('small')
      expect(await reason(await testImage(200, 200, 'image/gif'), 'image/gif', { animated: true })).to.equal('animated')
      expect(await reason(await testImage(200, 200, 'image/gif'), 'image/gif', { animated: false })).to.equal('image')
      expect(await reason(small, 'image/webp')).to.equal('not-decodable')
      expect(await reason(Buffer.from('not an image at all'), 'image/png')).to.equal('corrupt')
      // A valid header over a truncated body.
      const big = await testImage(200, 200, 'image/png')
      expect(await reason(big.subarray(0, 60), 'image/png')).to.equal('corrupt')
      expect(await reason(big, 'image/png', { maxPixels: 200 * 200 - 1 })).to.equal('too-many-pixels')
      expect(await reason(big, 'image/png', { maxPixels: 200 * 200 })).to.equal('image')
    })
  })

  describe('createThumbnailer', () => {
    it('should render in a worker thread, leaving the event loop free, and share a render in flight', async () => {
      const thumbnailer = createThumbnailer({ maxPixels: 32_000_000, log: silentLogger() })
      try {
        const photo = await testImage(1600, 1200, 'image/jpeg')
        const size = { width: 320, height: 240, method: 'scale' } as const
        let turns = 0
        let counting = true
        const count = () => {
          turns++
          if (counting) setImmediate(count)
        }
        setImmediate(count)
        const [a, b] = await Promise.all([thumbnailer.render('k', { contentType: 'image/jpeg', content: photo }, size), thumbnailer.render('k', { contentType: 'image/jpeg', content: photo }, size)])
        counting = false
        expect(a).to.equal(b)
        if (a.kind !== 'image') expect.fail(JSON.stringify(a))
        expect(imageSize(a.content)).to.include({ width: 320, height: 240 })
        // Decoding a 1600×1200 JPEG takes tens of milliseconds of CPU: on the event loop, no
        // turn could run meanwhile.
        expect(turns).to.be.greaterThan(20)
        expect(thumbnailer.pending).to.equal(0)
      } finally {
        await thumbnailer.close()
      }
    })

    it('should fail a render that runs too long, ending its thread, and render the next on a new one', async () => {
      const thumbnailer = createThumbnailer({ maxPixels: 32_000_000, log: silentLogger(), timeoutMs: 150 })
      try {
        const huge = await testImage(2500, 2500, 'image/jpeg')
        let failure: unknown
        await thumbnailer.render('slow', { contentType: 'image/jpeg', content: huge }, { width: 96, height: 96, method: 'crop' }).catch((err: unknown) => (failure = err))
        expect(String(failure)).to.match(/thumbnail thread exited/)
        const made = await thumbnailer.render('fast', { contentType: 'image/png', content: await testImage(64, 64, 'image/png') }, { width: 32, height: 32, method: 'crop' })
        if (made.kind !== 'image') expect.fail(JSON.stringify(made))
        expect(imageSize(made.content)).to.include({ width: 32, height: 32 })
      } finally {
        await thumbnailer.close()
      }
    })
  })
})
