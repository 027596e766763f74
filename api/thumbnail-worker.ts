import { parentPort } from 'node:worker_threads'
import { renderThumbnail, type RenderedThumbnail, type ThumbnailSize } from './thumbnail-image.js'

/**
 * The thumbnailer's worker thread (`thumbnailer.ts` starts it): decoding and scaling an image
 * takes tens to hundreds of milliseconds of CPU, which must not stall the api worker's event
 * loop. `{ ready: true }` out once loaded; then one request at a time: `{ id, file, size,
 * maxPixels, animated }` in, `{ id, result }` or `{ id, error }` out.
 */
export interface ThumbnailJob {
  readonly id: number
  readonly file: { readonly contentType: string; readonly content: Uint8Array }
  readonly size: ThumbnailSize
  readonly maxPixels: number
  readonly animated: boolean
}

export type ThumbnailAnswer = { readonly id: number; readonly result: RenderedThumbnail } | { readonly id: number; readonly error: string } | { readonly ready: true }

parentPort?.on('message', (job: ThumbnailJob) => {
  const file = { contentType: job.file.contentType, content: Buffer.from(job.file.content.buffer, job.file.content.byteOffset, job.file.content.byteLength) }
  renderThumbnail(file, job.size, { maxPixels: job.maxPixels, animated: job.animated }).then(
    (result) => parentPort?.postMessage({ id: job.id, result } satisfies ThumbnailAnswer),
    (err: unknown) => parentPort?.postMessage({ id: job.id, error: err instanceof Error ? err.message : String(err) } satisfies ThumbnailAnswer),
  )
})

parentPort?.postMessage({ ready: true } satisfies ThumbnailAnswer)
