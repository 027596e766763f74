import { Worker } from 'node:worker_threads'
import PQueue from 'p-queue'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { Logger } from '../storage/logger.js'
import type { RenderedThumbnail, ThumbnailSize } from './thumbnail-image.js'
import type { ThumbnailAnswer, ThumbnailJob } from './thumbnail-worker.js'

export interface ThumbnailerOptions {
  /** Images declaring more pixels are not decoded (config `media.max_image_pixels`). */
  readonly maxPixels: number
  readonly log: Logger
  /** A render running longer (from when its thread has loaded) is abandoned, its thread ended, and fails. Default 30,000 ms. */
  readonly timeoutMs?: number
  /**
   * Where `myelin_media_thumbnail_render_seconds`, `myelin_media_thumbnail_renders_total{outcome}`
   * and `myelin_media_thumbnail_queue` go.
   */
  readonly registry?: Registry
}

/** Makes thumbnails off the event loop, one at a time. */
export interface Thumbnailer {
  /**
   * Renders `size` of `file` (`renderThumbnail`) in the worker thread. Renders wait their turn;
   * a render of the same `key` already waiting or running is shared, not repeated. Rejects when
   * the thread fails or times out (the next render starts a new one).
   */
  render(key: string, file: { contentType: string; content: Buffer }, size: ThumbnailSize, options?: { animated?: boolean }): Promise<RenderedThumbnail>
  /** Renders waiting or running. */
  readonly pending: number
  /** Ends the thread; renders still waiting fail. */
  close(): Promise<void>
}

/**
 * Creates a thumbnailer. Its worker thread (`thumbnail-worker.ts`) starts with the first render
 * and does not keep the process alive.
 *
 * @example
 * const thumbnailer = createThumbnailer({ maxPixels: 32_000_000, log })
 * const made = await thumbnailer.render(`${mediaId}/96x96/crop`, file, { width: 96, height: 96, method: 'crop' })
 * if (made.kind === 'image') reply.type(made.contentType).send(made.content)
 */
export function createThumbnailer(options: ThumbnailerOptions): Thumbnailer {
  const log = options.log.child({ component: 'thumbnailer' })
  const timeoutMs = options.timeoutMs ?? 30_000
  const queue = new PQueue({ concurrency: 1 })
  const inFlight = new Map<string, Promise<RenderedThumbnail>>()
  const metrics = thumbnailMetrics(options.registry, () => inFlight.size)
  let worker: { readonly thread: Worker; readonly ready: Promise<void> } | undefined
  let nextId = 0
  let closed = false
  const waiting = new Map<number, { resolve: (r: RenderedThumbnail) => void; reject: (e: Error) => void }>()

  const failAll = (err: Error) => {
    for (const job of waiting.values()) job.reject(err)
    waiting.clear()
  }
  const thread = () => {
    if (worker !== undefined) return worker
    const started = new Worker(new URL('./thumbnail-worker.ts', import.meta.url))
    started.unref()
    const ready = Promise.withResolvers<void>()
    started.on('message', (answer: ThumbnailAnswer) => {
      if ('ready' in answer) return ready.resolve()
      const job = waiting.get(answer.id)
      waiting.delete(answer.id)
      if ('error' in answer) job?.reject(new Error(answer.error))
      else job?.resolve({ ...answer.result, ...(answer.result.kind === 'image' && { content: Buffer.from(answer.result.content) }) })
    })
    started.on('error', (err) => {
      log.warn({ err }, 'thumbnail thread failed')
      ready.reject(err)
      failAll(err)
    })
    started.on('exit', () => {
      if (worker?.thread === started) worker = undefined
      ready.reject(new Error('thumbnail thread exited'))
      failAll(new Error('thumbnail thread exited'))
    })
    ready.promise.catch(() => {})
    worker = { thread: started, ready: ready.promise }
    return worker
  }

  const run = async (file: { contentType: string; content: Buffer }, size: ThumbnailSize, animated: boolean): Promise<RenderedThumbnail> => {
    if (closed) throw new Error('thumbnailer closed')
    const id = nextId++
    const target = thread()
    await target.ready
    const end = metrics.seconds.startTimer()
    return new Promise<RenderedThumbnail>((resolve, reject) => {
      const timer = setTimeout(() => {
        log.warn({ size, timeoutMs }, 'thumbnail render timed out; restarting its thread')
        void target.thread.terminate()
      }, timeoutMs)
      waiting.set(id, {
        resolve: (result) => {
          clearTimeout(timer)
          end()
          metrics.renders.inc({ outcome: result.kind === 'image' ? 'image' : result.reason })
          resolve(result)
        },
        reject: (err) => {
          clearTimeout(timer)
          metrics.renders.inc({ outcome: 'failed' })
          reject(err)
        },
      })
      target.thread.postMessage({ id, file: { contentType: file.contentType, content: file.content }, size, maxPixels: options.maxPixels, animated } satisfies ThumbnailJob)
    })
  }

  return {
    render(key, file, size, renderOptions) {
      const shared = inFlight.get(key)
      if (shared !== undefined) return shared
      const rendering = (queue.add(() => run(file, size, renderOptions?.animated === true)) as Promise<RenderedThumbnail>).finally(() => inFlight.delete(key))
      inFlight.set(key, rendering)
      return rendering
    },
    get pending() {
      return inFlight.size
    },
    async close() {
      closed = true
      queue.clear()
      const ending = worker
      worker = undefined
      failAll(new Error('thumbnailer closed'))
      await ending?.thread.terminate()
    },
  }
}

function thumbnailMetrics(registry: Registry | undefined, pending: () => number) {
  const registers = registry ? [registry] : []
  const existing = <T>(name: string) => registry?.getSingleMetric(name) as T | undefined
  const seconds =
    existing<Histogram>('myelin_media_thumbnail_render_seconds') ??
    new Histogram({ name: 'myelin_media_thumbnail_render_seconds', help: 'Time to render one thumbnail in the worker thread', buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10], registers })
  const renders =
    existing<Counter<'outcome'>>('myelin_media_thumbnail_renders_total') ??
    new Counter({ name: 'myelin_media_thumbnail_renders_total', help: 'Thumbnail renders by outcome: image, or why the file is its own thumbnail (small, not-decodable, animated, too-many-pixels, corrupt), or failed', labelNames: ['outcome'], registers })
  if (existing<Gauge>('myelin_media_thumbnail_queue') === undefined) {
    new Gauge({ name: 'myelin_media_thumbnail_queue', help: 'Thumbnail renders waiting or running', registers, collect() { this.set(pending()) } })
  }
  return { seconds, renders }
}
