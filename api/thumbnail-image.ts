import { createJimp } from '@jimp/core'
import gif from '@jimp/js-gif'
import jpeg from '@jimp/js-jpeg'
import png from '@jimp/js-png'
import { methods as cover } from '@jimp/plugin-cover'
import { methods as resize } from '@jimp/plugin-resize'
import { imageSize } from 'image-size'
import type { ThumbnailSize } from '../storage/config.js'

/**
 * Thumbnail images (the content repository's `…/thumbnail/…`): which size to make for a request,
 * and making it. Pure functions; `thumbnailer.ts` runs `renderThumbnail` off the event loop.
 */

export type { ThumbnailSize }
export type ThumbnailMethod = ThumbnailSize['method']

/**
 * The configured size that serves a request for `width`×`height` by `method`: the smallest of
 * that method at least as large in both dimensions, else its largest (a client asking for more
 * than the server makes gets the most it makes). Sizes of the other method serve when none of
 * the requested one is configured. Undefined only for an empty list.
 *
 * @example
 * chooseThumbnailSize(config.media.thumbnail_sizes, { width: 100, height: 100, method: 'scale' }) // { width: 320, height: 240, method: 'scale' }
 */
export function chooseThumbnailSize(sizes: readonly ThumbnailSize[], want: ThumbnailSize): ThumbnailSize | undefined {
  const same = sizes.filter((s) => s.method === want.method)
  const candidates = same.length > 0 ? same : sizes
  const area = (s: ThumbnailSize) => s.width * s.height
  const byArea = [...candidates].sort((a, b) => area(a) - area(b) || a.width - b.width)
  return byArea.find((s) => s.width >= want.width && s.height >= want.height) ?? byArea.at(-1)
}

/** Types the server decodes to make thumbnails; others (WebP, AVIF, APNG, SVG…) have the file as their thumbnail. */
const decodable = new Set(['image/png', 'image/jpeg', 'image/gif'])

/** `type/subtype` of a `Content-Type`, lowercased, without parameters. */
export function baseType(contentType: string): string {
  return contentType.split(';')[0]!.trim().toLowerCase()
}

/**
 * Whether the file is its own thumbnail whatever its content: a type not decoded here, or an
 * animated thumbnail asked of a GIF. Such files need no render.
 */
export function servesItself(contentType: string, animated: boolean): 'not-decodable' | 'animated' | undefined {
  const type = baseType(contentType)
  if (!decodable.has(type)) return 'not-decodable'
  if (type === 'image/gif' && animated) return 'animated'
  return undefined
}

/** What `renderThumbnail` made: an image, or `original` (serve the file itself) and why. */
export type RenderedThumbnail =
  | { readonly kind: 'image'; readonly contentType: string; readonly content: Buffer; readonly width: number; readonly height: number }
  | { readonly kind: 'original'; readonly reason: 'not-decodable' | 'animated' | 'small' | 'too-many-pixels' | 'corrupt' }

const Jimp = createJimp({ formats: [png, jpeg, gif], plugins: [resize, cover] })

/**
 * Makes the thumbnail of `size` from an image file:
 * - `crop`: scaled to cover `size` and cut to exactly it (centred);
 * - `scale`: scaled to fit inside `size`, keeping its aspect ratio.
 * Images are never enlarged: one already within `size` is its own thumbnail. PNG and GIF make a
 * PNG (transparency kept; a GIF's first frame), JPEG a JPEG. The file is its own thumbnail when
 * it cannot be decoded here (type, or corrupt), when an animated GIF is asked for `animated`,
 * and when its header declares more than `maxPixels` pixels (checked before decoding: a small
 * file can declare a huge image).
 */
export async function renderThumbnail(file: { contentType: string; content: Buffer }, size: ThumbnailSize, options: { maxPixels: number; animated?: boolean }): Promise<RenderedThumbnail> {
  const itself = servesItself(file.contentType, options.animated === true)
  if (itself !== undefined) return { kind: 'original', reason: itself }
  const type = baseType(file.contentType)
  let declared: { width?: number; height?: number }
  try {
    declared = imageSize(file.content)
  } catch {
    return { kind: 'original', reason: 'corrupt' }
  }
  const { width = 0, height = 0 } = declared
  if (width <= 0 || height <= 0) return { kind: 'original', reason: 'corrupt' }
  if (width * height > options.maxPixels) return { kind: 'original', reason: 'too-many-pixels' }
  if (width <= size.width && height <= size.height) return { kind: 'original', reason: 'small' }
  let image: Awaited<ReturnType<typeof Jimp.fromBuffer>>
  try {
    image = await Jimp.fromBuffer(file.content)
  } catch {
    return { kind: 'original', reason: 'corrupt' }
  }
  if (size.method === 'crop') image.cover({ w: Math.min(size.width, width), h: Math.min(size.height, height) })
  else image.scaleToFit({ w: size.width, h: size.height })
  const contentType = type === 'image/jpeg' ? 'image/jpeg' : 'image/png'
  const content = contentType === 'image/jpeg' ? await image.getBuffer('image/jpeg', { quality: 80 }) : await image.getBuffer('image/png')
  return { kind: 'image', contentType, content, width: image.bitmap.width, height: image.bitmap.height }
}
