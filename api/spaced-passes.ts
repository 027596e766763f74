/**
 * Passes of a stream follower (the push sender, the search indexer): `wake()` starts a pass, or
 * asks the running one for another after it, so wake-ups that come while a pass runs cost one
 * more pass, not one each. Passes start at least `spacingMs` apart (advances come per
 * transaction; a pass handles everything up to where the stream is). A pass that throws is
 * handed to `onError` and ends the run; the next wake-up starts again.
 *
 * @example
 * const passes = spacedPasses({ spacingMs: 200, pass: () => indexUpToNow(), onError: (err) => log.warn({ err }, 'failed') })
 * tracker.onAdvance(() => void passes.wake())
 * await passes.close()
 */
export interface SpacedPasses {
  /** Starts a pass (or one more after the running one); resolves when the run ends. */
  wake(): Promise<void>
  /** The run under way, if any. */
  running(): Promise<void> | undefined
  /** No pass starts after this; resolves when the running one ends. */
  close(): Promise<void>
}

export function spacedPasses(options: { spacingMs: number; pass: () => Promise<void>; onError: (err: unknown) => void; clock?: () => number }): SpacedPasses {
  const clock = options.clock ?? Date.now
  let closed = false
  let running: Promise<void> | undefined
  let again = false
  let lastPass = 0

  function wake(): Promise<void> {
    if (closed) return Promise.resolve()
    if (running) {
      again = true
      return running
    }
    running = (async () => {
      do {
        again = false
        const wait = lastPass + options.spacingMs - clock()
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
        lastPass = clock()
        try {
          await options.pass()
        } catch (err) {
          options.onError(err)
          break
        }
      } while (again && !closed)
    })().finally(() => {
      running = undefined
    })
    return running
  }

  return {
    wake,
    running: () => running,
    async close() {
      closed = true
      await running
    },
  }
}
