/**
 * Runs `fn` over `items`, at most `limit` at a time, in order of start; rejects with the first
 * failure (the calls already started run on).
 *
 * @example
 * await forEachLimited(rooms, 8, async (roomId, i) => { sections[i] = await readRoom(roomId) })
 */
export async function forEachLimited<T>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++
      await fn(items[i] as T, i)
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}
