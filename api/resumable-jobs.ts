import type { FastifyBaseLogger, FastifyInstance } from 'fastify'

/** How often an api worker looks for jobs left unfinished by a process that stopped. */
export const resumeJobsEveryMs = 60_000

/** Long admin jobs an api worker runs in the background and any api worker resumes (see `resumableJobs`). */
export interface ResumableJobs {
  /** Runs job `id` in this process unless it already does; resolves when it ends. Never rejects. */
  run(id: string, log: FastifyBaseLogger): Promise<void>
  /** Whether this process is shutting down: a job cut short now is left for a resume, not failed. */
  readonly closing: boolean
}

/**
 * The life of an api worker's long admin jobs (room deletions, history purges): their state is
 * in the database and each runs under a claim (storage/admin.ts `withClaim`), so that a job whose
 * process stopped is resumed from where it got to: when an api worker starts, every
 * `resumeJobsEveryMs`, or when the caller asks (a status request). A shutdown waits for the
 * running jobs, which see `closing` and stop at their next step.
 *
 * @param work runs one job to its end or its next stop; its errors are logged.
 * @example
 * const jobs = resumableJobs(app, { what: 'history purge', unfinished: () => unfinishedHistoryPurges(db), work: (id, log) => … })
 * void jobs.run(purgeId, request.log)
 */
export function resumableJobs(
  app: FastifyInstance,
  options: { what: string; unfinished: () => Promise<string[]>; work: (id: string, log: FastifyBaseLogger) => Promise<void> },
): ResumableJobs {
  const running = new Map<string, Promise<void>>()
  const jobs = {
    closing: false,
    run(id: string, log: FastifyBaseLogger): Promise<void> {
      const existing = running.get(id)
      if (existing !== undefined) return existing
      const started = options
        .work(id, log)
        .catch((err: unknown) => log.error({ err, id }, `${options.what} could not run`))
        .finally(() => running.delete(id))
      running.set(id, started)
      return started
    },
  }
  async function resume(): Promise<void> {
    try {
      for (const id of await options.unfinished()) if (!jobs.closing) await jobs.run(id, app.log.child({ id }))
    } catch (err) {
      app.log.warn({ err }, `could not look for unfinished jobs (${options.what})`)
    }
  }
  let timer: NodeJS.Timeout | undefined
  app.addHook('onReady', async () => {
    void resume()
    timer = setInterval(() => void resume(), resumeJobsEveryMs).unref()
  })
  app.addHook('onClose', async () => {
    jobs.closing = true
    clearInterval(timer)
    await Promise.allSettled([...running.values()])
  })
  return jobs
}
